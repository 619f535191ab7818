"""Session 13: does SDPA's cuDNN backend pay a host-side plan build for every new prefill length (as it does for a
decode step over a growing cache, session 12)? One Llama-3.1-8B layer's heads (32 q, 8 kv, d 128, bf16): for each
length, the first call at that shape and a repeat, host time (launch returned) and total (synchronised), for cuDNN
and flash; then our `dense_attention` (cuDNN first) on the same lengths, and `causal_sdpa` (padded to cuDNN lengths)."""
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, ".")
from sparse_attn.kernels.dense import dense_attention  # noqa: E402


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return round((t1 - t0) * 1e3, 2), round((t2 - t0) * 1e3, 2)


def qkv(n):
    g = torch.Generator(device="cuda").manual_seed(n)
    mk = lambda h: torch.randn(1, h, n, 128, device="cuda", dtype=torch.bfloat16, generator=g)  # noqa: E731
    return mk(32), mk(8), mk(8)


for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION):
    for base in (4096, 32768, 131072):
        for n in (base, base - 1, base - 7, base + 3):
            q, k, v = qkv(n)
            with sdpa_kernel([backend]):
                call = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa: E731
                first, again = timed(call), timed(call)
            print(f"{backend.name} len {n}: first (host ms, total ms) {first}, again {again}", flush=True)

for n in (32768, 32761, 32750):
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in qkv(n))
    cu = torch.tensor([0, n], dtype=torch.int32, device="cuda")
    call = lambda: dense_attention(q, k, v, cu)  # noqa: E731
    print(f"dense_attention len {n}: first {timed(call)}, again {timed(call)}", flush=True)

# Session 13's fix: causal_sdpa runs a sample at a cuDNN length (zero-padded at the end): only the first length of
# a bucket builds a plan (BSHD strides here, so also the first call at 32768 / 131072), the others reuse it.
from sparse_attn.kernels.dense import causal_sdpa, cudnn_length  # noqa: E402
for n in (32760, 32755, 32700, 32513, 131000, 130999, 130500):
    q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in qkv(n))
    call = lambda: causal_sdpa(q, k, v)  # noqa: E731
    print(f"causal_sdpa len {n} (runs at {cudnn_length(n)}): first {timed(call)}, again {timed(call)}", flush=True)
