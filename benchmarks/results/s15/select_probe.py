"""Session 15 probe: the Quest page selection, session 14's kernel (`select_s14.py`: 32 bitwise rounds, two scans)
against the library's (a first guess from the row's mean / std, regula falsi with the Illinois correction, bisection
after three slow rounds; one packed scan), same run, CUDA graphs as bench_decode.py times them, every warp count of
its sweep. Scores are the library's page scores of random caches (page 16, budget 10 % of the context); both
selections must equal the reference selection on them. "rounds" = counts the library's search made per row, from a
Python mirror of it (`search_rounds`, the same arithmetic in numpy).

python benchmarks/results/s15/select_probe.py [--contexts 32768 131072] [--batches 1 8]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import D, DTYPE, HKV, HQ, PAGE, SELECT_WARPS, bench_ms  # noqa: E402
import select_s14 as old  # noqa: E402

import sparse_attn.kernels.quest.triton as new  # noqa: E402
from sparse_attn.kernels.quest import build_page_meta, naive_quest_select_pages  # noqa: E402


def float_keys(x: np.ndarray) -> np.ndarray:
    bits = x.astype(np.float32).view(np.int32).astype(np.int64)
    bits = np.where((bits & 0x7FFFFFFF) == 0, 0, bits)
    return np.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


def search_rounds(row: np.ndarray, take: int) -> int:
    """Counts made by the kernel's search on one row of candidate scores (mirror of `_select_pages_kernel`)."""
    key, n = float_keys(row), len(row)
    lo, hi, count_lo, count_hi = int(key.min()), int(key.max()) + 1, n, 0
    mean = np.float32(row.sum(dtype=np.float32) / n)
    std = np.sqrt(max(np.float32((row * row).sum(dtype=np.float32) / n) - mean * mean, 0.0))
    tail = min(max((take + 0.5) / n, 1e-6), 1 - 1e-6)
    first = np.float32(mean + std * np.log((1 - tail) / tail) / 1.702)
    use_first, weights, last, slow, rounds = bool(np.isfinite(first)), [1.0, 1.0], -1, 0, 0
    while count_lo > take and hi - lo > 1:
        span = hi - lo
        pull_lo, pull_hi = (count_lo - take - 0.5) * weights[0], (take + 0.5 - count_hi) * weights[1]
        trial = lo + int(np.float32(span) * np.float32(pull_lo / (pull_lo + pull_hi)))
        trial = lo + span // 2 if slow >= 3 else trial
        trial = int(float_keys(np.array([first]))[0]) if use_first else trial
        trial, use_first = min(max(trial, lo + 1), hi - 1), False
        count = int((key >= trial).sum())
        rounds += 1
        reached = int(count >= take)
        if reached:
            lo, count_lo = trial, count
        else:
            hi, count_hi = trial, count
        if reached == last:
            weights[reached] *= 0.5
        else:
            weights = [1.0, 1.0]
        last, slow = reached, (slow + 1 if 2 * (hi - lo) > span else 0)
    return rounds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", type=int, nargs="+", default=[32768, 131072])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}", flush=True)
    for context in args.contexts:
        for batch in args.batches:
            torch.manual_seed(context + batch)
            budget = context // 10 // PAGE
            q = torch.randn(batch, HQ, D, device="cuda", dtype=DTYPE)
            k = torch.randn(batch, HKV, context, D, device="cuda", dtype=DTYPE)
            lens = torch.full((batch,), context, device="cuda", dtype=torch.int32)
            pmin, pmax = build_page_meta(k, lens, PAGE)
            del k
            scores = new.triton_quest_page_scores(q, pmin, pmax, lens, PAGE, True)
            want = naive_quest_select_pages(scores, lens, PAGE, budget)
            current = (context - 1) // PAGE
            rows = scores[..., :current].flatten(0, 1).cpu().numpy()
            rounds = [search_rounds(r, min(budget, current)) for r in rows]
            row = dict(context=context, batch=batch, pages=scores.shape[-1], rows=len(rows),
                       rounds_min=min(rounds), rounds_median=float(np.median(rounds)), rounds_max=max(rounds))
            variants = [("s14", old, {}), ("s15", new, {}), ("s15_reads", new, dict(return_reads=True))]
            for name, mod, extra in variants:
                for warps in SELECT_WARPS + [32]:
                    got = mod.triton_quest_select_pages(scores, lens, PAGE, budget, num_warps=warps, **extra)
                    got = got[0] if isinstance(got, tuple) else got
                    assert torch.equal(got, want), (name, warps)
                    ms = min(bench_ms(lambda: mod.triton_quest_select_pages(scores, lens, PAGE, budget,
                                                                            num_warps=warps, **extra), rep=30)[0]
                             for _ in range(2))
                    row[f"{name}_w{warps}_us"] = round(ms * 1e3, 1)
                row[f"{name}_best_us"] = min(v for k_, v in row.items() if k_.startswith(f"{name}_w"))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
