"""Quest on the probe model with pages shared by the query heads of a KV group (`share_pages=True`, the reference
release's default and the sweep's setting) against pages chosen per query head (`share_pages=False`, what the paper's
runs used). CPU, float32, greedy, held-out sf_ruler_niah samples (task seed 43).

    python benchmarks/results/probe/v5/quest_share_pages.py --length 3072 --samples 8 --budgets 1536,768,608,304,160
"""
import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import sparse_attn
from sparse_attn.tasks import build_task

PROBE = Path(__file__).resolve().parents[4] / "assets" / "probe-model"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, default=3072)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--budgets", default="1536,768,608,304,160", help="Quest token budgets (multiples of 16)")
    p.add_argument("--share", default="true,false", help="share_pages settings to run")
    args = p.parse_args()
    tok = AutoTokenizer.from_pretrained(PROBE)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(PROBE, attn_implementation="sdpa", dtype=torch.float32).eval()
    task = build_task("ruler_niah", tok, seed=43)
    samples = task.generate(args.length, args.samples)
    batch = tok([s["input"] for s in samples], return_tensors="pt", padding=True, add_special_tokens=False)

    def accuracy():
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=300, do_sample=False)
        texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return task.evaluate([{**s, "pred": t} for s, t in zip(samples, texts)])["accuracy"]

    print(f"dense: {accuracy():.3f}", flush=True)
    for share in [x == "true" for x in args.share.split(",")]:
        for budget in [int(x) for x in args.budgets.split(",")]:
            sparse_attn.configure(model, method="quest", token_budget=budget, page_size=16, share_pages=share)
            start = time.time()
            acc = accuracy()
            stats = sparse_attn.get_stats(model)
            print(f"share_pages={share} token_budget={budget} ({args.length / budget:.1f}x): accuracy {acc:.3f} "
                  f"sparsity {stats['sparsity']:.3f} ({time.time() - start:.0f} s)", flush=True)
        model.set_attn_implementation("sdpa")


if __name__ == "__main__":
    main()
