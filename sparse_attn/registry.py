"""Method registry: name -> config class, and builders from names, dicts and strings.

Adding a method: write `sparse_attn/methods/<name>.py`, add one line to `_BUILTIN` below, add its entry to the
test matrix (`tests/method_matrix.py`).
"""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Type, Union

from .config import Composition, ConfigError, MethodConfig
from .methods import AdaSnapKV, BlockSparse, Dense, FlexPrefill, Quest, SnapKV, VerticalSlash

_REGISTRY: Dict[str, Type[MethodConfig]] = {}
_BUILTIN = (Dense, VerticalSlash, BlockSparse, FlexPrefill, SnapKV, AdaSnapKV, Quest)


def register_method(cls: Type[MethodConfig]) -> Type[MethodConfig]:
    """Register a method config class under `cls.name` (usable as a decorator)."""
    if not cls.name or cls.phase not in ("dense", "prefill", "compression", "decode"):
        raise ConfigError(f"{cls.__name__} needs a `name` and a `phase` class attribute")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ConfigError(f"method name {cls.name!r} is already registered by {existing.__name__}")
    _REGISTRY[cls.name] = cls
    return cls


for _cls in _BUILTIN:
    register_method(_cls)


def list_methods() -> list[str]:
    """Names of every registered method, e.g. ``['dense', 'vertical_slash', ..., 'quest']``."""
    return list(_REGISTRY)


def get_method_class(name: str) -> Type[MethodConfig]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; available methods: {list_methods()}") from None


def build_method(name: str, **params: Any) -> MethodConfig:
    """One method config from its name and parameter overrides (validated; unknown names raise)."""
    return get_method_class(name).from_params(**params)


def composition_names() -> list[str]:
    """Every valid composition name: each method alone and each ``<prefill>+<decode>`` pair."""
    prefill = [n for n, c in _REGISTRY.items() if c.phase == "prefill"]
    decode = [n for n, c in _REGISTRY.items() if c.phase in ("compression", "decode")]
    return list(_REGISTRY) + [f"{p}+{d}" for p in prefill for d in decode]


SpecLike = Union[str, Mapping[str, Any], MethodConfig, Composition, None]


def build_config(spec: SpecLike = None, **params: Any) -> Composition:
    """Build a validated `Composition` from any user-facing form.

    Accepted forms::

        build_config("quest", token_budget=2048)
        build_config("vertical_slash+quest", vertical_size=256, token_budget=2048)   # params routed to their part
        build_config({"method": "flexprefill", "alpha": 0.9})                       # flat dict (vLLM, env JSON)
        build_config({"prefill": {"method": "block_sparse"}, "decode": {"method": "quest", "page_size": 32}})
        build_config('{"method": "snapkv", "token_capacity": 512}')                # JSON string
        build_config(Quest(token_budget=512))
    """
    if spec is None:
        spec = "dense"
    if isinstance(spec, Composition):
        return spec.replace(**params) if params else spec
    if isinstance(spec, MethodConfig):
        return _single(spec).replace(**params) if params else _single(spec)
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            try:
                spec = json.loads(text)
            except json.JSONDecodeError as error:
                raise ConfigError(f"method spec is not valid JSON ({error}): {text[:200]}") from None
        else:
            return _from_name(text).replace(**params) if params else _from_name(text)
    if isinstance(spec, Mapping):
        spec = dict(spec)
        if "prefill" in spec or "decode" in spec:
            extra = sorted(set(spec) - {"prefill", "decode"})
            if extra:
                raise ConfigError(f"a nested method spec takes only 'prefill' and 'decode' keys, got also {extra}")
            prefill = _nested_part(spec.get("prefill"))
            decode = _nested_part(spec.get("decode"))
            composition = Composition(prefill=prefill, decode=decode)
            return composition.replace(**params) if params else composition
        name = spec.pop("method", spec.pop("name", "dense"))
        return _from_name(name).replace(**{**spec, **params})
    raise ConfigError(f"cannot build a method from {type(spec).__name__}: give a name, a dict or a config")


def _single(method: MethodConfig) -> Composition:
    if method.phase == "dense":
        return Composition()
    if method.phase == "prefill":
        return Composition(prefill=method)
    return Composition(decode=method)


def _from_name(name: str) -> Composition:
    parts = [p.strip() for p in name.split("+") if p.strip()]
    if not parts or len(parts) > 2:
        raise ConfigError(f"method name {name!r} must be one method or '<prefill>+<decode>'; "
                          f"valid names: {composition_names()}")
    methods = [get_method_class(p)() for p in parts]
    if len(methods) == 1:
        return _single(methods[0])
    if any(m.phase == "dense" for m in methods):
        raise ConfigError(f"{name!r}: 'dense' does not compose; use the other method alone")
    return Composition(prefill=methods[0], decode=methods[1])


def _nested_part(part: Optional[Mapping[str, Any]]) -> Optional[MethodConfig]:
    if part is None:
        return None
    if isinstance(part, MethodConfig):
        return part
    part = dict(part)
    name = part.pop("method", part.pop("name", None))
    if name is None:
        raise ConfigError(f"nested method spec {part} needs a 'method' key")
    return build_method(name, **part)
