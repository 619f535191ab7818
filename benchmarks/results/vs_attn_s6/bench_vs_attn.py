"""Time the vertical-slash attention kernel: the pre-session-6 kernel (legacy_kernel.py, verbatim) vs the new
pointer and tma paths with launch variants, on bench_prefill's structured inputs and real VS / FlexPrefill
selection (Llama-3.1-8B heads, bf16, one sample). do_bench medians, passes interleaved (best pass kept).

Per (method, length) it prints density, each variant's ms, TFLOP/s (bench_prefill's formula: 64x64 per block,
64 per column) and x legacy, plus each output's relative RMSE vs the legacy kernel's (a bf16 sanity check; the
fp32 comparison is tests/gpu/test_vertical_slash_attention_gpu.py).
Usage: python benchmarks/results/vs_attn_s6/bench_vs_attn.py [--lengths 131072 32768] [--passes 2] [--json F]
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))  # benchmarks/: bench_prefill's inputs and selection
sys.path.insert(0, HERE)
from bench_prefill import D, DEV, HQ, bench, select_vertical_slash, structured_qkv  # noqa: E402
from legacy_kernel import legacy_vertical_slash_attention  # noqa: E402

from sparse_attn.kernels.vertical_slash.naive import vertical_slash_pair_counts  # noqa: E402
from sparse_attn.kernels.vertical_slash.triton import (triton_build_vertical_slash_index,  # noqa: E402
                                                       triton_vertical_slash_attention)

VARIANTS = {  # name -> (path, launch); None launch = the library default of that path
    "legacy (pre-s6)": ("legacy", None),
    "pointer default": ("pointer", None),
    "pointer w4 s3 cols1": ("pointer", (64, 4, 3, False, 1)),
    "tma default": ("tma", None),
    "tma w4 s3 pipe cols1": ("tma", (64, 4, 3, True, 1)),
    "tma w4 s2 pipe cols1": ("tma", (64, 4, 2, True, 1)),
    "tma w4 s3 nopipe": ("tma", (64, 4, 3, False)),
    "tma w8 s2 pipe": ("tma", (64, 8, 2, True)),
    "tma w8 s3 pipe": ("tma", (64, 8, 3, True)),
}


def runner(name, q, k, v, cu, index, out, length):
    path, launch = VARIANTS[name]
    if path == "legacy":
        return lambda: legacy_vertical_slash_attention(q, k, v, cu, *index, out=out, max_seqlen_hint=length)
    return lambda: triton_vertical_slash_attention(q, k, v, cu, *index, out=out, launch=launch, path=path,
                                                   max_seqlen_hint=length)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[131072, 32768])
    parser.add_argument("--methods", nargs="+", default=["vertical_slash", "flexprefill"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--rep", type=int, default=200, help="do_bench rep (ms of timed runs per measurement)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__}", flush=True)
    results = []
    for length in args.lengths:
        q, k, v = (t.contiguous() for t in structured_qkv(length))  # the tma path needs heads contiguous
        cu = torch.tensor([0, length], device=DEV, dtype=torch.int32)
        for method in args.methods:
            t0 = time.time()
            index = triton_build_vertical_slash_index(cu, *select_vertical_slash(q, k, cu, length, method))
            bc, bo, cc, ci = index
            flops = (float(bc.sum()) * 64 * 64 + float(cc.sum()) * 64) * 4 * D
            density = float(vertical_slash_pair_counts(cu, *index).sum()) / (HQ * length * (length + 1) / 2)
            outs, ms = {}, {}
            for name in args.variants:  # compile + correctness vs legacy
                outs[name] = torch.full_like(q, float("nan"))
                runner(name, q, k, v, cu, index, outs[name], length)()
            torch.cuda.synchronize()
            ref = outs[args.variants[0]].float()
            err = {n: float((o.float() - ref).norm() / ref.norm()) for n, o in outs.items()}
            nan = {n: bool(o.isnan().any()) for n, o in outs.items()}
            for _ in range(args.passes):
                for name in args.variants:
                    t = bench(runner(name, q, k, v, cu, index, outs[name], length), rep=args.rep)
                    ms[name] = min(ms.get(name, float("inf")), t)
            base = ms[args.variants[0]]
            print(f"\n#### {method} L={length} density={density:.4f} (setup {time.time() - t0:.1f} s)")
            print("| variant | ms | TFLOP/s | x first | rel err vs first | NaN |\n|---|---|---|---|---|---|")
            for name in args.variants:
                print(f"| {name} | {ms[name]:.3f} | {flops / ms[name] / 1e9:.0f} | {base / ms[name]:.3f} | "
                      f"{err[name]:.1e} | {nan[name]} |", flush=True)
            best = min(ms, key=ms.get)
            print(f"best: {best} {ms[best]:.3f} ms ({base / ms[best]:.3f}x {args.variants[0]})", flush=True)
            results.append(dict(method=method, L=length, density=density, flops=flops, ms=ms, rel_err=err, nan=nan))
            del outs
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
