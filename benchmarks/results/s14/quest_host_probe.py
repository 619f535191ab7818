"""Session 14: where the host time of a Transformers Quest decode step goes (2 Llama layers of 8B shape, 128K
prompt, B = 1). Session 13 measured 4.1-6.1 ms/token for quest against 2.3 for our dense, with ~0.67 ms of GPU work:
the step is host-bound. Here: (1) per-step wall clock over 40 steps after warm-up (dense, quest); (2) kernel
launches per step (profiler); (3) host microseconds per call of each piece of the quest path on one committed layer
(perf_counter over N calls without sync: when the GPU keeps up, that is the host cost).

"quest-legacy" runs the step as it was before session 14 (separate K/V index writes, metadata fold and `lens += 1`;
selection then `Quest.measure` in torch), patched in by this script, to compare on the same machine.

Ran on commit 1285dbf (calls 1-4). From commit 07a6c0a the Quest cache layer no longer writes the token in
`_append` (the attention's `decode_step` does, as a CUDA graph), so the legacy patch below no longer applies: check
out 1285dbf to rerun this script as it ran.

python benchmarks/results/s14/quest_host_probe.py [--batch B] [--length L]
"""
import argparse
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, fresh_cache, use_method  # noqa: E402

from sparse_attn.integrations.transformers.cache import QuestLayer  # noqa: E402
from sparse_attn.kernels.quest import (append_token, quest_decode, quest_page_scores,  # noqa: E402
                                       quest_select_pages, update_page_meta)
from sparse_attn.methods.quest import Quest  # noqa: E402


NEW_APPEND, NEW_SELECT = QuestLayer._append, Quest.select_pages


def legacy_append(self, k_new, v_new):
    self._ensure_capacity()
    b = torch.arange(self.lens.shape[0], device=self.lens.device)
    slot = self.lens.long()
    self.keys[b, :, slot] = k_new
    self.values[b, :, slot] = v_new
    self.pages.append(k_new, slot, max_position=self.max_len)
    self.lens += 1


def legacy_select(self, q, pages, lens, backend="auto"):
    scores = quest_page_scores(q, pages.page_min, pages.page_max, lens, self.page_size, self.share_pages)
    return self.measure(quest_select_pages(scores, lens, self.page_size, self.page_budget), lens)


def use_path(legacy):
    QuestLayer._append = legacy_append if legacy else NEW_APPEND
    Quest.select_pages = legacy_select if legacy else NEW_SELECT


LAUNCH_EVENTS = ("cudaLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC", "cuLaunchKernel")


def host_cost(fn, n=200):
    """(host us per call, wall us per call incl. draining the GPU queue)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return round((t1 - t0) / n * 1e6, 1), round((t2 - t0) / n * 1e6, 1)


def launches(fn, steps=3):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    counts = {}
    for e in prof.events():
        if e.name in LAUNCH_EVENTS:
            counts[e.name] = counts.get(e.name, 0) + 1
    return {k: v / steps for k, v in counts.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--length", type=int, default=131072)
    args = ap.parse_args()
    L, B = args.length, args.batch
    model = build_model(2, L + 8192)
    ids = torch.randint(0, model.config.vocab_size, (B, L), device="cuda")
    for label in ("dense", "quest", "quest-legacy", "quest"):
        name = label.split("-")[0]
        use_path(label == "quest-legacy")
        use_method(model, name)
        with torch.no_grad():
            cache = fresh_cache(model, name)
            nxt = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:]
            nxt = nxt.argmax(-1)

            def step():
                model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)

            for _ in range(20):
                step()
            per_step = []
            for _ in range(40):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                t1 = time.perf_counter()
                torch.cuda.synchronize()
                per_step.append((round((t1 - t0) * 1e3, 2), round((time.perf_counter() - t0) * 1e3, 2)))
            print(f"{label} B={B} L={L}: per step (host ms, total ms): {per_step}", flush=True)
            print(f"{label}: 50-step host/total us per step: {host_cost(step, 50)}", flush=True)
            print(f"{label}: launches per step: {launches(step)}", flush=True)
            if label == "quest-legacy":
                use_path(False)
                pieces(model, cache)
        cache = None
        torch.cuda.empty_cache()


def pieces(model, cache):
    layer = cache.layers[0]
    quest = Quest()
    B, Hkv, _, D = layer.keys.shape
    q = torch.randn(B, 32, D, device="cuda", dtype=torch.bfloat16)
    k_new = torch.randn(B, Hkv, D, device="cuda", dtype=torch.bfloat16)
    pages, lens = layer.pages, layer.lens
    pages.reserve(layer.max_len + 1024)  # room for the appends timed below
    print(f"cache keys {tuple(layer.keys.shape)}, pages {tuple(pages.page_min.shape)}, lens {lens.tolist()}")
    small = torch.ones(4, device="cuda")
    scores = quest_page_scores(q, pages.page_min, pages.page_max, lens, 16, True)
    index = quest_select_pages(scores, lens, 16, quest.page_budget)
    positions = (lens - 1).long()
    rows = [
        ("torch add (1 launch)", lambda: small.add_(1.0)),
        ("torch.arange + index_put K (cache write)",
         lambda: layer.keys.__setitem__((torch.arange(B, device="cuda"), slice(None), positions), k_new)),
        ("append_token (1 Triton: K, V, page fold, lens+1)",
         lambda: append_token(layer.keys, layer.values, pages.page_min, pages.page_max, k_new, k_new, lens, 16)),
        ("update_page_meta (1 Triton)",
         lambda: update_page_meta(pages.page_min, pages.page_max, k_new, positions, 16)),
        ("quest_page_scores (1 Triton)",
         lambda: quest_page_scores(q, pages.page_min, pages.page_max, lens, 16, True)),
        ("quest_select_pages (1 Triton)", lambda: quest_select_pages(scores, lens, 16, quest.page_budget)),
        ("quest_select_pages + reads (1 Triton)",
         lambda: quest_select_pages(scores, lens, 16, quest.page_budget, return_reads=True)),
        ("Quest.measure (torch)", lambda: quest.measure(index, lens)),
        ("quest_decode (split + combine)", lambda: quest_decode(q, layer.keys, layer.values, lens, index, 16)),
        ("Quest.select_pages (scores+select+measure)", lambda: quest.select_pages(q, pages, lens)),
        ("Quest.decode (whole)", lambda: quest.decode(q, layer.keys, layer.values, lens, pages)),
    ]
    for label, fn in rows:
        fn()
        print(f"  {label:48s} host/total us per call: {host_cost(fn)}", flush=True)
    print(f"  launches in Quest.decode: {launches(lambda: quest.decode(q, layer.keys, layer.values, lens, pages))}")


if __name__ == "__main__":
    main()
