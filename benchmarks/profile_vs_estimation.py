"""Vertical-Slash / FlexPrefill estimation on the GPU, piece by piece: correctness of the sums passes (banded,
atomic) and the cost of each stage (row statistics, sums per variant and launch, selection, index).

Usage: python benchmarks/profile_vs_estimation.py [--lengths 131072]
"""
import argparse
import json
import time

import torch
from triton.testing import do_bench

import sparse_attn.kernels.estimation.triton as est
from sparse_attn.kernels.estimation import naive_last_window_sums
from sparse_attn.kernels.estimation.topk import stable_topk, threshold_topk
from sparse_attn.kernels.vertical_slash.triton import (triton_build_vertical_slash_index,
                                                       triton_vertical_slash_attention)
from sparse_attn.methods.flexprefill import FlexPrefill
from sparse_attn.methods.vertical_slash import VerticalSlash
from sparse_attn.methods._prefill import forced_scores, sample_lengths

from bench_prefill import structured_qkv, random_qkv, HQ

DEV = "cuda"


def bench(fn, rep=50):
    return do_bench(fn, warmup=25, rep=rep, return_mode="median")


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def correctness():
    """Banded (default) and atomic vs the PyTorch reference (fp32) on odd varlen lengths, GQA, and vs the atomic variant at 128K."""
    for lens, window in (([8192 + 5, 3001, 77], 256), ([20000 + 13], 512), ([1000, 64, 4100], 512)):
        cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV, dtype=torch.int32)
        q, k, _ = structured_qkv(sum(lens), seed=len(lens))
        v_ref, s_ref = naive_last_window_sums(q, k, cu, window)
        for variant in est.VARIANTS:
            try:
                v_new, s_new = est.triton_last_window_sums(q, k, cu, window, variant=variant)
            except Exception as error:  # report, go on with the other variant / shape
                print(f"  correctness {variant} lens={lens} window={window}: FAILED {type(error).__name__}: "
                      f"{str(error)[:100]}", flush=True)
                continue
            v_new2, s_new2 = est.triton_last_window_sums(q, k, cu, window, variant=variant)
            same = bool(torch.equal(s_new, s_new2) and torch.equal(v_new, v_new2))
            print(f"  correctness {variant} lens={lens} window={window}: vertical rel {rel(v_new, v_ref):.2e} "
                  f"slash rel {rel(s_new, s_ref):.2e}, deterministic {same}", flush=True)


def profile(length, inputs):
    cu = torch.tensor([0, length], device=DEV, dtype=torch.int32)
    q, k, v = structured_qkv(length) if inputs == "structured" else random_qkv(length)
    row = dict(L=length, inputs=inputs)
    def measure(key, fn):
        """row[key] = fn() (a time or an error), printed at once: a failure (e.g. out of shared memory) must not
        hide the numbers measured before or after it."""
        try:
            row[key] = fn()
        except Exception as error:
            row[key] = f"{type(error).__name__}: {error}"[:120]
        value = row[key]
        print(f"    {key} = {round(value, 4) if isinstance(value, float) else value}", flush=True)

    for window in (256, 512):
        ref_v, ref_s = est.triton_last_window_sums(q, k, cu, window, variant="banded")
        for variant in ("atomic",):
            def agree(variant=variant):
                v_, s_ = est.triton_last_window_sums(q, k, cu, window, variant=variant)
                return max(rel(v_, ref_v), rel(s_, ref_s))
            measure(f"w{window}_{variant}_vs_banded_rel", agree)
        for variant in est.VARIANTS:
            measure(f"w{window}_{variant}_ms",
                    lambda: bench(lambda: est.triton_last_window_sums(q, k, cu, window, variant=variant)))
        w_max = min(window, length)
        measure(f"w{window}_stats_ms",
                lambda: bench(lambda: est._row_statistics(q, k, cu, window, 0.1, w_max, length, 64, 64)))
        for programs in (512, 2048):
            est.SUMS_PROGRAMS = programs
            measure(f"w{window}_banded_p{programs}_ms",
                    lambda: bench(lambda: est.triton_last_window_sums(q, k, cu, window)))
        est.SUMS_PROGRAMS = 1024
    # selection pieces (VS budgets 512)
    vert, slash = est.triton_last_window_sums(q, k, cu, 256)
    lens = sample_lengths(cu)
    fv = forced_scores(vert, lens, 4)
    counts = torch.full((1, HQ), min(512, length), device=DEV, dtype=torch.long)
    a, b = stable_topk(fv, counts), threshold_topk(fv, counts)
    row["vs_topk_equal"] = bool(torch.equal(a, b))
    row["stable_topk_ms"] = bench(lambda: stable_topk(fv, counts))
    row["threshold_topk_ms"] = bench(lambda: threshold_topk(fv, counts))
    row["forced_scores_ms"] = bench(lambda: forced_scores(vert, lens, 4))
    for name, method in (("vs", VerticalSlash()), ("flex", FlexPrefill())):
        sel = method.select(q, k, cu, backend="triton")
        row[f"{name}_select_ms"] = bench(lambda: method.select(q, k, cu, backend="triton"))
        pattern = (sel.vertical_idx, sel.vertical_count, sel.slash_offsets, sel.slash_count)
        row[f"{name}_index_ms"] = bench(lambda: triton_build_vertical_slash_index(cu, *pattern))
        row[f"{name}_sums_ms"] = bench(lambda: est.triton_last_window_sums(q, k, cu, method.approximation_size))
        index = (sel.block_count, sel.block_offset, sel.column_count, sel.column_index)
        out = torch.empty_like(q)
        row[f"{name}_attn_ms"] = bench(lambda: triton_vertical_slash_attention(q, k, v, cu, *index, out=out), rep=100)
        row[f"{name}_ns_mean"] = float(sel.slash_count.float().mean())
        row[f"{name}_overhead_pct"] = 100 * row[f"{name}_select_ms"] / row[f"{name}_attn_ms"]
        if name == "flex":
            from sparse_attn.methods.flexprefill import budget_and_threshold
            window = min(512, length)
            dist = slash / 1.0
            row["flex_budget_and_threshold_ms"] = bench(lambda: budget_and_threshold(dist, 0.65, 512, lens.to(DEV), 64))
            row["sort_ms"] = bench(lambda: torch.sort(dist, dim=-1, descending=True))
    print("  " + json.dumps({a: (round(b, 4) if isinstance(b, float) else b) for a, b in row.items()}), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[131072])
    parser.add_argument("--inputs", nargs="+", default=["structured"])
    args = parser.parse_args()
    import triton
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__} triton={triton.__version__} "
          f"date={time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    for step in [correctness] + [lambda length=length, inputs=inputs: profile(length, inputs)
                                 for inputs in args.inputs for length in args.lengths]:
        try:
            step()
        except Exception as error:  # report and go on: one device call must bring back every other number
            import traceback
            traceback.print_exc()
            print(f"  FAILED: {type(error).__name__}: {error}", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
