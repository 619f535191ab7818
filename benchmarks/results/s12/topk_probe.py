"""Session 12 probe: the block_sparse selection at the method defaults (chunk 16, top 64) with session 11's row
top-k (32 rounds over a power-of-two row) against this session's (early stop, two row segments), same run,
interleaved; both compared with the torch rules + stable_topk entry for entry. Kernel times from the profiler.

Call 3 ran it with a third kernel, the library's then (git 3f4de64: tie ranking only when a tie needs it, measured
slower and reverted), the shipped kernel as "s12_call1" (from a copy, now identical to the library's).

python benchmarks/results/s12/topk_probe.py [--lengths 32768 131072] [--inputs random structured]
"""
import argparse
import json
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, "benchmarks")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_prefill import random_qkv, structured_qkv  # noqa: E402
import select_triton_s11 as old  # noqa: E402

import sparse_attn.kernels.block_sparse.select_triton as new  # noqa: E402
from sparse_attn.methods.block_sparse import BlockSparse  # noqa: E402


def kernel_ms(fn):
    """CUDA time of the row top-k launches and of everything in one call (profiler, ms)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    topk = total = 0.0
    for e in prof.key_averages():
        total += e.device_time_total / 1e3
        if "block_topk" in e.key:
            topk += e.device_time_total / 1e3
    return topk, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    ap.add_argument("--inputs", nargs="+", default=["random", "structured"])
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}", flush=True)
    method = BlockSparse()
    kernels = {"s11": old.triton_block_topk, "s12": new.triton_block_topk}
    for length in args.lengths:
        cu = torch.tensor([0, length], dtype=torch.int32, device="cuda")
        for kind in args.inputs:
            q, k, _ = random_qkv(length) if kind == "random" else structured_qkv(length)
            select = lambda: method.select(q, k, cu, backend="triton", seq_lens=[length])  # noqa: E731
            oracle = method.select(q, k, cu, backend="naive", seq_lens=[length]).block_index
            row = dict(L=length, inputs=kind)
            best = {}
            for rnd in range(2):
                for name, fn in kernels.items():
                    new.triton_block_topk = fn  # BlockSparse.select imports it from the module at call time
                    if rnd == 0:
                        row[f"same_as_torch_{name}"] = bool(torch.equal(select().block_index, oracle))
                        row[f"topk_kernel_ms_{name}"], row[f"profiled_select_ms_{name}"] = kernel_ms(select)
                    ms = do_bench(select, warmup=25, rep=100, return_mode="median")
                    best[name] = min(best.get(name, ms), ms)
            new.triton_block_topk = kernels["s12"]
            row.update({f"select_ms_{n}": round(v, 3) for n, v in best.items()})
            row["speedup_select"] = round(best["s11"] / best["s12"], 3)
            print(json.dumps({a: (round(b, 3) if isinstance(b, float) else b) for a, b in row.items()}), flush=True)


if __name__ == "__main__":
    main()
