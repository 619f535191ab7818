"""Which method (and which parameters) a model runs: resolution, `configure`, and the string-only route for CLIs.

The method is the model's `attn_implementation` name (e.g. ``"flexprefill"`` or ``"vertical_slash+quest"``).
Its parameters come from, later entries overriding earlier ones:

1. the method's defaults (`sparse_attn/methods/<name>.py`);
2. the environment variable ``SPARSE_ATTN_CONFIG``: a JSON object, or the path of a JSON file, e.g.
   ``SPARSE_ATTN_CONFIG='{"alpha": 0.9, "min_budget": 256}'``. For CLIs that only pass strings
   (``lm_eval --model hf --model_args pretrained=...,attn_implementation=flexprefill``). It may name the method
   (``"method": "flexprefill"``); it must then match the model's attn_implementation;
3. ``model.config.sparse_attn`` (a dict): what `configure(model, ...)` writes; it is saved by `save_pretrained`,
   so a saved model keeps its parameters.

Every source is validated by the method's config class: unknown names and bad values raise `ConfigError`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

from ...config import Composition, ConfigError
from ...registry import build_config, composition_names

ENV_VAR = "SPARSE_ATTN_CONFIG"
CONFIG_ATTR = "sparse_attn"

_env_cache: Dict[str, Dict[str, Any]] = {}


def env_params() -> Dict[str, Any]:
    """Parameters from ``SPARSE_ATTN_CONFIG`` (JSON object or path to a JSON file); ``{}`` when unset."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return {}
    if raw not in _env_cache:
        text = raw
        if not raw.startswith("{"):
            path = Path(raw).expanduser()
            if not path.is_file():
                raise ConfigError(f"{ENV_VAR} must hold a JSON object or the path of a JSON file; got {raw[:200]!r}")
            text = path.read_text()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{ENV_VAR} is not valid JSON ({error}): {text[:200]}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{ENV_VAR} must be a JSON object, got {type(value).__name__}")
        _env_cache[raw] = value
    return dict(_env_cache[raw])


def is_sparse_attn_name(name: Optional[str]) -> bool:
    return isinstance(name, str) and name in composition_names()


def build_for(name: str, config_params: Optional[Dict[str, Any]] = None) -> Composition:
    """The validated `Composition` for attn_implementation `name` with env + config parameters merged."""
    params = env_params()
    params.update(config_params or {})
    if "prefill" in params or "decode" in params:  # nested form: {"prefill": {...}, "decode": {...}}
        composition = build_config(params)
        if composition.name != name:
            raise ConfigError(f"the sparse_attn parameters describe method {composition.name!r} but the model runs "
                              f"attn_implementation={name!r}: make them agree")
        return composition
    method = params.pop("method", None)
    if method is not None and method != name:
        raise ConfigError(f"the sparse_attn parameters name method {method!r} but the model runs "
                          f"attn_implementation={name!r}: load the model with attn_implementation={method!r} or drop "
                          f"'method' from {ENV_VAR} / model.config.{CONFIG_ATTR}")
    return build_config(name, **params)


def resolve(module, name: str) -> Composition:
    """The method an attention module runs, rebuilt only when its name or parameters change (cached on the module)."""
    config_params = getattr(module.config, CONFIG_ATTR, None) or {}
    key = (name, os.environ.get(ENV_VAR, ""), repr(config_params))
    cached = getattr(module, "_sparse_attn_resolved", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    composition = build_for(name, config_params)
    module._sparse_attn_resolved = (key, composition)
    return composition


def model_method_name(model) -> str:
    """The sparse_attn method name of a model (its text decoder's attn_implementation); raises if it is not ours."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    name = getattr(config, "_attn_implementation", None)
    if not is_sparse_attn_name(name):
        raise ConfigError(f"this model runs attn_implementation={name!r}, not a sparse_attn method: load it with "
                          f"from_pretrained(..., attn_implementation=<one of {composition_names()}>) or call "
                          f"sparse_attn.configure(model, method=<name>, ...)")
    return name


def _configs(model) -> list:
    """Every distinct config object the model's attention modules read (composite models have several)."""
    seen, configs = set(), []
    candidates = [model.config] + [getattr(m, "config", None) for m in model.modules()]
    for config in candidates:
        if config is not None and id(config) not in seen and hasattr(config, "_attn_implementation"):
            seen.add(id(config))
            configs.append(config)
    return configs


def configure(model, **params: Any) -> Composition:
    """Set the parameters of the model's sparse method (validated; unknown names raise `ConfigError`).

    ``configure(model, alpha=0.9)`` updates the parameters of the method the model was loaded with;
    ``configure(model, method="snapkv", token_capacity=512)`` also switches the method (through
    `model.set_attn_implementation`) and starts from that method's defaults. Composition parameters may be given
    as ``vertical_slash.vertical_size=...`` when both parts have a parameter of that name (pass them via ``**{}``).
    The parameters are stored in ``model.config.sparse_attn`` (saved with the model) and apply from the next call.
    Returns the resolved `Composition`.
    """
    method = params.pop("method", None)
    if method is not None:
        if not is_sparse_attn_name(method):
            raise ConfigError(f"unknown sparse_attn method {method!r}; valid names: {composition_names()}")
        stored: Dict[str, Any] = {}
        build_for(method, params)  # validate before touching the model
        if model_method_name_or_none(model) != method:
            model.set_attn_implementation(method)
        name = method
    else:
        name = model_method_name(model)
        stored = dict(getattr(model.config, CONFIG_ATTR, None) or {})
    stored.update(params)
    composition = build_for(name, stored)
    for config in _configs(model):
        setattr(config, CONFIG_ATTR, dict(stored))
    return composition


def model_method_name_or_none(model) -> Optional[str]:
    try:
        return model_method_name(model)
    except ConfigError:
        return None


def method_config(model) -> Composition:
    """The `Composition` (method configs with their parameters) the model runs now."""
    name = model_method_name(model)
    return build_for(name, getattr(model.config, CONFIG_ATTR, None) or {})
