"""Session 14, last call: whole Transformers decode steps (2 Llama layers of 8B shape), dense vs Quest with its
per-layer CUDA-graph step (the shipped default) vs the same Quest step eager (`QuestCache(model, cuda_graphs=False)`,
the 4-launch step of calls 2-4), interleaved in chunks of 20 steps on one process (three caches, one per path), as
`quest_step_interleaved.py`. Prints chunk means and medians, and the graph counters.

python benchmarks/results/s14/quest_graph_interleaved.py [--batch B] [--length L] [--rounds R]
"""
import argparse
import statistics
import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, use_method  # noqa: E402
from transformers import DynamicCache  # noqa: E402

import sparse_attn  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--length", type=int, default=131072)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    model = build_model(2, args.length + 8192)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length), device="cuda")
    paths = {}
    for label in ("dense", "quest", "quest-eager"):
        name = label.split("-")[0]
        use_method(model, name)
        cache = (DynamicCache(config=model.config) if name == "dense"
                 else sparse_attn.QuestCache(model, cuda_graphs=label == "quest"))
        with torch.no_grad():
            logits = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        paths[label] = (name, cache, logits[:, -1:].argmax(-1))

    def chunk(label, size=20):
        name, cache, nxt = paths[label]
        use_method(model, name)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(size):
                model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / size * 1e3

    for label in paths:  # warm-up: compiles, the first growth, the captures
        chunk(label)
    runs = {label: [] for label in paths}
    for _ in range(args.rounds):
        for label in paths:
            runs[label].append(round(chunk(label), 3))
    tag = f"B={args.batch} L={args.length}"
    for label, values in runs.items():
        print(f"{label} {tag}: ms per step, 20-step chunk means {values}; median {statistics.median(values):.3f}")
    med = {label: statistics.median(values) for label, values in runs.items()}
    print(f"{tag}: median ratios quest (graphs) / dense {med['quest'] / med['dense']:.3f}, eager / dense "
          f"{med['quest-eager'] / med['dense']:.3f}, graphs / eager {med['quest'] / med['quest-eager']:.3f}")
    for layer in paths["quest"][1].layers:
        print(f"  graph layer: captures {layer.step_graph.captures}, replays {layer.step_graph.replays}")


if __name__ == "__main__":
    main()
