"""Session 8, after the scores are scaled in fp32 after the dot (q unscaled, the wgmma's shared-memory operand):
statistics-pass launches (BLOCK_M, BLOCK_N, warps, stages, programs) and the skew sums pass at 128K (H200,
structured inputs), do_bench medians; diff = largest relative difference to the default launch.
Usage: python benchmarks/results/s8/sweep3.py"""
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench_prefill import structured_qkv  # noqa: E402

import sparse_attn.kernels.estimation.triton as est  # noqa: E402

STATS = [(64, 128, 4, 3, 2112), (64, 64, 4, 3, 2112), (64, 64, 4, 4, 2112), (64, 128, 4, 2, 2112)]
length = 131072
q, k, _ = structured_qkv(length)
cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
qk_scale = q.shape[-1] ** -0.5 * est.LOG2E
print(f"device={torch.cuda.get_device_name()} L={length} SKEW_STATS={est.SKEW_STATS} SKEW_LAUNCH={est.SKEW_LAUNCH}",
      flush=True)
for window in (256, 512):
    base = (q, k, cu, window, qk_scale, min(window, length), length)
    ref = est._row_statistics(*base, *est.SKEW_STATS)
    for launch in STATS:
        got = est._row_statistics(*base, *launch)
        diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, ref))
        ms = do_bench(lambda: est._row_statistics(*base, *launch, merge=False), warmup=25, rep=100)
        print(f"window {window} stats {launch}: {ms:.3f} ms, diff {diff:.1e}", flush=True)
    parts = est._row_statistics(*base, *est.SKEW_STATS, merge=False)
    ms = do_bench(lambda: est._skew_sums(*base, *parts, "skew_gather"), warmup=25, rep=100)
    print(f"window {window} sums {est.SKEW_LAUNCH['skew_gather']}: {ms:.3f} ms", flush=True)
