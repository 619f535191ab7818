"""Session 12 probe: Quest page scores and page selection, session 11's kernels (`quest_triton_s11.py`) against the
library's (scores as two dot products per page) and call 2's two-bits-per-round selection
(`quest_triton_2bit.py`), same run, interleaved, CUDA graphs as bench_decode.py times them; every launch
configuration of bench_decode's sweeps. Checks: scores within 1e-5 of the reference, selected pages identical to
the reference selection on the same scores. In call 3 the library's selection was a one-bit early-stopping search
(git 3f4de64), measured no faster and reverted: it is session 11's search again (plus the -0.0 fix), so calls 2-3
timed session 11's selection from a copy ("select_ms_s11") that this script no longer needs.

python benchmarks/results/s12/quest_probe.py [--contexts 32768 131072] [--batches 1 8]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, "benchmarks")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decode import D, DTYPE, HKV, HQ, PAGE, SCORE_CONFIGS, SELECT_WARPS, bench_ms, rel_rmse  # noqa: E402
import quest_triton_2bit as two_bits  # noqa: E402  (call 2's selection)
import quest_triton_s11 as old  # noqa: E402

import sparse_attn.kernels.quest.triton as new  # noqa: E402
from sparse_attn.kernels.quest import build_page_meta, naive_quest_page_scores, naive_quest_select_pages  # noqa


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
            ref = naive_quest_page_scores(q, pmin, pmax, lens, PAGE, True)
            finite = torch.isfinite(ref)
            row = dict(context=context, batch=batch, meta_MB=round(2 * pmin.numel() * pmin.element_size() / 1e6, 1))
            for name, mod in (("s11", old), ("s12", new)):
                best = None
                for cfg in SCORE_CONFIGS:
                    kw = dict(block_p=cfg[0], blocks_per_program=cfg[1], num_stages=cfg[2])
                    s = mod.triton_quest_page_scores(q, pmin, pmax, lens, PAGE, True, **kw)
                    assert torch.equal(torch.isfinite(s), finite) and rel_rmse(ref[finite], s[finite]) <= 1e-5, cfg
                    ms = min(bench_ms(lambda: mod.triton_quest_page_scores(q, pmin, pmax, lens, PAGE, True, **kw),
                                      rep=30)[0] for _ in range(2))
                    if best is None or ms < best[1]:
                        best = (cfg, ms)
                row[f"scores_ms_{name}"], row[f"scores_cfg_{name}"] = round(best[1], 4), best[0]
                row[f"scores_GBps_{name}"] = round(row["meta_MB"] / best[1], 0)
            scores = new.triton_quest_page_scores(q, pmin, pmax, lens, PAGE, True)
            want = naive_quest_select_pages(scores, lens, PAGE, budget)
            for name, mod in (("s12_2bit", two_bits), ("s12", new)):  # s12 = session 11's search + the -0.0 fix
                best = None
                for warps in SELECT_WARPS:
                    got = mod.triton_quest_select_pages(scores, lens, PAGE, budget, num_warps=warps)
                    assert torch.equal(got, want), (name, warps)
                    ms = min(bench_ms(lambda: mod.triton_quest_select_pages(scores, lens, PAGE, budget,
                                                                            num_warps=warps), rep=30)[0]
                             for _ in range(2))
                    if best is None or ms < best[1]:
                        best = (warps, ms)
                row[f"select_ms_{name}"], row[f"select_warps_{name}"] = round(best[1], 4), best[0]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
