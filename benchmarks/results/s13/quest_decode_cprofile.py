"""Session 13: Python-level host time of a Transformers Quest decode step (2 Llama layers of 8B shape, 64K prompt,
B = 1): cProfile over 20 decode steps after warm-up (the CUDA profiler of quest_decode_profile.py sees only the
ATen ops), for dense and quest; top functions by own time and by cumulative time.

python benchmarks/results/s13/quest_decode_cprofile.py
"""
import cProfile
import io
import pstats
import sys

import torch

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, fresh_cache, use_method  # noqa: E402

L = 65536


def main():
    model = build_model(2, L + 4096)
    ids = torch.randint(0, model.config.vocab_size, (1, L), device="cuda")
    for name in ("dense", "quest"):
        use_method(model, name)
        with torch.no_grad():
            cache = fresh_cache(model, name)
            nxt = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:]
            nxt = nxt.argmax(-1)
            for _ in range(5):
                model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(20):
                model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
            prof.disable()
        for key in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(key).print_stats(35)
            text = buf.getvalue()
            print(f"==== {name}, 20 decode steps, by {key}\n" + text[max(0, text.find("ncalls") - 200):], flush=True)
        cache = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
