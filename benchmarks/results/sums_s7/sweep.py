"""Session 7: where the skew sums pass spends its time, and which launch is fastest (H200, 128K, structured inputs).

Times the two estimation kernels alone (do_bench medians, inputs prepared once):
  stats  = `_row_statistics(merge=False)` (pass 1), sums = `_skew_sums` (prep + pass 2), at windows 256 / 512;
  a sweep of SKEW_LAUNCH for skew_gather (NQ, warps, stages, Q resident), and ablations built from source-edited
  copies of kernels/estimation/triton.py (benchmark-local modules, never imported by the library):
    no_gather: the diagonal extraction's tl.gather replaced by the tile itself (sums wrong, timing only);
    no_exp: probabilities = the raw scores (no exp2);  no_vertical: the vertical store dropped.
Usage: python benchmarks/results/sums_s7/sweep.py [--length 131072]
"""
import argparse
import importlib
import itertools
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench_prefill import structured_qkv  # noqa: E402

import sparse_attn.kernels.estimation.triton as est  # noqa: E402

EST_FILE = est.__file__
#: statistics-pass launches (BLOCK_M, BLOCK_N, warps, stages) not in session 5's sweep (its winner: (64, 64, 4, 3))
STATS_LAUNCHES = [(64, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 4), (64, 32, 4, 3)]
ABLATIONS = {
    "no_gather": [("g = tl.gather(acc, j & (BLOCK - 1), 1)", "g = acc")],
    "no_exp": [("p = tl.math.exp2(tl.dot(q, tl.trans(k)) - lse[:, None])", "p = tl.dot(q, tl.trans(k)) - lse[:, None]")],
    "no_vertical": [("tl.store(Vertical + out_base + k_pos, tl.sum(vert, 0), mask=key_ok)", "pass")],
    # experiment (same sums): the two masked row reductions of the diagonal extraction as ONE reduction of the
    # joined [64, 64, 2] tile (one shared-memory round trip and barrier instead of two)
    "join2": [("""    low = tl.sum(tl.where(j >= 0, g, 0.0), 0)
    up = tl.sum(tl.where(j >= 0, 0.0, g), 0)""", """    low, up = tl.split(tl.sum(tl.join(tl.where(j >= 0, g, 0.0), tl.where(j >= 0, 0.0, g)), 0))""")],
    "no_gather_no_exp": [("g = tl.gather(acc, j & (BLOCK - 1), 1)", "g = acc"),
                         ("p = tl.math.exp2(tl.dot(q, tl.trans(k)) - lse[:, None])",
                          "p = tl.dot(q, tl.trans(k)) - lse[:, None]")],
}


def ablated_module(name):
    src = open(EST_FILE).read()
    for old, new in ABLATIONS[name]:
        assert src.count(old) == 1, (name, old)
        src = src.replace(old, new)
    path = os.path.join(os.path.dirname(EST_FILE), f"_abl_{name}.py")
    with open(path, "w") as fh:
        fh.write(src)
    try:  # Triton reads a kernel's source when it is decorated, so the file can go once imported
        return importlib.import_module(f"sparse_attn.kernels.estimation._abl_{name}")
    finally:
        os.remove(path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="only these ablations / experiments, no launch sweep")
    args = parser.parse_args()
    length = args.length
    q, k, _ = structured_qkv(length)
    cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
    qk_scale = q.shape[-1] ** -0.5 * 1.4426950408889634
    print(f"device={torch.cuda.get_device_name()} L={length}", flush=True)
    for window in (256, 512):
        w_max = min(window, length)
        parts = est._row_statistics(q, k, cu, window, qk_scale, w_max, length, *est.SKEW_STATS, merge=False)
        ms = do_bench(lambda: est._row_statistics(q, k, cu, window, qk_scale, w_max, length, *est.SKEW_STATS,
                                                  merge=False), warmup=25, rep=100)
        print(f"window {window}: stats {ms:.3f} ms", flush=True)
        for stats in STATS_LAUNCHES:
            try:
                got = est._row_statistics(q, k, cu, window, qk_scale, w_max, length, *stats, merge=False)
                t2 = do_bench(lambda: est._row_statistics(q, k, cu, window, qk_scale, w_max, length, *stats,
                                                          merge=False), warmup=25, rep=100)
                print(f"  stats launch {stats}: {t2:.3f} ms ({got[0].shape[2]} splits)", flush=True)
            except Exception as error:
                print(f"  stats launch {stats}: {type(error).__name__}: {error}"[:200], flush=True)
        ref = est._skew_sums(q, k, cu, window, qk_scale, w_max, length, *parts, "skew_gather")

        def run(mod, variant="skew_gather", launch=None):
            saved = dict(mod.SKEW_LAUNCH)
            try:
                if launch is not None:
                    mod.SKEW_LAUNCH[variant] = launch
                got = mod._skew_sums(q, k, cu, window, qk_scale, w_max, length, *parts, variant)
                diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, ref))
                t = do_bench(lambda: mod._skew_sums(q, k, cu, window, qk_scale, w_max, length, *parts, variant),
                             warmup=25, rep=100)
                return t, diff
            finally:
                mod.SKEW_LAUNCH.clear()
                mod.SKEW_LAUNCH.update(saved)

        t, _ = run(est)
        print(f"  default skew_gather {est.SKEW_LAUNCH['skew_gather']}: {t:.3f} ms", flush=True)
        for name in (ABLATIONS if args.only is None else args.only):
            try:
                t2, diff = run(ablated_module(name))
                print(f"  ablation {name}: {t2:.3f} ms (saves {t - t2:.3f}), diff {diff:.1e}", flush=True)
            except Exception as error:
                print(f"  ablation {name}: {type(error).__name__}: {error}"[:200], flush=True)
        if args.only is not None:
            continue
        configs = list(itertools.product((2, 4), (4, 8), (1, 2, 3), (0, 1))) + [(1, 4, 2, 1), (1, 8, 2, 1)]
        if args.quick:
            configs = configs[:4]
        for launch in configs:
            try:
                t2, diff = run(est, launch=launch)
                print(f"  launch {launch}: {t2:.3f} ms, diff {diff:.1e}", flush=True)
            except Exception as error:
                print(f"  launch {launch}: {type(error).__name__}: {error}"[:200], flush=True)
        for variant in ("banded",):  # (session 7's first run also timed the removed "skew" / "skew_pipe")
            try:
                if variant == "banded":
                    t2 = do_bench(lambda: est.triton_last_window_sums(q, k, cu, window, variant="banded",
                                                                      max_len=length), warmup=25, rep=100)
                    print(f"  banded (stats + sums, whole call): {t2:.3f} ms", flush=True)
                else:
                    t2, diff = run(est, variant=variant)
                    print(f"  variant {variant} {est.SKEW_LAUNCH[variant]}: {t2:.3f} ms, diff {diff:.1e}", flush=True)
            except Exception as error:
                print(f"  variant {variant}: {type(error).__name__}: {error}"[:200], flush=True)


if __name__ == "__main__":
    main()
