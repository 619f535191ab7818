"""Session 15 probe: Quest page scores when the metadata holds empty pages past the current one (a growing cache
reserves 1/8 more pages ahead; a padded batch's shorter samples have a tail), before and after the scores kernel
masked its metadata loads to the candidate pages: session 14's kernel (`scores_s14.py`) and the library's, each on
exact-size metadata and on metadata with 1/8 extra (empty) pages, B = 1 / 8 at 128K, same run; scores must be equal
on the shared pages.

python benchmarks/results/s15/reserved_pages_probe.py
"""
import json
import os
import sys

import torch

sys.path.insert(0, "benchmarks")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import D, DTYPE, HKV, HQ, PAGE, bench_ms  # noqa: E402
import scores_s14 as old  # noqa: E402

from sparse_attn.kernels.quest import build_page_meta  # noqa: E402
from sparse_attn.kernels.quest.triton import triton_quest_page_scores as new_scores  # noqa: E402


def main():
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}", flush=True)
    context = 131072
    for batch in (1, 8):
        torch.manual_seed(batch)
        q = torch.randn(batch, HQ, D, device="cuda", dtype=DTYPE)
        k = torch.randn(batch, HKV, context, D, device="cuda", dtype=DTYPE)
        lens = torch.full((batch,), context, device="cuda", dtype=torch.int32)
        pmin, pmax = build_page_meta(k, lens, PAGE)
        del k
        extra = pmin.shape[2] // 8
        pad = torch.full((batch, HKV, extra, D), float("inf"), device="cuda", dtype=DTYPE)
        gmin, gmax = torch.cat([pmin, pad], 2), torch.cat([pmax, -pad], 2)
        exact = new_scores(q, pmin, pmax, lens, PAGE, True)
        row = dict(batch=batch, pages=pmin.shape[2], reserved=extra)
        for kernel, fn in (("s14", old.triton_quest_page_scores), ("s15", new_scores)):
            grown = fn(q, gmin, gmax, lens, PAGE, True)
            assert torch.equal(exact, grown[..., :exact.shape[-1]]), kernel
            for name, (a, b) in (("exact", (pmin, pmax)), ("reserved", (gmin, gmax))):
                row[f"{kernel}_{name}_us"] = round(1e3 * min(bench_ms(lambda: fn(q, a, b, lens, PAGE, True),
                                                                      rep=50)[0] for _ in range(3)), 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
