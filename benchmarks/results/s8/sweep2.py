"""Session 8, second sweep (H200, 128K, structured inputs): program counts of the two estimation passes, and the VS
index builder with and without its per-program walk bound.

stats: `_row_statistics(merge=False)` with launch (BLOCK_M, BLOCK_N, warps, stages, NQ, stagger, programs): the
    `programs` target sets the key splits (printed: the programs actually launched).
sums: `_skew_sums` with SKEW_PROGRAMS (programs aimed for; one 8-warp program per SM).
builder: `build_vertical_slash_index` on the library's own 128K VS / FlexPrefill selections, BUILD_BOUNDED on / off
    (entry-for-entry equal: checked).
Usage: python benchmarks/results/s8/sweep2.py [--length 131072]
"""
import argparse
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench_prefill import structured_qkv  # noqa: E402

import sparse_attn.kernels.estimation.triton as est  # noqa: E402
import sparse_attn.kernels.vertical_slash.triton as vst  # noqa: E402
from sparse_attn.methods.flexprefill import FlexPrefill  # noqa: E402
from sparse_attn.methods.vertical_slash import VerticalSlash  # noqa: E402

STATS = [(64, 128, 4, 3, 0, 0, p) for p in (528, 792, 1056, 1584, 2112, 3168)] + \
        [(64, 64, 4, 3, 0, 0, p) for p in (528, 1056, 2112)] + \
        [(64, 64, 4, 3, 4, 1, p) for p in (1056, 1584, 2112, 2640)] + \
        [(64, 64, 4, 3, 2, 1, p) for p in (1056, 2112)]
SUMS_PROGRAMS = (1024, 1056, 1188, 1320, 1584, 2112, 792)


def bench(fn):
    return do_bench(fn, warmup=25, rep=100)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, default=131072)
    args = parser.parse_args()
    length = args.length
    q, k, _ = structured_qkv(length)
    cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
    qk_scale = q.shape[-1] ** -0.5 * est.LOG2E
    print(f"device={torch.cuda.get_device_name()} L={length} SKEW_STATS={est.SKEW_STATS} "
          f"SKEW_LAUNCH={est.SKEW_LAUNCH} SKEW_PROGRAMS={est.SKEW_PROGRAMS}", flush=True)
    for name, method in (("vertical_slash", VerticalSlash()), ("flexprefill", FlexPrefill())):
        sel = method.select(q, k, cu, backend="triton", seq_lens=[length])
        pattern = (sel.vertical_idx, sel.vertical_count, sel.slash_offsets, sel.slash_count)
        times = {}
        for bounded in (False, True, False, True):
            vst.BUILD_BOUNDED = bounded
            got = vst.triton_build_vertical_slash_index(cu, *pattern, max_len=length)
            if bounded:
                vst.BUILD_BOUNDED = False
                want = vst.triton_build_vertical_slash_index(cu, *pattern, max_len=length)
                assert all(torch.equal(a, b) for a, b in zip(got, want)), "bounded walk differs"
                vst.BUILD_BOUNDED = True
            times.setdefault(bounded, []).append(
                bench(lambda: vst.triton_build_vertical_slash_index(cu, *pattern, max_len=length)))
        vst.BUILD_BOUNDED = True
        print(f"{name} builder (index fill included): whole walk {min(times[False]):.3f} ms, bounded "
              f"{min(times[True]):.3f} ms (best of 2 each, equal indices)", flush=True)
    for window in (256, 512):
        w_max = min(window, length)
        base = (q, k, cu, window, qk_scale, w_max, length)
        ref = est._row_statistics(*base, *est.SKEW_STATS)
        for launch in STATS:
            try:
                got = est._row_statistics(*base, *launch)
                diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, ref))
                parts = est._row_statistics(*base, *launch, merge=False)
                nq = max(1, launch[4])
                programs = -(-w_max // (64 * nq)) * 32 * parts[0].shape[2]
                ms = bench(lambda: est._row_statistics(*base, *launch, merge=False))
                print(f"window {window} stats {launch}: {ms:.3f} ms, {programs} programs, diff {diff:.1e}",
                      flush=True)
            except Exception as error:
                print(f"window {window} stats {launch}: {type(error).__name__}: {error}"[:300], flush=True)
        parts = est._row_statistics(*base, *est.SKEW_STATS, merge=False)
        ref = est._skew_sums(*base, *parts, "skew_gather")
        saved = est.SKEW_PROGRAMS
        for programs in SUMS_PROGRAMS:
            try:
                est.SKEW_PROGRAMS = programs
                got = est._skew_sums(*base, *parts, "skew_gather")
                diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, ref))
                ms = bench(lambda: est._skew_sums(*base, *parts, "skew_gather"))
                print(f"window {window} sums SKEW_PROGRAMS {programs}: {ms:.3f} ms, diff {diff:.1e}", flush=True)
            finally:
                est.SKEW_PROGRAMS = saved


if __name__ == "__main__":
    main()
