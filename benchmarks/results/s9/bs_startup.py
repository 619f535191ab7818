"""Session 9: block_sparse start-up options of the TMA kernel (kernels/block_sparse/triton.py module switches
DIAG_FIRST, L2_PREFETCH) against the shipped default, in one run (H200, Llama-3.1-8B heads, bf16, chunk 128).

Why: at ~3.5 % of blocks (128K) rows visit ~19 blocks; the session-8 numbers (p = 0.1: 29.08 ms, p = 0.035:
11.95 ms) fit t = fixed + blocks x 2.1 us per program with ~7 us fixed per program (~3.4 block-times). These options
attack the fixed part: DIAG_FIRST moves the unpipelined masked tile before the pipelined loop; L2_PREFETCH issues
prefetch.global.L2 for the diagonal chunk's and first listed chunk's K / V rows before the index reads.
Each variant: correctness on the first case (NaN-poisoned output, rel-RMSE vs fp32 rows), then `--passes`
interleaved do_bench medians per case (best kept, spread printed).

Ran once (logs/call1/bs_startup.log) against a kernels/block_sparse/triton.py that is NOT on main: `_tma_tile` took
K, V, their row strides and two constexprs; DIAG_FIRST ran the masked loop before the unmasked one, L2_PREFETCH
issued `prefetch.global.L2` (inline PTX, one per 128-byte line, rows clamped into the sample) for the diagonal
chunk's and the first listed chunk's K / V rows right after the `count` load. Both lost (diag_first 0.93-0.96x,
l2_prefetch 0.99-1.00x the default) and were removed, so the script no longer runs as is.

Usage: python benchmarks/results/s9/bs_startup.py [--passes 3] [--rep 200] [--cases 128:131072:0.035 ...]
"""
import argparse
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from bench_prefill import check, random_block_index, random_qkv, sample_rows  # noqa: E402

from sparse_attn.kernels.block_sparse import triton as bs  # noqa: E402

VARIANTS = {"default": (False, False), "diag_first": (True, False), "l2_prefetch": (False, True),
            "diag_first+l2_prefetch": (True, True)}


def set_startup_options(flags):
    bs.DIAG_FIRST, bs.L2_PREFETCH = flags


def parse_args(default_cases, variant_names=None):
    """--passes, --rep, --cases; with variant_names also --variants (a subset of them, default all)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rep", type=int, default=200)
    parser.add_argument("--cases", nargs="+", default=default_cases)
    if variant_names is not None:
        parser.add_argument("--variants", nargs="+", choices=list(variant_names), default=list(variant_names))
    return parser.parse_args()


def sweep(variants, apply, baseline, cases, passes, rep, call=None):
    """Per case CHUNK:LENGTH:P: every variant checked (NaN-poisoned output, rel-RMSE vs fp32 rows), then `passes`
    interleaved do_bench medians; `apply(flags)` sets the module switches of a variant before each call, or
    `call(q, k, v, cu, index, count, chunk, length, out, flags)` runs the variant itself (session 10)."""
    def run(q, k, v, cu, index, count, chunk, length, out, flags):
        if call is not None:
            return call(q, k, v, cu, index, count, chunk, length, out, flags)
        apply(flags)
        return bs.triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, max_seqlen=length)

    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__}", flush=True)
    for case in cases:
        chunk, length, p = int(case.split(":")[0]), int(case.split(":")[1]), float(case.split(":")[2])
        q, k, v = random_qkv(length)
        cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
        index, count, chosen = random_block_index(length, chunk, p)
        density = float(chosen.float().sum() / (chosen.shape[0] * (chosen.shape[1] * (chosen.shape[1] + 1) / 2)))
        blocks = float(count.sum())
        flops = 4 * 128 * chunk * chunk * blocks  # computed blocks (diagonal counted whole, as bench_prefill)
        print(f"\n## c{chunk} L={length} p={p}: density {density:.4f}, mean blocks per row "
              f"{blocks / count.numel():.1f}", flush=True)
        rows = sample_rows(length)

        def allowed(h, rr):
            kpos = torch.arange(length, device="cuda")
            return chosen[h][rr // chunk][:, kpos // chunk] & (kpos[None, :] <= rr[:, None])
        out = torch.empty_like(q)
        ok_names = []
        for name, flags in variants.items():
            poisoned = torch.full_like(q, float("nan"))
            try:
                run(q, k, v, cu, index, count, chunk, length, poisoned, flags)
                torch.cuda.synchronize()
                good, _ = check(name, poisoned, q, k, v, rows, allowed)
            except Exception as error:
                print(f"  {name}: FAILED {type(error).__name__}: {str(error)[:400]}", flush=True)
                good = False
            if good:
                ok_names.append(name)
        times = {n: [] for n in ok_names}
        for _ in range(passes):
            for name in ok_names:
                times[name].append(do_bench(lambda: run(q, k, v, cu, index, count, chunk, length, out, variants[name]),
                                            warmup=25, rep=rep, return_mode="median"))
        base = min(times[baseline]) if baseline in times else float("nan")
        print(f"| variant | ms (best) | spread | TFLOP/s | x {baseline} |\n|---|---|---|---|---|")
        for name in ok_names:
            best = min(times[name])
            print(f"| {name} | {best:.3f} | {100 * (max(times[name]) - best) / best:.1f}% | "
                  f"{flops / best / 1e9:.0f} | {base / best:.3f} |", flush=True)
        torch.cuda.empty_cache()
    apply(variants[baseline])


if __name__ == "__main__":
    args = parse_args(["128:131072:0.035", "128:131072:0.1", "128:32768:0.1"])
    sweep(VARIANTS, set_startup_options, "default", args.cases, args.passes, args.rep)
