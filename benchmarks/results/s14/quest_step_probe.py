"""Session 14, second probe: why a Transformers Quest decode step (2 Llama layers of 8B shape) costs more host time
than the pieces timed alone (call 2: the Quest layer path is ~0.23 ms per layer, yet a whole step is 1.4-3 ms slower
than dense, and a second quest run in the same process was slower than the first).

No profiler runs before the timings (it might leave observers behind). Steps: (1) quest, dense, quest: mean host
ms per chunk of 20 steps, 10 chunks each; (2) one quest and one dense step under torch.cuda sync debug mode "warn",
printing where a device-to-host synchronisation happens; (3) cProfile over 50 steps of each, top functions.

python benchmarks/results/s14/quest_step_probe.py [--batch B] [--length L]
"""
import argparse
import cProfile
import io
import pstats
import sys
import time
import traceback
import warnings

import torch

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, fresh_cache, use_method  # noqa: E402


def prepare(model, name, ids):
    use_method(model, name)
    cache = fresh_cache(model, name)
    with torch.no_grad():
        nxt = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:].argmax(-1)

    def step():
        with torch.no_grad():
            model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)

    for _ in range(20):
        step()
    torch.cuda.synchronize()
    return step


def chunks(step, n=10, size=20):
    means = []
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(size):
            step()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        means.append((round((t1 - t0) / size * 1e3, 2), round((time.perf_counter() - t0) / size * 1e3, 2)))
    return means


def sync_points(step):
    found = []

    def record(message, category, filename, lineno, file=None, line=None):
        found.append(f"{message}\n" + "".join(traceback.format_stack(limit=12)[:-1]))

    old = warnings.showwarning
    warnings.showwarning = record
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    warnings.showwarning = old
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--length", type=int, default=131072)
    args = ap.parse_args()
    model = build_model(2, args.length + 8192)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length), device="cuda")
    tag = f"B={args.batch} L={args.length}"
    for name in ("quest", "dense", "quest"):
        step = prepare(model, name, ids)
        print(f"{name} {tag}: (host ms, total ms) per step, means of 20-step chunks: {chunks(step)}", flush=True)
        del step
        torch.cuda.empty_cache()
    for name in ("quest", "dense"):
        step = prepare(model, name, ids)
        found = sync_points(step)
        print(f"{name}: {len(found)} synchronising calls in one step", flush=True)
        for text in found[:4]:
            print(text, flush=True)
        prof = cProfile.Profile()
        torch.cuda.synchronize()
        prof.enable()
        for _ in range(50):
            step()
        torch.cuda.synchronize()
        prof.disable()
        for key in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(40)
            text = buf.getvalue()
            print(f"==== {name}, 50 decode steps, by {key}\n" + text[max(0, text.find("ncalls") - 200):], flush=True)
        del step
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
