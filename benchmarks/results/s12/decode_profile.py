"""Session 12: where transformers' sdpa decode step goes over a 128K DynamicCache (2 Llama layers of 8B shape):
the CUDA kernels of two decode steps (profiler), and one F.scaled_dot_product_attention decode call (q [1, 32, 1,
128], K / V [1, 8, 128K, 128], enable_gqa, no mask) under the default backend choice and each backend forced.

python benchmarks/results/s12/decode_profile.py
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, fresh_cache, use_method  # noqa: E402

import sparse_attn  # noqa: E402,F401

L = 131072


def main():
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, L, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    for name, backends in (("default", None), ("flash", [SDPBackend.FLASH_ATTENTION]),
                           ("efficient", [SDPBackend.EFFICIENT_ATTENTION]), ("cudnn", [SDPBackend.CUDNN_ATTENTION]),
                           ("math", [SDPBackend.MATH])):
        call = lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)  # noqa: E731
        try:
            if backends is None:
                ms = do_bench(call, warmup=5, rep=30)
            else:
                with sdpa_kernel(backends):
                    ms = do_bench(call, warmup=5, rep=30)
            print(f"sdpa decode 128K enable_gqa, {name}: {ms:.3f} ms", flush=True)
        except Exception as error:  # noqa: BLE001
            print(f"sdpa decode 128K enable_gqa, {name}: FAILED {type(error).__name__}: {str(error)[:150]}",
                  flush=True)
    del k, v
    model = build_model(2, L + 4096)
    ids = torch.randint(0, model.config.vocab_size, (1, L), device="cuda")
    use_method(model, "sdpa")
    with torch.no_grad():
        cache = fresh_cache(model, "sdpa")
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1:].argmax(-1)
        model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                                torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14), flush=True)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=10), flush=True)


if __name__ == "__main__":
    main()
