"""Session 13: the vertical-slash attention kernel with and without COLUMN_RUNS (full groups of 64 consecutive
column keys before the row folded as one unmasked block) on the library's selections: vertical_slash and flexprefill
at their defaults, structured inputs (bench_prefill's LLM-like q/k) and random ones (flat attention: flexprefill
keeps nearly every key as a vertical). Prints ms per variant, the share of column groups that are runs, the
difference between the two outputs, and cuDNN dense for scale.

The variant was reverted after this probe (call 2): it needs benchmarks/results/s13/column_runs.patch applied
(`git apply`), and refuses to run without it (else both timings would be the same kernel).

Usage: python benchmarks/results/s13/vs_runs_probe.py [--cases vertical_slash:structured:131072 ...]
"""
import argparse
import json
import sys

import torch

sys.path.insert(0, "benchmarks")
from bench_prefill import bench, library_method, random_qkv, structured_qkv  # noqa: E402

import sparse_attn.kernels.vertical_slash.triton as vs  # noqa: E402
from sparse_attn.kernels.dense import dense_attention  # noqa: E402

DEFAULT_CASES = ["vertical_slash:structured:131072", "flexprefill:structured:131072", "flexprefill:random:32768",
                 "flexprefill:random:65536", "vertical_slash:random:131072"]


def run_groups(cc, ci):
    """(groups of 64 columns, of which runs of consecutive keys wholly before their row)."""
    width = ci.shape[-1]
    pad = (-width) % 64
    ci = torch.nn.functional.pad(ci, (0, pad), value=-1)
    groups = ci.view(*ci.shape[:3], -1, 64)
    g_idx = torch.arange(groups.shape[3], device=ci.device)
    full = (g_idx[None, None, None] + 1) * 64 <= cc[..., None]
    rows = torch.arange(ci.shape[2], device=ci.device)[None, None, :, None]
    first, last = groups[..., 0], groups[..., 63]
    runs = full & (last - first == 63) & (last < rows * 64)
    n_groups = ((cc + 63) // 64).sum()
    return int(n_groups), int(runs.sum())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", nargs="+", default=DEFAULT_CASES)
    args = parser.parse_args()
    if not hasattr(vs, "COLUMN_RUNS"):
        raise SystemExit("the COLUMN_RUNS kernel variant was reverted: "
                         "git apply benchmarks/results/s13/column_runs.patch")
    for case in args.cases:
        method, inputs, length = case.split(":")
        length = int(length)
        q, k, v = (structured_qkv if inputs == "structured" else random_qkv)(length)
        cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
        sel = library_method(method).select(q, k, cu, backend="triton", seq_lens=[length])
        index = (sel.block_count, sel.block_offset, sel.column_count, sel.column_index)
        groups, runs = run_groups(sel.column_count, sel.column_index)
        row = dict(case=case, nv_mean=float(sel.vertical_count.float().mean()),
                   ns_mean=float(sel.slash_count.float().mean()), column_groups=groups, run_groups=runs)
        outs = {}
        for flag in (False, True, False, True):
            vs.COLUMN_RUNS = flag
            out = torch.full_like(q, float("nan"))
            vs.triton_vertical_slash_attention(q, k, v, cu, *index, out=out, max_seqlen_hint=length)
            outs[flag] = out
            row[f"ms_runs_{flag}"] = bench(lambda: vs.triton_vertical_slash_attention(
                q, k, v, cu, *index, out=out, max_seqlen_hint=length), rep=50)
        row["rel_diff"] = float((outs[True].float() - outs[False].float()).norm() / outs[False].float().norm())
        row["nan"] = bool(outs[True].isnan().any())
        row["cudnn_ms"] = bench(lambda: dense_attention(q, k, v, cu), rep=20)
        vs.COLUMN_RUNS = True
        print(json.dumps({a: (round(b, 4) if isinstance(b, float) else b) for a, b in row.items()}), flush=True)
        sel = index = outs = out = None  # free before the next case
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
