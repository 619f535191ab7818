"""Session 10: the persistent warp-specialized Gluon block-sparse kernel (kernels/block_sparse/gluon.py,
path="gluon") against the shipped TMA kernel (path="tma"), in one run (H200, Llama-3.1-8B heads, bf16).

Runs session 9's check-and-time harness (`s9/bs_startup.sweep`): per case CHUNK:LENGTH:P (bench_prefill's random
mask: diagonal + ceil(p * i) random earlier blocks per row) every variant is checked first (NaN-poisoned output,
rel-RMSE vs fp32 on ~380 sampled rows), then `--passes` interleaved do_bench medians (best kept, spread printed).
TFLOP/s counts every computed block as 4 * chunk^2 * 128 FLOPs.

The variant names are those of the session-10 logs; which kernel code each call ran is in RESULTS.md (session 10):
the "gluon" default changed between calls (one K/V ring in call 1, the causal work order from call 6 on).

Usage: python benchmarks/results/s10/gluon_bench.py [--passes 3] [--rep 200] [--cases 128:131072:0.035 ...]
       [--variants tma gluon gluon_sorted ...]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s9"))
from bs_startup import bs, parse_args, sweep  # noqa: E402  (the check-and-time harness)

VARIANTS = {  # name -> (path, launch)
    "tma": ("tma", None),
    "gluon": ("gluon", None),  # k_stages 3, v_stages 3, q_bufs 1, causal order (last tile first)
    "gluon_sorted": ("gluon", dict(sorted=True)),  # heaviest first by entry count (a device argsort per call)
    "gluon_k4v2": ("gluon", dict(k_stages=4, v_stages=2)),
    "gluon_k2v2q2": ("gluon", dict(k_stages=2, v_stages=2, q_bufs=2)),
    "gluon_k3v2q2": ("gluon", dict(k_stages=3, v_stages=2, q_bufs=2)),
    "gluon_pp": ("gluon", dict(pingpong=True)),
}


def run_variant(q, k, v, cu, index, count, chunk, length, out, flags):
    path, launch = flags
    return bs.triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, max_seqlen=length, path=path,
                                            launch=launch)


if __name__ == "__main__":
    args = parse_args(["128:131072:0.035", "128:131072:0.1", "128:32768:0.1"], VARIANTS)
    sweep({name: VARIANTS[name] for name in args.variants}, lambda flags: None, "tma", args.cases, args.passes,
          args.rep, call=run_variant)
