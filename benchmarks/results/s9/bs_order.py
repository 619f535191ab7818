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
import argparse
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from bench_prefill import check, random_block_index, random_qkv, sample_rows  # noqa: E402

from sparse_attn.kernels.block_sparse import triton as bs  # noqa: E402

VARIANTS = {"head_major": False, "group_major": True}


def run(q, k, v, cu, index, count, length, out, flags):
    bs.GROUP_MAJOR = flags
    return bs.triton_block_sparse_attention(q, k, v, cu, index, count, 128, out=out, max_seqlen=length)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rep", type=int, default=200)
    parser.add_argument("--cases", nargs="+",
                        default=["128:131072:0.035", "128:131072:0.1", "128:65536:0.035", "128:32768:0.1"])
    args = parser.parse_args()
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__}", flush=True)
    for case in args.cases:
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
        for name, flags in VARIANTS.items():
            poisoned = torch.full_like(q, float("nan"))
            try:
                run(q, k, v, cu, index, count, length, poisoned, flags)
                torch.cuda.synchronize()
                good, _ = check(name, poisoned, q, k, v, rows, allowed)
            except Exception as error:
                print(f"  {name}: FAILED {type(error).__name__}: {str(error)[:400]}", flush=True)
                good = False
            if good:
                ok_names.append(name)
        times = {n: [] for n in ok_names}
        for _ in range(args.passes):
            for name in ok_names:
                times[name].append(do_bench(lambda: run(q, k, v, cu, index, count, length, out, VARIANTS[name]),
                                            warmup=25, rep=args.rep, return_mode="median"))
        base = min(times["head_major"]) if "head_major" in times else float("nan")
        print("| variant | ms (best) | spread | TFLOP/s | x head-major |\n|---|---|---|---|---|")
        for name in ok_names:
            best = min(times[name])
            print(f"| {name} | {best:.3f} | {100 * (max(times[name]) - best) / best:.1f}% | "
                  f"{flops / best / 1e9:.0f} | {base / best:.3f} |", flush=True)
        del q, k, v, index, count, chosen
        torch.cuda.empty_cache()
    bs.GROUP_MAJOR = True


if __name__ == "__main__":
    main()
