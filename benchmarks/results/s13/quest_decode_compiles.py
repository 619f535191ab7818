"""Session 13: Triton compiles during a Transformers Quest decode (2 Llama layers of 8B shape, prompt 65700 tokens,
B = 1, 100 decode steps: pages 4107 -> 4113, every divisibility class of 16 within one power-of-two bucket of the
selection's BLOCK_P): every compile with its step and kernel (Triton's jit_post_compile_hook), and the decode step
wall clock (median and max). With the page-count / score-stride arguments unspecialized (`kernels/quest/triton.py`
GROWING_ARGS) no compile should follow the first step.

python benchmarks/results/s13/quest_decode_compiles.py
"""
import statistics
import sys
import time

import torch
import triton

sys.path.insert(0, "benchmarks")
from bench_transformers import build_model, fresh_cache, use_method  # noqa: E402

L = 65700
step_no = [0]
compiles = []
triton.knobs.runtime.jit_post_compile_hook = lambda **kw: compiles.append((step_no[0], kw["fn"].name))


def main():
    model = build_model(2, L + 4096)
    ids = torch.randint(0, model.config.vocab_size, (1, L), device="cuda")
    use_method(model, "quest")
    with torch.no_grad():
        cache = fresh_cache(model, "quest")
        nxt = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:]
        nxt = nxt.argmax(-1)
        times = []
        for step in range(1, 101):
            step_no[0] = step
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(input_ids=nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
    print(f"compiles (step, kernel): {compiles}", flush=True)
    late = [c for c in compiles if c[0] > 1]
    print(f"compiles after the first decode step: {len(late)}", flush=True)
    print(f"decode step ms: first {times[0]:.1f}, median of 2-100 {statistics.median(times[1:]):.2f}, max of 2-100 "
          f"{max(times[1:]):.1f}", flush=True)


if __name__ == "__main__":
    main()
