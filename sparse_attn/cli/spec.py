"""Sweep configuration: the YAML schema, its validation (before any model loads) and its expansion into jobs.

A job is one (model, method configuration, length): it runs every task of the sweep on `samples` documents each,
through lm-eval, and appends one record per finished (task, document). Its id is a hash of everything that changes
the results (model, backend, full method config, length, seed, generation settings), so a rerun finds its records.
Every error names the offending field, e.g. ``methods[1].ratios[0]``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..compression import PAPER_BLOCK_SPARSE_RATIOS, PAPER_RATIOS, params_for_ratio
from ..config import ConfigError
from ..registry import build_config

TOP_LEVEL_KEYS = {
    "output", "backend", "models", "methods", "tasks", "lengths", "samples", "seed", "baseline", "generation",
    "batch_size", "device", "parallel", "include_path", "apply_chat_template", "name",
}
METHOD_KEYS = {"method", "params", "ratios", "grid", "label"}
MODEL_KEYS = {"path", "name", "model_args", "tp"}
BACKENDS = ("hf", "vllm")


class SweepConfigError(ConfigError):
    """A sweep configuration is invalid; the message starts with the field path."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.field = where


@dataclass
class ModelSpec:
    path: str
    name: str
    model_args: Dict[str, Any] = field(default_factory=dict)
    tp: int = 1


@dataclass
class Job:
    """One (model, method configuration, length); all tasks of the sweep run inside it."""

    model: ModelSpec
    backend: str
    method: str                     # composition name, e.g. "vertical_slash+quest"
    params: Dict[str, Any]          # full flat parameter dict (defaults included), `build_config(method, **params)`
    ratio: Optional[float]          # target compression ratio when the budget came from one, else None
    label: str                      # legend label of the method line ("quest", "block_sparse c32", ...)
    length: int
    tasks: List[str]
    samples: int
    seed: int
    generation: Dict[str, Any]
    batch_size: int
    device: str
    include_path: List[str]
    apply_chat_template: bool

    @property
    def id(self) -> str:
        """Stable id of what determines the results (not of tasks / samples: those only add records)."""
        key = {"model": self.model.path, "model_args": self.model.model_args, "backend": self.backend,
               "method": self.method, "params": self.params, "length": self.length, "seed": self.seed,
               "generation": self.generation, "apply_chat_template": self.apply_chat_template}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
        ratio = f"-{self.ratio:g}x" if self.ratio else ""
        return f"{self.model.name}-{self.method}{ratio}-L{self.length}-{digest}".replace("+", "_").replace("/", "_")

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["id"] = self.id
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Job":
        data = {k: v for k, v in data.items() if k != "id"}
        data["model"] = ModelSpec(**data["model"])
        return cls(**data)

    def composition(self):
        return build_config(self.method, **self.params)


@dataclass
class Sweep:
    output: Path
    backend: str
    jobs: List[Job]
    parallel: Dict[str, Any]
    raw: Dict[str, Any]


