"""Automatic cache creation in `generate()` for snapkv / ada_snapkv / quest models.

transformers has no public way to choose the cache class `generate` builds (`cache_implementation` is a closed list,
see ../shared/spec/integration.md section 2.2), so we wrap the private
`GenerationMixin._prepare_cache_for_generation`: it runs unchanged, and when it has just created a plain
`DynamicCache` for a model whose sparse_attn method needs our cache, the fresh cache is swapped for
`sparse_attn.make_cache(model)`. A cache the user passed is never touched.

The transformers version (`SUPPORTED`) and the private signature (`EXPECTED_PARAMETERS`) are checked before
wrapping; if either does not match, the hook is not installed, decoding without an explicit cache raises an error
naming `past_key_values=make_cache(model)`, and `tests/test_transformers_cache.py::test_generate_hook_installed` fails.
"""
from __future__ import annotations

import functools
import inspect

from packaging.version import Version

EXPECTED_PARAMETERS = ["self", "generation_config", "model_kwargs", "generation_mode", "batch_size",
                       "max_cache_length"]
SUPPORTED = (Version("5.16"), Version("6"))  # checked on 5.17 (GPU image) and 5.19 (CPU CI); 5.23 per the notes
_STATUS = {"installed": False, "reason": "not installed yet"}


def hook_status() -> str:
    return "automatic cache creation is active" if _STATUS["installed"] else \
        f"automatic cache creation is OFF: {_STATUS['reason']}"


def is_installed() -> bool:
    return bool(_STATUS["installed"])


def install() -> bool:
    """Wrap `GenerationMixin._prepare_cache_for_generation` once; returns whether the hook is active."""
    import transformers
    from transformers.cache_utils import DynamicCache
    from transformers.generation.utils import GenerationMixin

    original = GenerationMixin._prepare_cache_for_generation
    if getattr(original, "_sparse_attn_hook", False):
        return True
    version = Version(transformers.__version__)
    if not SUPPORTED[0] <= version < SUPPORTED[1]:
        _STATUS.update(installed=False, reason=(
            f"transformers {transformers.__version__} is outside the range the hook was checked on "
            f"[{SUPPORTED[0]}, {SUPPORTED[1]})"))
        return False
    parameters = list(inspect.signature(original).parameters)
    if parameters != EXPECTED_PARAMETERS:
        _STATUS.update(installed=False, reason=(
            f"transformers {transformers.__version__} changed GenerationMixin._prepare_cache_for_generation"
            f"{tuple(parameters)}; expected {tuple(EXPECTED_PARAMETERS)}"))
        return False

    @functools.wraps(original)
    def prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        result = original(self, generation_config, model_kwargs, *args, **kwargs)
        cache = model_kwargs.get("past_key_values")
        if type(cache) is DynamicCache and not getattr(cache, "_is_user_defined", False):
            replacement = _sparse_cache_for(self)
            if replacement is not None:
                model_kwargs["past_key_values"] = replacement
        return result

    prepare_cache_for_generation._sparse_attn_hook = True
    GenerationMixin._prepare_cache_for_generation = prepare_cache_for_generation
    _STATUS.update(installed=True, reason="")
    return True


def _sparse_cache_for(model):
    from .cache import cache_class_for
    from .settings import CONFIG_ATTR, build_for, is_sparse_attn_name

    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    name = getattr(config, "_attn_implementation", None)
    if not is_sparse_attn_name(name):
        return None
    cls = cache_class_for(build_for(name, getattr(config, CONFIG_ATTR, None) or {}))
    return cls(model, method=name) if cls is not None else None
