"""Session 14: whole Transformers decode steps (2 Llama layers of 8B shape), dense vs Quest as shipped vs Quest as it
was before session 14 ("legacy": separate K/V index writes, metadata fold and `lens += 1`, then `Quest.measure` in
torch after the selection), interleaved in chunks of 20 steps on one process so that the host's speed drift (2x
between calls and within one, calls 1-3) hits all three alike. Prints the chunk means and their medians.

The legacy path is patched in by this script (the shipped code has only the new one); both update the same Quest
cache identically, so the chunks alternate on one cache.

Ran on commit 1285dbf (calls 1-4). From commit 07a6c0a the Quest cache layer no longer writes the token in
`_append` (the attention's `decode_step` does, as a CUDA graph), so the legacy patch below no longer applies: check
out 1285dbf to rerun this script as it ran.

python benchmarks/results/s14/quest_step_interleaved.py [--batch B] [--length L] [--rounds R]
"""
import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
sys.path.insert(0, "benchmarks/results/s14")
from bench_transformers import build_model, fresh_cache, use_method  # noqa: E402
from quest_host_probe import use_path  # noqa: E402  (the legacy patch)


def prefill(model, name, ids):
    use_method(model, name)
    cache = fresh_cache(model, name)
    with torch.no_grad():
        nxt = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)
    return cache, nxt


def chunk(model, name, cache, nxt, size=20):
    use_method(model, name)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(size):
            model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / size * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--length", type=int, default=131072)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    model = build_model(2, args.length + 8192)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length), device="cuda")
    dense_cache, dense_next = prefill(model, "dense", ids)
    quest_cache, quest_next = prefill(model, "quest", ids)
    runs = {"dense": [], "quest": [], "quest-legacy": []}
    for label in runs:  # warm-up (compiles, first cache growth)
        use_path(label == "quest-legacy")
        cache, nxt = (dense_cache, dense_next) if label == "dense" else (quest_cache, quest_next)
        chunk(model, label.split("-")[0], cache, nxt)
    for _ in range(args.rounds):
        for label in runs:
            use_path(label == "quest-legacy")
            cache, nxt = (dense_cache, dense_next) if label == "dense" else (quest_cache, quest_next)
            runs[label].append(round(chunk(model, label.split("-")[0], cache, nxt), 3))
    use_path(False)
    tag = f"B={args.batch} L={args.length}"
    for label, values in runs.items():
        print(f"{label} {tag}: ms per step, 20-step chunk means {values}; median {statistics.median(values):.3f}")
    med = {label: statistics.median(values) for label, values in runs.items()}
    print(f"{tag}: median ratios quest / dense {med['quest'] / med['dense']:.3f}, legacy / dense "
          f"{med['quest-legacy'] / med['dense']:.3f}, quest / legacy {med['quest'] / med['quest-legacy']:.3f}")


if __name__ == "__main__":
    main()