# -- loading ----------------------------------------------------------------------------------------------------
def load_sweep(path: str | os.PathLike, check_tasks: bool = True, overrides: Optional[Dict[str, Any]] = None) -> Sweep:
    """Read and validate a sweep YAML; raises `SweepConfigError` naming the field before anything heavy runs."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SweepConfigError("CONFIG", f"{path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepConfigError("CONFIG", f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise SweepConfigError("CONFIG", f"{path} must hold a mapping of sweep fields")
    raw = {**raw, **(overrides or {})}
    return build_sweep(raw, base_dir=path.parent, check_tasks=check_tasks)


def build_sweep(raw: Dict[str, Any], base_dir: Path = Path("."), check_tasks: bool = True) -> Sweep:
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise SweepConfigError(unknown[0], f"unknown field; valid fields are {sorted(TOP_LEVEL_KEYS)}")
    for required in ("output", "models", "methods", "tasks", "lengths"):
        if required not in raw:
            raise SweepConfigError(required, "is required")

    backend = raw.get("backend", "hf")
    if backend not in BACKENDS:
        raise SweepConfigError("backend", f"{backend!r} is not one of {list(BACKENDS)}")
    output = Path(raw["output"])
    if not output.is_absolute():
        output = (base_dir / output).resolve()
    lengths = _int_list(raw["lengths"], "lengths", minimum=1)
    samples = _positive_int(raw.get("samples", 100), "samples")
    seed = _int(raw.get("seed", 43), "seed")
    batch_size = _positive_int(raw.get("batch_size", 1), "batch_size")
    generation = raw.get("generation") or {}
    if not isinstance(generation, dict):
        raise SweepConfigError("generation", "must be a mapping of lm-eval generation kwargs (e.g. max_gen_toks)")
    include_path = [str((base_dir / p).resolve()) for p in _str_list(raw.get("include_path") or [], "include_path")]
    tasks = _str_list(raw["tasks"], "tasks")
    if not tasks:
        raise SweepConfigError("tasks", "needs at least one task")
    models = [_model(entry, f"models[{i}]", base_dir) for i, entry in enumerate(_list(raw["models"], "models"))]
    device = str(raw.get("device", "auto"))
    if device not in ("auto", "cpu", "cuda"):
        raise SweepConfigError("device", f"{device!r} is not one of auto, cpu, cuda")
    parallel = _parallel(raw.get("parallel") or {})

    methods = _list(raw["methods"], "methods")
    if not methods:
        raise SweepConfigError("methods", "needs at least one method")
    entries = [(f"methods[{i}]", entry) for i, entry in enumerate(methods)]
    has_dense = any(m == "dense" or (isinstance(m, dict) and m.get("method") == "dense") for m in methods)
    if raw.get("baseline", True) and not has_dense:
        entries.insert(0, ("baseline", {"method": "dense"}))  # the dense line on every plot

    if check_tasks:
        check_task_names(tasks, include_path)

    jobs: List[Job] = []
    seen = set()
    for model in models:  # model, then length, then method: jobs sharing a model and length share task data
        for length in lengths:
            for where, entry in entries:
                for method, params, ratio, label in _method_points(entry, where, length):
                    job = Job(model=model, backend=backend, method=method, params=params, ratio=ratio, label=label,
                              length=length, tasks=tasks, samples=samples, seed=seed, generation=generation,
                              batch_size=batch_size, device=device, include_path=include_path,
                              apply_chat_template=bool(raw.get("apply_chat_template", False)))
                    if job.id not in seen:
                        seen.add(job.id)
                        jobs.append(job)
    return Sweep(output=output, backend=backend, jobs=jobs, parallel=parallel, raw=raw)


# -- field validators -------------------------------------------------------------------------------------------
def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise SweepConfigError(where, f"must be a list, got {type(value).__name__}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SweepConfigError(where, f"must be an integer, got {value!r}")
    return value


def _positive_int(value: Any, where: str) -> int:
    if _int(value, where) < 1:
        raise SweepConfigError(where, f"must be at least 1, got {value}")
    return value


def _int_list(value: Any, where: str, minimum: int) -> List[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    items = _list(value, where)
    if not items:
        raise SweepConfigError(where, "needs at least one value")
    for j, item in enumerate(items):
        if _int(item, f"{where}[{j}]") < minimum:
            raise SweepConfigError(f"{where}[{j}]", f"must be at least {minimum}, got {item}")
    return list(items)


def _str_list(value: Any, where: str) -> List[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    items = _list(value, where)
    for j, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise SweepConfigError(f"{where}[{j}]", f"must be a non-empty string, got {item!r}")
    return items


def _model(entry: Any, where: str, base_dir: Path) -> ModelSpec:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict):
        raise SweepConfigError(where, "must be a path or a mapping with 'path'")
    unknown = sorted(set(entry) - MODEL_KEYS)
    if unknown:
        raise SweepConfigError(f"{where}.{unknown[0]}", f"unknown field; valid fields are {sorted(MODEL_KEYS)}")
    if "path" not in entry:
        raise SweepConfigError(f"{where}.path", "is required")
    path = resolve_model_path(str(entry["path"]), f"{where}.path", base_dir)
    model_args = entry.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise SweepConfigError(f"{where}.model_args", "must be a mapping of lm-eval model arguments")
    reserved = sorted({"pretrained", "attn_implementation", "additional_config"} & set(model_args))
    if reserved:
        raise SweepConfigError(f"{where}.model_args.{reserved[0]}", "is set by sparse-attn from the job; remove it")
    tp = _positive_int(entry.get("tp", 1), f"{where}.tp")
    name = str(entry.get("name") or Path(path).name or path)
    return ModelSpec(path=path, name=name, model_args=dict(model_args), tp=tp)


def resolve_model_path(path: str, where: str, base_dir: Path = Path(".")) -> str:
    """A local model folder (with config.json), or a Hub id already in the local Hugging Face cache."""
    local = Path(os.path.expanduser(path))
    if not local.is_absolute():
        candidate = (base_dir / local)
        local = candidate if candidate.exists() else local
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise SweepConfigError(where, f"{local} has no config.json: is it a model folder?")
        return str(local.resolve())
    if path.count("/") == 1 and not path.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(path, "config.json"), str):
                return path
        except Exception:  # hub client missing or unusable id: fall through to the error
            pass
    raise SweepConfigError(where, f"model {path!r} does not exist (no such folder, not in the Hugging Face cache)")


def _parallel(value: Any) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise SweepConfigError("parallel", "must be a mapping like {gpus: auto}")
    unknown = sorted(set(value) - {"gpus"})
    if unknown:
        raise SweepConfigError(f"parallel.{unknown[0]}", "unknown field; valid fields are ['gpus']")
    gpus = value.get("gpus", "auto")
    if gpus != "auto" and not (isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 0) and not (
            isinstance(gpus, list) and all(isinstance(g, int) for g in gpus)):
        raise SweepConfigError("parallel.gpus", f"must be 'auto', a count or a list of GPU ids, got {gpus!r}")
    return {"gpus": gpus}


def _method_points(entry: Any, where: str, length: int):
    """Yield (method name, full params, ratio or None, label) for one `methods[i]` entry at one length."""
    if isinstance(entry, str):
        entry = {"method": entry}
    if not isinstance(entry, dict):
        raise SweepConfigError(where, "must be a method name or a mapping with 'method'")
    unknown = sorted(set(entry) - METHOD_KEYS)
    if unknown:
        raise SweepConfigError(f"{where}.{unknown[0]}", f"unknown field; valid fields are {sorted(METHOD_KEYS)}")
    name = entry.get("method")
    if not isinstance(name, str):
        raise SweepConfigError(f"{where}.method", "is required (a method or '<prefill>+<decode>' name)")
    try:
        base = build_config(name)
    except ConfigError as error:
        raise SweepConfigError(f"{where}.method", str(error)) from None
    params = entry.get("params") or {}
    if not isinstance(params, dict):
        raise SweepConfigError(f"{where}.params", "must be a mapping of method parameters")
    try:
        base = base.replace(**params) if params else base
    except ConfigError as error:
        raise SweepConfigError(f"{where}.params", str(error)) from None
    label = str(entry.get("label") or name)
    ratios, grid = entry.get("ratios"), entry.get("grid")
    if ratios is not None and grid is not None:
        raise SweepConfigError(where, "give either 'ratios' or 'grid', not both")

    if ratios is not None:
        if ratios == "paper":
            ratios = list(PAPER_BLOCK_SPARSE_RATIOS if name == "block_sparse" else PAPER_RATIOS)
            if name == "flexprefill":
                ratios = ratios[:7]
        ratios = _list(ratios, f"{where}.ratios")
        for j, ratio in enumerate(ratios):
            try:
                chosen = params_for_ratio(name, ratio, length, **params)
            except ConfigError as error:
                raise SweepConfigError(f"{where}.ratios[{j}]", f"at length {length}: {error}") from None
            yield name, flat_params(build_config(name, **chosen)), float(ratio), label
        return

    points = [{}]
    if grid is not None:
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise SweepConfigError(f"{where}.grid", "must map parameter names to non-empty lists of values")
        import itertools

        keys = list(grid)
        points = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    for point in points:
        try:
            composition = base.replace(**point) if point else base
        except ConfigError as error:
            raise SweepConfigError(f"{where}.grid", str(error)) from None
        check_budget_fits(composition, length, where)
        yield name, flat_params(composition), None, label


def flat_params(composition) -> Dict[str, Any]:
    """`Composition.to_dict()` without the 'method' key (the params `build_config(name, **params)` takes)."""
    return {k: v for k, v in composition.to_dict().items() if k != "method"}


def check_budget_fits(composition, length: int, where: str) -> None:
    """Explicit budgets must be possible and must leave something out at `length` (else the run is dense)."""
    from ..compression import analytic_density

    for method in composition.methods:
        density = analytic_density(method, length)
        if method.name in ("snapkv", "ada_snapkv") and method.local_window + method.prefix_tokens >= length:
            raise SweepConfigError(where, f"{method.name} always keeps local_window + prefix_tokens = "
                                          f"{method.local_window + method.prefix_tokens} tokens, the whole "
                                          f"{length}-token prompt: lower them or raise the length")
        if method.name == "vertical_slash" and min(method.vertical_size, method.slash_size) >= length:
            raise SweepConfigError(where, f"vertical_slash keeps all {length} columns and diagonals (vertical_size="
                                          f"{method.vertical_size}, slash_size={method.slash_size}): the run would "
                                          f"be dense; lower them or use a ratio")
        if method.name == "flexprefill" and method.min_budget >= length:
            raise SweepConfigError(where, f"flexprefill.min_budget={method.min_budget} keeps every token at length "
                                          f"{length} (the run would be dense): lower min_budget")
        if density is not None and density >= 1.0:
            budget = {"quest": "token_budget", "snapkv": "token_capacity", "ada_snapkv": "token_capacity",
                      "block_sparse": "top_chunks"}.get(method.name, "budget")
            raise SweepConfigError(where, f"{method.name}.{budget} keeps every token at length {length} (the run "
                                          f"would be dense): lower {budget} or use a ratio")


def check_task_names(tasks: List[str], include_path: List[str]) -> None:
    """Every task must be known to lm-eval (its index only: nothing is generated or loaded here)."""
    known = _known_tasks(tuple(include_path))
    for j, task in enumerate(tasks):
        if task not in known:
            ours = sorted(t for t in known if t.startswith("sf_"))
            raise SweepConfigError(f"tasks[{j}]", f"unknown lm-eval task {task!r}; sparse-attn tasks: {ours}")


@functools.lru_cache(maxsize=8)
def _known_tasks(include_path: tuple) -> frozenset:
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager(include_path=list(include_path) or None).all_tasks)
