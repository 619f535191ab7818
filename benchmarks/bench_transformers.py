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
            snapkv / ada: 1 - kept / prompt; quest acts at decode, so its prefill is dense by design).

Methods run with the reference defaults (`sparse_attn/methods/*.py`). Random weights give near-uniform attention,
so coverage-based budgets (flexprefill) keep more than on a trained model: read the sparsity column with the time.

Usage: python benchmarks/bench_transformers.py [--lengths 32768 131072] [--layers 2] [--methods sdpa flexprefill]
       [--json out.json]     (--smoke: tiny shapes on the CPU, no timing; checks the script itself)
"""
import argparse
import json
import platform
import time

import torch
import transformers
import triton
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from triton.testing import do_bench

import sparse_attn

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


def run_one(model, name: str, ids: torch.Tensor, weights_bytes: int) -> dict:
    use_method(model, name)

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
        if DEVICE != "cuda":  # --smoke: the plumbing only
            return {"method": name, "ms": float("nan"), "peak_gib": 0.0, "cache_gib": 0.0,
                    "sparsity": sparse_attn.get_stats(model)["sparsity"] if name != "sdpa" else 0.0,
                    "last_logits": last_logits}
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        out, cache = prefill()
        _sync()
        peak = torch.cuda.max_memory_allocated() - weights_bytes
        stored = cache_bytes(cache)
        stats = sparse_attn.get_stats(model) if name != "sdpa" else {"sparsity": 0.0}
        del out, cache
        torch.cuda.empty_cache()
        # warm-up 1 ms / rep 1 ms: do_bench's own estimate (5 runs) + 1 warm-up + 1 timed run; the forward takes
        # 0.1-2 s, so its noise is far below the differences reported
        ms = do_bench(lambda: prefill(), warmup=1, rep=1, return_mode="median")
    return {"method": name, "ms": ms, "peak_gib": peak / GIB, "cache_gib": stored / GIB,
            "sparsity": stats["sparsity"], "last_logits": last_logits}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--json", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, no timing")
    args = parser.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        args.lengths = [300]

    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (smoke)"
    print(f"# {device}, torch {torch.__version__}, transformers {transformers.__version__}, triton "
          f"{triton.__version__}, python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# Llama-3.1-8B attention shapes, {args.layers} layers, bf16, B=1, random weights")
    model = build_model(args.layers, max(args.lengths) + 16, smoke=args.smoke)
    weights_bytes = torch.cuda.memory_allocated() if DEVICE == "cuda" else 0
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
            if "ms" in row:
                logits = row.pop("last_logits")
                if name == "sdpa":
                    reference, ref_logits = row, logits
                if reference is not None:
                    row["cos_vs_sdpa"] = torch.nn.functional.cosine_similarity(logits, ref_logits, dim=0).item()
                    row["x_sdpa"] = reference["ms"] / row["ms"]
            rows.append(row)
            print(json.dumps(row), flush=True)

    print()
    print(f"| length | method | ms | x sdpa | peak GiB (over weights) | KV cache GiB | sparsity | cos(last logits) vs sdpa |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['length']} | {row['method']} | {row['error']} | | | | | |")
            continue
        print(f"| {row['length']} | {row['method']} | {row['ms']:.1f} | {row.get('x_sdpa', float('nan')):.2f} | "
              f"{row['peak_gib']:.2f} | {row['cache_gib']:.3f} | {row['sparsity']:.3f} | "
              f"{row.get('cos_vs_sdpa', float('nan')):.4f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
