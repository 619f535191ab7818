"""Compile every kernel configuration that run.sh times, in parallel processes, before the timed steps (Triton's
on-disk cache then serves the tests and the benchmark; one compile takes several seconds, so compiling them one after
the other inside the timed steps would eat the run's time budget).

Usage (GPU): python3 benchmarks/results/vs_est_s5/warm_cache.py [processes]
"""
import multiprocessing as mp
import sys
import time

#: (variant, SKEW_LAUNCH entry or None = default) and ("stats", launch): what run.sh's tests and sweeps use
ITEMS = [("banded", None), ("skew", None), ("skew_pipe", None), ("skew_gather", None),
         ("skew_pipe", (4, 8, 2, 1)), ("skew_pipe", (1, 8, 2, 1)), ("skew_gather", (2, 8, 2, 1)),
         ("skew", (2, 8, 2, 1)), ("skew_gather", (4, 8, 2, 0)), ("skew_gather", (4, 16, 2, 1)),
         ("skew_pipe", (2, 8, 2, 1)),
         ("stats", (64, 64, 4, 3)), ("stats", (128, 64, 4, 3)), ("stats", (256, 64, 8, 3)),
         ("stats", (128, 128, 8, 3)), ("pipeline", None)]


def work(item):
    import torch
    import sparse_attn.kernels.estimation.triton as est

    start = time.time()
    variant, launch = item
    length = 32768  # the tiles-per-run of 32K-128K share one specialisation (divisible by 16)
    q = torch.randn(length, 32, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(length, 8, 128, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
    try:
        if variant == "pipeline":  # the library select (selection, index builder) and the VS attention kernel
            from sparse_attn.kernels.vertical_slash.triton import triton_vertical_slash_attention
            from sparse_attn.methods.flexprefill import FlexPrefill
            from sparse_attn.methods.vertical_slash import VerticalSlash
            v = torch.randn_like(k)
            for method in (VerticalSlash(), FlexPrefill()):
                sel = method.select(q, k, cu, backend="triton")
                index = (sel.block_count, sel.block_offset, sel.column_count, sel.column_index)
                triton_vertical_slash_attention(q, k, v, cu, *index, out=torch.empty_like(q))
            torch.cuda.synchronize()
            return f"{item}: compiled in {time.time() - start:.1f} s"
        for window in (256, 512):
            if variant == "stats":
                est._row_statistics(q, k, cu, window, 0.1, window, length, *launch)
            else:
                if launch is not None:
                    est.SKEW_LAUNCH[variant] = launch
                est.triton_last_window_sums(q, k, cu, window, variant=variant)
        torch.cuda.synchronize()
        return f"{item}: compiled in {time.time() - start:.1f} s"
    except Exception as error:
        return f"{item}: FAILED {type(error).__name__}: {error}"[:200]


if __name__ == "__main__":
    processes = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    start = time.time()
    with mp.get_context("spawn").Pool(min(processes, len(ITEMS))) as pool:
        for line in pool.imap_unordered(work, ITEMS):
            print("  warm " + line, flush=True)
    print(f"  warm cache: {len(ITEMS)} configurations in {time.time() - start:.1f} s", flush=True)
