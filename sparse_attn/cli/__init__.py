"""The `sparse-attn` command: eval, sweep (resumable, parallel), report, and helpers.

    sparse-attn methods                                   # methods, phases, parameters and defaults
    sparse-attn ratio quest 10 16384                      # a compression ratio -> the method's parameters
    sparse-attn cost --model qwen2.5-7b --method quest --ratio 10 --length 131072 --output-tokens 256
    sparse-attn eval --model DIR --method quest --ratio 10 --tasks sf_ruler_niah --lengths 16384 --output runs/q
    sparse-attn sweep examples/sweep_paper_16k.yaml       # the grid; rerun to resume
    sparse-attn report runs/paper16k                      # tables (md, csv) and plots (png, svg)

See docs/cli.md for the sweep file schema and the results folder layout.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from ..config import ConfigError


def _value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _pairs(items: Optional[List[str]], flag: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} expects NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _value(value)
    return out


def _csv(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparse-attn", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("methods", help="list methods, their phase, parameters and defaults")

    ratio = sub.add_parser("ratio", help="parameters giving a method a compression ratio at a length")
    ratio.add_argument("method")
    ratio.add_argument("ratio", type=float)
    ratio.add_argument("length", type=int)
    ratio.add_argument("--param", action="append", metavar="NAME=VALUE", help="fixed non-budget parameter")

    co = sub.add_parser("cost", help="the paper's cost model for one method configuration and length")
    co.add_argument("--model", required=True, help="local model folder (reads config.json) or one of "
                                                   "qwen2.5-7b, qwen2.5-14b, qwen2.5-32b, qwen2.5-72b")
    co.add_argument("--method", default="dense")
    co.add_argument("--param", action="append", metavar="NAME=VALUE")
    co.add_argument("--ratio", type=float, help="target compression ratio instead of budget parameters")
    co.add_argument("--length", type=int, required=True)
    co.add_argument("--output-tokens", type=int, default=1)
    co.add_argument("--batch", type=int, default=1)
    co.add_argument("--prefill-density", type=float, help="measured 1 - sparsity (vertical_slash, flexprefill)")
    co.add_argument("--decode-density", type=float)

    ev = sub.add_parser("eval", help="evaluate one model with one method configuration through lm-eval")
    ev.add_argument("--model", required=True, help="local model folder (or a Hub id in the local cache)")
    ev.add_argument("--method", default="dense", help="method or '<prefill>+<decode>' name. Default: dense")
    ev.add_argument("--param", action="append", metavar="NAME=VALUE", help="method parameter (repeatable)")
    ev.add_argument("--ratio", type=float, action="append",
                    help="target compression ratio (repeatable): the budget is derived per length")
    ev.add_argument("--tasks", required=True, type=_csv, help="comma-separated lm-eval tasks (sf_*)")
    ev.add_argument("--lengths", required=True, type=lambda s: [int(x) for x in _csv(s)])
    ev.add_argument("--samples", type=int, default=100)
    ev.add_argument("--seed", type=int, default=43)
    ev.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    ev.add_argument("--model-arg", action="append", metavar="NAME=VALUE",
                    help="extra lm-eval model argument, e.g. dtype=bfloat16 or max_model_len=70000")
    ev.add_argument("--gen", action="append", metavar="NAME=VALUE", help="generation kwarg, e.g. max_gen_toks=64")
    ev.add_argument("--tp", type=int, default=1, help="tensor-parallel size (vllm)")
    ev.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ev.add_argument("--include-path", action="append", help="extra lm-eval task folder")
    ev.add_argument("--apply-chat-template", action="store_true")
    ev.add_argument("--output", required=True, help="results folder (rerun to resume)")
    ev.add_argument("--dry-run", action="store_true", help="validate and list the jobs; run nothing")
    ev.add_argument("--no-progress", action="store_true")

    sw = sub.add_parser("sweep", help="run a sweep file (resumes; one job per GPU in parallel)")
    sw.add_argument("config", help="sweep YAML (see docs/cli.md)")
    sw.add_argument("--output", help="override the file's output folder")
    sw.add_argument("--dry-run", action="store_true", help="validate and list the jobs; run nothing")
    sw.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    sw.add_argument("--no-progress", action="store_true")

    rp = sub.add_parser("report", help="tables and plots of a results folder")
    rp.add_argument("results_dir")
    rp.add_argument("--out", help="report folder. Default: RESULTS_DIR/report")

    wk = sub.add_parser("worker", help=argparse.SUPPRESS)
    wk.add_argument("output")
    wk.add_argument("job_id")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except ConfigError as error:  # configuration mistakes: one line naming the field, no traceback
        print(f"sparse-attn {args.command}: error: {error}", file=sys.stderr)
        return 2


def cmd_methods(args) -> int:
    from ..compression import has_ratio_rule
    from ..registry import get_method_class, list_methods

    for name in list_methods():
        cls = get_method_class(name)
        defaults = ", ".join(f"{k}={v}" for k, v in cls.defaults().items()) or "-"
        rule = "ratio" if has_ratio_rule(name) else "-"
        print(f"{name:16s} {cls.phase:12s} {rule:6s} {defaults}")
    print("\nCompose a prefill method with a compression/decode method as '<prefill>+<decode>'.")
    return 0


def cmd_ratio(args) -> int:
    from ..compression import params_for_ratio

    print(json.dumps(params_for_ratio(args.method, args.ratio, args.length, **_pairs(args.param, "--param"))))
    return 0


def cmd_cost(args) -> int:
    from ..compression import config_for_ratio
    from ..cost import PAPER_MODELS, ModelShape, attention_share, method_cost
    from ..registry import build_config

    if args.model in PAPER_MODELS:
        shape = PAPER_MODELS[args.model]
    else:
        from .spec import resolve_model_path

        shape = ModelShape.from_pretrained(resolve_model_path(args.model, "--model"))
    params = _pairs(args.param, "--param")
    if args.ratio is not None:
        composition = config_for_ratio(args.method, args.ratio, args.length, **params)
    else:
        composition = build_config(args.method, **params)
    cost = method_cost(composition, shape, args.length, output_tokens=args.output_tokens, batch=args.batch,
                       prefill_density=args.prefill_density, decode_density=args.decode_density)
    dense = method_cost("dense", shape, args.length, output_tokens=args.output_tokens, batch=args.batch)
    cost.update(method=composition.to_dict(), model=shape.to_dict(),
                prefill_speedup=dense["prefill_flops"] / cost["prefill_flops"],
                decode_speedup=dense["decode_bytes_per_token"] / cost["decode_bytes_per_token"],
                dense_attention_share=attention_share(shape, args.length))
    print(json.dumps(cost, indent=2))
    return 0


def cmd_eval(args) -> int:
    method: Dict[str, Any] = {"method": args.method}
    params = _pairs(args.param, "--param")
    if params:
        method["params"] = params
    if args.ratio:
        method["ratios"] = args.ratio
    model: Dict[str, Any] = {"path": args.model, "tp": args.tp}
    if args.model_arg:
        model["model_args"] = _pairs(args.model_arg, "--model-arg")
    raw = {"output": args.output, "backend": args.backend, "models": [model], "methods": [method],
           "tasks": args.tasks, "lengths": args.lengths, "samples": args.samples, "seed": args.seed,
           "baseline": False, "device": args.device, "generation": _pairs(args.gen, "--gen"),
           "include_path": args.include_path or [], "apply_chat_template": args.apply_chat_template}
    from pathlib import Path

    from .spec import build_sweep

    sweep = build_sweep(raw, base_dir=Path.cwd())
    if args.dry_run:
        return _list_jobs(sweep)
    return _run(sweep, progress=not args.no_progress, report=True)


def cmd_sweep(args) -> int:
    from .spec import load_sweep

    overrides = {"output": args.output} if args.output else None
    sweep = load_sweep(args.config, overrides=overrides)
    if args.dry_run:
        return _list_jobs(sweep)
    return _run(sweep, progress=not args.no_progress, report=not args.no_report)


def _list_jobs(sweep) -> int:
    for job in sweep.jobs:
        print(f"{job.id}\t{job.method}\t{json.dumps(job.params, sort_keys=True)}\tL={job.length}")
    print(f"{len(sweep.jobs)} jobs x {len(sweep.jobs[0].tasks)} tasks x {sweep.jobs[0].samples} samples "
          f"-> {sweep.output}")
    return 0


def _run(sweep, progress: bool, report: bool) -> int:
    from .report import write_report
    from .runner import run_sweep
    from .store import RecordStore

    outcome = run_sweep(sweep, show_progress=progress)
    total = RecordStore(sweep.output).count()
    print(f"recorded {outcome['recorded']} new samples ({total} in {sweep.output})")
    if outcome["failed"]:
        print(f"failed jobs (see {sweep.output}/logs): {outcome['failed']}", file=sys.stderr)
    if report and total:
        files = write_report(sweep.output)["files"]
        print(f"report: {files[1]} and {len(files) - 2} plot files in {files[0].parent}")
    return 1 if outcome["failed"] else 0


def cmd_report(args) -> int:
    from .report import write_report

    result = write_report(args.results_dir, args.out)
    print(f"{len(result['rows'])} rows; wrote {len(result['files'])} files to {result['files'][0].parent}")
    return 0


def cmd_worker(args) -> int:
    from .runner import run_worker

    run_worker(args.output, args.job_id)
    return 0


COMMANDS = {"methods": cmd_methods, "ratio": cmd_ratio, "cost": cmd_cost, "eval": cmd_eval, "sweep": cmd_sweep,
            "report": cmd_report, "worker": cmd_worker}
