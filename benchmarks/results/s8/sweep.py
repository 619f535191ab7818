"""Session 8: the two estimation passes of vertical_slash / flexprefill at 128K (H200, structured inputs).

stats: `_row_statistics(merge=False)` launches, (BLOCK_M, BLOCK_N, warps, stages, NQ, stagger, programs): NQ 0 = the
    one-block kernel `_window_stats` (the shipped default), NQ 1 / 2 / 4 = `_window_stats_multi` (NQ query blocks per
    program, loaded once; stagger = block i+1's Q K^T issued before block i's softmax statistics).
sums: `_skew_sums` launches (NQ, warps, stages, Q resident, transposed): transposed = tiles computed as K Q^T, so the
    vertical sums reduce within each key row's threads.
Each line: median ms (do_bench, warmup 25 ms, rep 100 ms) and the largest relative difference to the default.
Usage: python benchmarks/results/s8/sweep.py [--length 131072] [--only stats|sums]

Ran (logs/call1/sweep.log) against experimental code that is NOT on main: `_window_stats_multi` (NQ 1 / 2 / 4 query
blocks per program, loaded once, optionally staggered dots) and a TRANSPOSED flag of `_window_sums_skew` (tiles
computed as K Q^T, vertical sums within rows, diagonal extraction mirrored). Both lost (stats 0.70-1.95 ms vs 0.711
for the one-block pass; transposed sums 1.766-3.935 vs 1.757 ms) and were removed; the script no longer runs as is.
"""
import argparse
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench_prefill import structured_qkv  # noqa: E402

import sparse_attn.kernels.estimation.triton as est  # noqa: E402

STATS = [(64, 128, 4, 3, 0), (64, 128, 4, 3, 1), (64, 128, 4, 3, 4, 0), (64, 128, 4, 3, 4, 1),
         (64, 64, 4, 3, 4, 0), (64, 64, 4, 3, 4, 1), (64, 128, 4, 2, 4, 1), (64, 128, 8, 3, 4, 1),
         (64, 64, 8, 3, 4, 1), (64, 128, 4, 3, 2, 1), (64, 64, 4, 3, 2, 1), (64, 64, 4, 4, 4, 1),
         (64, 64, 4, 3, 4, 1, 264), (64, 64, 4, 3, 4, 1, 1056), (64, 128, 4, 3, 4, 1, 264)]
SUMS = [(4, 8, 3, 1, 0), (4, 8, 3, 1, 1), (4, 8, 2, 1, 1), (4, 4, 2, 1, 1), (4, 4, 1, 1, 1), (4, 4, 3, 1, 1),
        (2, 4, 2, 1, 1), (2, 8, 3, 1, 1), (1, 4, 3, 1, 1)]


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--only", choices=["stats", "sums"], default=None)
    args = parser.parse_args()
    length = args.length
    q, k, _ = structured_qkv(length)
    cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
    qk_scale = q.shape[-1] ** -0.5 * est.LOG2E
    print(f"device={torch.cuda.get_device_name()} L={length} SKEW_STATS={est.SKEW_STATS} "
          f"SKEW_LAUNCH={est.SKEW_LAUNCH}", flush=True)
    for window in (256, 512):
        w_max = min(window, length)
        base = (q, k, cu, window, qk_scale, w_max, length)
        parts = est._row_statistics(*base, *est.SKEW_STATS, merge=False)
        ref_stats = est._row_statistics(*base, *est.SKEW_STATS)
        if args.only in (None, "stats"):
            for launch in STATS:
                try:
                    got = est._row_statistics(*base, *launch)
                    diff = max(rel(a, b) for a, b in zip(got, ref_stats))
                    ms = do_bench(lambda: est._row_statistics(*base, *launch, merge=False), warmup=25, rep=100)
                    print(f"window {window} stats {launch}: {ms:.3f} ms, diff {diff:.1e}", flush=True)
                except Exception as error:
                    print(f"window {window} stats {launch}: {type(error).__name__}: {error}"[:300], flush=True)
        if args.only in (None, "sums"):
            saved = dict(est.SKEW_LAUNCH)
            ref = est._skew_sums(*base, *parts, "skew_gather")
            for launch in SUMS:
                try:
                    est.SKEW_LAUNCH["skew_gather"] = launch
                    got = est._skew_sums(*base, *parts, "skew_gather")
                    diff = max(rel(a, b) for a, b in zip(got, ref))
                    ms = do_bench(lambda: est._skew_sums(*base, *parts, "skew_gather"), warmup=25, rep=100)
                    print(f"window {window} sums {launch}: {ms:.3f} ms, diff {diff:.1e}", flush=True)
                except Exception as error:
                    print(f"window {window} sums {launch}: {type(error).__name__}: {error}"[:300], flush=True)
                finally:
                    est.SKEW_LAUNCH.clear()
                    est.SKEW_LAUNCH.update(saved)


if __name__ == "__main__":
    main()
