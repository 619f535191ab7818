"""Session 10: the persistent warp-specialized Gluon block-sparse kernel (kernels/block_sparse/gluon.py,
path="gluon") against the shipped TMA kernel (path="tma"), in one run (H200, Llama-3.1-8B heads, bf16).

Per case CHUNK:LENGTH:P (bench_prefill's random mask: diagonal + ceil(p * i) random earlier blocks per row): every
variant checked first (NaN-poisoned output, rel-RMSE vs fp32 on ~380 sampled rows), then `--passes` interleaved
do_bench medians (best kept, spread printed). TFLOP/s counts every computed block as 4 * chunk^2 * 128 FLOPs.

Usage: python benchmarks/results/s10/gluon_bench.py [--passes 3] [--rep 200] [--cases 128:131072:0.035 ...]
       [--variants tma gluon gluon_s3q1 ...]
"""
import argparse
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from bench_prefill import check, random_block_index, random_qkv, sample_rows  # noqa: E402

from sparse_attn.kernels.block_sparse import triton as bs  # noqa: E402

VARIANTS = {
    "tma": ("tma", None),
    "gluon": ("gluon", None),  # k_stages 3, v_stages 3, q_bufs 1, causal order (last tile first)
    "gluon_sorted": ("gluon", dict(sorted=True)),  # heaviest first by entry count (a device argsort per call)
    "gluon_k4v2": ("gluon", dict(k_stages=4, v_stages=2)),
    "gluon_k2v2q2": ("gluon", dict(k_stages=2, v_stages=2, q_bufs=2)),
    "gluon_k3v2q2": ("gluon", dict(k_stages=3, v_stages=2, q_bufs=2)),
    "gluon_pp": ("gluon", dict(pingpong=True)),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rep", type=int, default=200)
    parser.add_argument("--cases", nargs="+", default=["128:131072:0.035", "128:131072:0.1", "128:32768:0.1"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    variants = {n: VARIANTS[n] for n in args.variants}

    def run(q, k, v, cu, index, count, length, chunk, out, name):
        path, launch = variants[name]
        return bs.triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, max_seqlen=length,
                                                path=path, launch=launch)

    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__}", flush=True)
    for case in args.cases:
        chunk, length, p = int(case.split(":")[0]), int(case.split(":")[1]), float(case.split(":")[2])
        q, k, v = random_qkv(length)
        cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
        index, count, chosen = random_block_index(length, chunk, p)
        density = float(chosen.float().sum() / (chosen.shape[0] * (chosen.shape[1] * (chosen.shape[1] + 1) / 2)))
        blocks = float(count.sum())
        flops = 4 * 128 * chunk * chunk * blocks
        print(f"\n## c{chunk} L={length} p={p}: density {density:.4f}, mean blocks per row "
              f"{blocks / count.numel():.1f}", flush=True)
        rows = sample_rows(length)

        def allowed(h, rr):
            kpos = torch.arange(length, device="cuda")
            return chosen[h][rr // chunk][:, kpos // chunk] & (kpos[None, :] <= rr[:, None])
        ok = []
        for name in variants:
            poisoned = torch.full_like(q, float("nan"))
            try:
                run(q, k, v, cu, index, count, length, chunk, poisoned, name)
                torch.cuda.synchronize()
                good, _ = check(name, poisoned, q, k, v, rows, allowed)
            except Exception as error:
                print(f"  {name}: FAILED {type(error).__name__}: {str(error)[:600]}", flush=True)
                good = False
            if good:
                ok.append(name)
        out = torch.empty_like(q)
        times = {n: [] for n in ok}
        for _ in range(args.passes):
            for name in ok:
                times[name].append(do_bench(lambda: run(q, k, v, cu, index, count, length, chunk, out, name),
                                            warmup=25, rep=args.rep, return_mode="median"))
        base = min(times["tma"]) if "tma" in times else float("nan")
        print("| variant | ms (best) | spread | TFLOP/s | x tma |\n|---|---|---|---|---|")
        for name in ok:
            best = min(times[name])
            print(f"| {name} | {best:.3f} | {100 * (max(times[name]) - best) / best:.1f}% | "
                  f"{flops / best / 1e9:.0f} | {base / best:.3f} |", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
