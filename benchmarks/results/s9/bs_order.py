"""Session 9: grid order of the block_sparse TMA kernel, GROUP_MAJOR (the query heads of a GQA group side by side)
against head-major (each query head's tiles in turn), in one run (H200, Llama-3.1-8B heads, bf16, chunk 128).

Why: Nsight Compute (logs/call3/ncu_block_sparse.log) shows 66.9 % L2 hits at p = 0.035 against 85.2 % at p = 0.1
with head-major order; group-major puts the four readers of each KV head's blocks side by side.
Each order: correctness (NaN-poisoned output, rel-RMSE vs fp32 rows), then `--passes` interleaved do_bench medians.

Ran once (logs/call4/bs_order.log) against a kernels/block_sparse/triton.py that is NOT on main: a module switch
GROUP_MAJOR and a GROUP_MAJOR constexpr of `_block_sparse_fwd_tma` (grid (n_tiles_m * GROUP, B * Hkv); program
(i, j): tile n_tiles_m - 1 - i // GROUP, head (j % Hkv) * GROUP + i % GROUP). L2 hits rose only 66.9 -> 69.7 % at
p = 0.035 and the times were within noise (0.995-1.003x), so it was removed; the script no longer runs as is.

Usage: python benchmarks/results/s9/bs_order.py [--passes 3] [--rep 200] [--cases 128:131072:0.035 ...]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bs_startup import bs, parse_args, sweep  # noqa: E402  (the same check-and-time harness)

VARIANTS = {"head_major": False, "group_major": True}


def set_order(group_major):
    bs.GROUP_MAJOR = group_major


if __name__ == "__main__":
    args = parse_args(["128:131072:0.035", "128:131072:0.1", "128:65536:0.035", "128:32768:0.1"])
    sweep(VARIANTS, set_order, "head_major", args.cases, args.passes, args.rep)
