"""Session 13: what the cuDNN-length padding of dense prefill (kernels/dense.causal_sdpa) costs and saves.

1) One layer (32 q / 8 kv heads, d 128, bf16): SDPA cuDNN at n (plan already built) vs causal_sdpa(n) (padding
   forced: PAD_BYTES_PER_SHAPE unbounded; plan built), do_bench medians, for lengths that are not cuDNN lengths:
   the steady-state price of the padding (a copy of q, k, v and the extra rows).
2) Transformers, 8 Llama-3.1-8B-shaped layers (random weights): prompts of six distinct lengths near 32K and near
   16K, one prefill each (synchronised wall clock), attn_implementation "sdpa" (transformers' own) vs "dense"
   (ours), then the same six again (plans cached): what a user evaluating a dataset of distinct lengths sees.
3) The shipped policy on one length met again and again (one layer, synchronised wall clock per call): padded
   until its copies reach PAD_BYTES_PER_SHAPE, then its own plan (one build) and no copies.
Calls 3 and 4 ran before PAD_MAX_LENGTH (64K) existed: part 1 now lifts that cap too; in part 3 the 128K length
now runs unpadded from the first call.
"""
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, use_method  # noqa: E402

import sparse_attn.kernels.dense as dense  # noqa: E402
from sparse_attn.kernels.dense import causal_sdpa, cudnn_length  # noqa: E402

SHIPPED_BUDGET, SHIPPED_MAX = dense.PAD_BYTES_PER_SHAPE, dense.PAD_MAX_LENGTH
dense.PAD_BYTES_PER_SHAPE = dense.PAD_MAX_LENGTH = 1 << 62  # 1) padding forced


def qkv(n):
    g = torch.Generator(device="cuda").manual_seed(n)
    return [torch.randn(1, n, h, 128, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
            for h in (32, 8, 8)]


for n in (16381, 32761, 65531, 131071):
    q, k, v = qkv(n)

    def cudnn():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    cudnn(), causal_sdpa(q, k, v)  # build both plans
    a = do_bench(cudnn, warmup=25, rep=100, return_mode="median")
    b = do_bench(lambda: causal_sdpa(q, k, v), warmup=25, rep=100, return_mode="median")
    print(f"len {n} -> {cudnn_length(n)}: cuDNN at n {a:.3f} ms, causal_sdpa (padded) {b:.3f} ms, "
          f"padded / plain {b / a:.3f}", flush=True)
q = k = v = None
torch.cuda.empty_cache()
dense.PAD_BYTES_PER_SHAPE, dense.PAD_MAX_LENGTH = SHIPPED_BUDGET, SHIPPED_MAX  # 2) and 3): the shipped policy
dense._padded_bytes.clear()


def wall(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return round((time.perf_counter() - t0) * 1e3, 1)


model = build_model(8, 40000)
for base in (32001, 16001):  # not cuDNN lengths (32000 = 125 x 256 is one)
    lengths = [base + 37 * i for i in range(6)]
    for name in ("sdpa", "dense"):
        use_method(model, name)
        with torch.no_grad():
            model(input_ids=torch.randint(0, 32000, (1, 4096), device="cuda"), use_cache=False, logits_to_keep=1)
            for rnd in ("new lengths", "same lengths again"):
                ts = []
                for n in lengths:
                    ids = torch.randint(0, 32000, (1, n), device="cuda")
                    ts.append(wall(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1)))
                print(f"8 layers, {name}, {rnd} {lengths}: prefill ms {ts}, mean {sum(ts) / len(ts):.1f}",
                      flush=True)

model = None
torch.cuda.empty_cache()
for n, calls in ((131069, 24), (32759, 48)):
    q, k, v = qkv(n)
    ts = [wall(lambda: causal_sdpa(q, k, v)) for _ in range(calls)]
    print(f"one layer, len {n} met {calls} times (shipped policy, {SHIPPED_BUDGET >> 30} GB of copies per shape): "
          f"ms per call {ts}", flush=True)
