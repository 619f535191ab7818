"""Session 13: where a Transformers Quest decode step goes (2 Llama layers of 8B shape, 128K prompt, batch 1): per
step host wall clock for sdpa (without cuDNN), our dense and quest; then the profiler over two quest decode steps
(CPU ops by host time, CUDA kernels by device time). Session 12 measured quest 4.28 ms/token against 2.29 for dense
at B = 1: the decode kernels are ~2x faster than dense there, so the difference must be host work.

python benchmarks/results/s13/quest_decode_profile.py
"""
import sys
import time

import torch
from torch.nn.attention import sdpa_kernel

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, fresh_cache, use_method  # noqa: E402

from sparse_attn.integrations.transformers.layout import DECODE_BACKENDS  # noqa: E402

L = 131072


def timed(fn):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return round((t1 - t0) * 1e3, 2), round((time.perf_counter() - t0) * 1e3, 2)


def main():
    model = build_model(2, L + 4096)
    ids = torch.randint(0, model.config.vocab_size, (1, L), device="cuda")
    for name in ("sdpa", "dense", "quest"):
        use_method(model, name)
        with torch.no_grad():
            cache = fresh_cache(model, name)
            nxt = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:]
            nxt = nxt.argmax(-1)
            step = lambda: model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)  # noqa
            if name == "sdpa":
                with sdpa_kernel(DECODE_BACKENDS):
                    ts = [timed(step) for _ in range(10)]
            else:
                ts = [timed(step) for _ in range(10)]
            print(f"{name}: decode step (host ms until return, total ms): {ts}", flush=True)
            if name == "quest":
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA,
                                                        torch.profiler.ProfilerActivity.CPU]) as prof:
                    for _ in range(2):
                        step()
                    torch.cuda.synchronize()
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), flush=True)
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15), flush=True)
        cache = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
