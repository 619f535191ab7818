"""Session 12 probe: why `bench_transformers.py`'s decode column is bimodal over transformers' DynamicCache (2 Llama
layers of 8B shape, 128K prompt: 3-4 ms or 40-58 ms per token in the same run). Times single decode steps (host
clock around a synchronised step) and reads the CUDA caching allocator's counters between steps: device
allocations / frees (cudaMalloc / cudaFree) and allocation retries (the allocator flushing its cache after a failed
allocation). Run it once with the default allocator and once with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True.

python benchmarks/results/s12/decode_probe.py [--length 131072] [--steps 40] [--methods sdpa quest]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, fresh_cache, use_method  # noqa: E402

import sparse_attn  # noqa: E402,F401  (registers the attention implementations)

COUNTERS = ("num_device_alloc", "num_device_free", "num_alloc_retries")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=131072)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--methods", nargs="+", default=["sdpa", "quest"])
    args = ap.parse_args()
    print(f"torch {torch.__version__}, PYTORCH_CUDA_ALLOC_CONF={os.environ.get('PYTORCH_CUDA_ALLOC_CONF')}",
          flush=True)
    model = build_model(2, args.length + args.steps + 16)
    ids = torch.randint(0, model.config.vocab_size, (1, args.length), device="cuda")
    for name in args.methods:
        use_method(model, name)
        with torch.no_grad():
            cache = fresh_cache(model, name)
            out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            times, deltas = [], []
            for _ in range(args.steps):
                before = torch.cuda.memory_stats()
                t0 = time.perf_counter()
                model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) * 1e3)
                after = torch.cuda.memory_stats()
                deltas.append([after.get(c, 0) - before.get(c, 0) for c in COUNTERS])
        slow = [t for t in times if t > 10]
        print(json.dumps(dict(method=name, length=args.length, step_ms=[round(t, 2) for t in times],
                              median_ms=round(sorted(times)[len(times) // 2], 2), steps_over_10ms=len(slow),
                              **{c: sum(d[i] for d in deltas) for i, c in enumerate(COUNTERS)},
                              reserved_GiB=round(torch.cuda.memory_reserved() / 2**30, 1))), flush=True)
        del cache, out
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
