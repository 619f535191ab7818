"""Session 12: transformers' sdpa decode over a 128K DynamicCache (2 Llama layers of 8B shape) with the default SDPA
backend choice, flash forced and cuDNN forced (host clock around synchronised steps); then one cuDNN decode call at
three KV lengths, twice each: is the cuDNN plan rebuilt for every new length?"""
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, fresh_cache, use_method  # noqa: E402

L = 131072


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return round((time.perf_counter() - t0) * 1e3, 2)


model = build_model(2, L + 4096)
ids = torch.randint(0, 32000, (1, L), device="cuda")
use_method(model, "sdpa")
with torch.no_grad():
    cache = fresh_cache(model, "sdpa")
    nxt = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
    step = lambda: model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)  # noqa: E731
    for name, backends in (("default", None), ("flash", [SDPBackend.FLASH_ATTENTION]),
                           ("cudnn", [SDPBackend.CUDNN_ATTENTION]), ("default", None)):
        if backends is None:
            ts = [timed(step) for _ in range(8)]
        else:
            with sdpa_kernel(backends):
                ts = [timed(step) for _ in range(8)]
        print(f"{name}: decode step ms (2 layers, 128K, DynamicCache): {ts}", flush=True)
    k, v = cache.layers[0].keys, cache.layers[0].values
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    for n in range(3):
        kk, vv = k[:, :, : k.shape[2] - n], v[:, :, : v.shape[2] - n]
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            ts = [timed(lambda: F.scaled_dot_product_attention(q, kk, vv, enable_gqa=True)) for _ in range(2)]
        print(f"cudnn, kv_len {kk.shape[2]}: two calls {ts} ms", flush=True)
