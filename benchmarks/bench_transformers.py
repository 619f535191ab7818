"""Transformers end to end: prefill time and peak memory per method vs attn_implementation="sdpa".

A random-weight Llama with Llama-3.1-8B shapes (hidden 4096, 32 query heads, 8 KV heads, head_dim 128, MLP 14336,
rope_theta 500000, bf16) but only `--layers` decoder layers, one prompt of random token ids per length (B=1). For
every attn_implementation it runs the prompt through `model(input_ids, past_key_values=<the cache generate would
use>, logits_to_keep=1)` under `torch.no_grad()` (a prefill as generate runs it: KV cache filled, for
snapkv / ada_snapkv compressed, for quest page metadata built) and reports:

  ms        median of `triton.testing.do_bench` (whole forward: embeddings, attention, MLP, norms, cache work);
  x sdpa    sdpa time / method time, same length, same run;
            (kernel-only attention timings are in bench_prefill.py; this table is what a user of generate sees);
  peak GiB  `torch.cuda.max_memory_allocated` during one forward, minus the weights (activations + cache +
            method temporaries);
  cache GiB bytes of the KV cache after the forward;
  sparsity  `sparse_attn.get_stats(model)["sparsity"]` of that forward (prefill methods: of the prompt's attention;
            snapkv / ada: 1 - kept / prompt; quest acts at decode, so its prefill is dense by design);
  decode    ms per new token over the prompt's cache (do_bench, the cache grows one token per call); for sdpa also
            without SDPA's cuDNN backend, which costs ~20 ms of host time per call over a growing cache on
            torch 2.11 (the dense decode our integration runs, and the fair baseline for the methods' decode).

Methods run with the reference defaults (`sparse_attn/methods/*.py`). Random weights give near-uniform attention,
so coverage-based budgets (flexprefill) keep more than on a trained model: read the sparsity column with the time.

Usage: python benchmarks/bench_transformers.py [--lengths 32768 131072] [--layers 2] [--methods sdpa flexprefill]
       [--json out.json]     (--smoke: tiny shapes on the CPU, no timing; checks the script itself)
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
import triton
from torch.nn.attention import sdpa_kernel
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from triton.testing import do_bench

import sparse_attn
from sparse_attn.integrations.transformers.layout import DECODE_BACKENDS

METHODS = ["sdpa", "dense", "vertical_slash", "block_sparse", "flexprefill", "snapkv", "ada_snapkv", "quest"]
GIB = 1024**3
DEVICE = "cuda"


def build_model(layers: int, max_len: int, smoke: bool = False) -> LlamaForCausalLM:
    shapes = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=128)
    if smoke:
        shapes = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=64)
    config = LlamaConfig(**shapes, num_hidden_layers=layers, max_position_embeddings=max_len,
                         rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config._attn_implementation = "sdpa"
    return model.eval()


def use_method(model, name: str) -> None:
    model.set_attn_implementation(name)
    for module in model.modules():  # reference defaults: drop parameters an earlier method left in the config
        if getattr(module, "config", None) is not None and hasattr(module.config, "sparse_attn"):
            module.config.sparse_attn = {}
    model.config.sparse_attn = {}


def fresh_cache(model, name: str):
    if name in ("snapkv", "ada_snapkv", "quest"):
        return sparse_attn.make_cache(model)
    return DynamicCache(config=model.config)


def cache_bytes(cache) -> int:
    if hasattr(cache, "stored_bytes"):
        return cache.stored_bytes()
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def run_one(model, name: str, ids: torch.Tensor, weights_bytes: int, params: dict = None,
            decode: bool = True) -> dict:
    use_method(model, name)
    if params:
        sparse_attn.configure(model, **params)

    def prefill():
        cache = fresh_cache(model, name)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out, cache

    with torch.no_grad():
        out, cache = prefill()  # warm-up (Triton compilation) and a finite output
        _sync()
        assert torch.isfinite(out.logits).all(), f"{name}: non-finite logits"
        last_logits = out.logits[0, -1].float()
        del out, cache
        stats = sparse_attn.get_stats(model) if name != "sdpa" else {"sparsity": 0.0}
        row = {"method": name, "sparsity": stats["sparsity"], "last_logits": last_logits}
        if DEVICE != "cuda":  # --smoke: the plumbing only
            return row
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        out, cache = prefill()
        _sync()
        row["peak_gib"] = (torch.cuda.max_memory_allocated() - weights_bytes) / GIB
        row["cache_gib"] = cache_bytes(cache) / GIB
        if decode:  # one new token per call over the prompt's cache (it grows by one token per call, as in generate)
            next_ids = out.logits[:, -1:].argmax(-1)

            def step(cache=cache):
                return model(input_ids=next_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)

            # Timed twice (both reported). Over transformers' DynamicCache the dense decode was bimodal on the H100
            # (2-3 ms or 40-65 ms per token): the cache is re-allocated by torch.cat at every step.
            row["decode_ms_first"] = do_bench(step, warmup=5, rep=40, return_mode="median")
            row["decode_ms"] = do_bench(step, warmup=5, rep=40, return_mode="median")
            if name == "sdpa":
                # transformers' sdpa decode picks SDPA's cuDNN backend, which spent ~20 ms of host time per call
                # over a cache growing every step (benchmarks/RESULTS.md, session 12): the dense decode a user
                # can have, and the fair baseline for the methods' decode, is SDPA without cuDNN (what the
                # integration's own dense decode steps run)
                with sdpa_kernel(DECODE_BACKENDS):
                    row["decode_ms_no_cudnn"] = do_bench(step, warmup=5, rep=40, return_mode="median")
            if name != "sdpa":
                decode_stats = sparse_attn.get_stats(model)["decode"]
                row["decode_sparsity"] = decode_stats["sparsity"] if decode_stats else 0.0
        del out, cache
        torch.cuda.empty_cache()
        # warm-up 1 ms / rep 1 ms: do_bench's own estimate (5 runs) + 1 warm-up + 1 timed run; the forward takes
        # 0.1-2 s, so its noise is far below the differences reported
        row["ms"] = do_bench(lambda: prefill(), warmup=1, rep=1, return_mode="median")
    return row


def full_budget_check(model, weights_bytes: int, length: int = 4096) -> None:
    """Before timing: every method at full budget (tests/method_matrix.py "full") reproduces sdpa's last logits
    at `length` tokens with the GPU kernels (bf16: cosine similarity, not equality)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/method_matrix.py
    from tests.method_matrix import METHODS as MATRIX

    ids = torch.randint(0, model.config.vocab_size, (1, length), device=DEVICE,
                        generator=torch.Generator(device=DEVICE).manual_seed(1))
    reference = run_one(model, "sdpa", ids, weights_bytes, decode=False)["last_logits"]
    for name in METHODS[1:]:
        row = run_one(model, name, ids, weights_bytes, params=MATRIX[name]["full"], decode=False)
        cos = torch.nn.functional.cosine_similarity(row["last_logits"], reference, dim=0).item()
        print(f"# full-budget check {name:15s} L={length}: sparsity {row['sparsity']:.3f}, cos(last logits) vs "
              f"sdpa {cos:.5f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, no timing")
    parser.add_argument("--no-check", action="store_true", help="skip the full-budget check before timing")
    args = parser.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        args.lengths = [300]

    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (smoke)"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {device}, torch {torch.__version__}, transformers {transformers.__version__}, triton "
          f"{triton.__version__}, python {platform.python_version()}, {stamp}")
    print(f"# Llama-3.1-8B attention shapes, {args.layers} layers, bf16, B=1, random weights")
    # room for the decode timing's steps (it appends one token per call, a few hundred over a run): positions stay
    # below max_position_embeddings
    model = build_model(args.layers, max(args.lengths) + 4096, smoke=args.smoke)
    weights_bytes = torch.cuda.memory_allocated() if DEVICE == "cuda" else 0
    if not args.no_check:
        full_budget_check(model, weights_bytes, length=256 if args.smoke else 4096)
    rows = []
    for length in args.lengths:
        ids = torch.randint(0, model.config.vocab_size, (1, length), device=DEVICE,
                            generator=torch.Generator(device=DEVICE).manual_seed(length))
        reference, ref_logits = None, None
        for name in args.methods:
            try:
                row = run_one(model, name, ids, weights_bytes)
            except torch.cuda.OutOfMemoryError as error:
                torch.cuda.empty_cache()
                row = {"method": name, "error": f"OOM: {str(error).splitlines()[0]}"}
            except Exception as error:  # report and go on: one broken method must not hide the others' numbers
                torch.cuda.empty_cache()
                row = {"method": name, "error": f"{type(error).__name__}: {str(error)[:300]}"}
            row["length"] = length
            if "last_logits" in row:
                logits = row.pop("last_logits")
                if name == "sdpa":
                    reference, ref_logits = row, logits
                if reference is not None:
                    row["cos_vs_sdpa"] = torch.nn.functional.cosine_similarity(logits, ref_logits, dim=0).item()
                    if "ms" in row:
                        row["x_sdpa"] = reference["ms"] / row["ms"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:  # after every row: a later crash (e.g. a CUDA fault) keeps what was measured
                with open(args.json, "w") as handle:
                    json.dump(rows, handle, indent=1)

    print()
    print("| length | method | prefill ms | x sdpa | peak GiB over weights | KV cache GiB | sparsity | "
          "decode ms/token | decode ms/token without cuDNN (sdpa) | decode sparsity | cos(last logits) vs sdpa |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for row in rows:
        if "error" in row:
            print(f"| {row['length']} | {row['method']} | {row['error']} | | | | | | | | |")
            continue
        print(f"| {row['length']} | {row['method']} | {row.get('ms', nan):.1f} | {row.get('x_sdpa', nan):.2f} | "
              f"{row.get('peak_gib', nan):.2f} | {row.get('cache_gib', nan):.3f} | {row['sparsity']:.3f} | "
              f"{row.get('decode_ms', nan):.2f} | {row.get('decode_ms_no_cudnn', nan):.2f} | "
              f"{row.get('decode_sparsity', nan):.3f} | "
              f"{row.get('cos_vs_sdpa', nan):.4f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
