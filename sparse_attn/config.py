"""Method configurations: the validated dataclasses every front-end (Transformers, vLLM, CLI) builds from.

A method config is a plain `@dataclass` whose fields are the method's hyper-parameters, with the reference
system's names and defaults so its configs carry over. Validation happens in `__post_init__`; every error names
the parameter and the fix. Class attributes say which phase the method acts on:

- ``"dense"``       : nothing sparse (the baseline);
- ``"prefill"``     : sparse attention while the prompt is processed (vertical_slash, block_sparse, flexprefill);
- ``"compression"`` : KV-cache eviction right after prefill, decode over the kept tokens (snapkv, ada_snapkv);
- ``"decode"``      : sparse attention at each decode step over the full cache (quest).

A prefill method composes with one compression or decode method (`Composition`), e.g. vertical_slash + quest.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Mapping, Optional

PHASES = ("dense", "prefill", "compression", "decode")


class ConfigError(ValueError):
    """A method configuration is invalid; the message names the parameter and the fix."""


@dataclass
class MethodConfig:
    """Base of every method config. Subclasses set `name`, `phase` and `paper` and add fields."""

    name: ClassVar[str] = ""
    phase: ClassVar[str] = "dense"
    paper: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` for invalid values. Subclasses extend it."""

    # -- helpers shared by all configs -------------------------------------------------------------------------
    @classmethod
    def parameter_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> Dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def from_params(cls, **params: Any) -> "MethodConfig":
        """Build from keyword parameters; unknown names raise and list the valid ones."""
        unknown = sorted(set(params) - set(cls.parameter_names()))
        if unknown:
            raise ConfigError(
                f"{cls.name}: unknown parameter(s) {unknown}; valid parameters are {cls.parameter_names() or 'none'}"
            )
        return cls(**params)

    def replace(self, **params: Any) -> "MethodConfig":
        """A validated copy with some parameters changed (unknown names raise)."""
        return type(self).from_params(**{**self.to_dict(), **params})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def label(self) -> str:
        """Short human-readable identifier, e.g. ``quest(token_budget=1024,page_size=16,share_pages=True)``."""
        inner = ",".join(f"{k}={v}" for k, v in self.to_dict().items())
        return f"{self.name}({inner})" if inner else self.name

    # -- validation helpers ------------------------------------------------------------------------------------
    def _require_int(self, field: str, minimum: int, why: str = "") -> None:
        value = getattr(self, field)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.name}.{field} must be an integer, got {value!r}")
        if value < minimum:
            hint = f" ({why})" if why else ""
            raise ConfigError(f"{self.name}.{field}={value} is too small: set it to at least {minimum}{hint}")

    def _require_fraction(self, field: str, low: float = 0.0, high: float = 1.0) -> None:
        value = getattr(self, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
            raise ConfigError(f"{self.name}.{field}={value!r} must be a number in [{low}, {high}]")


@dataclass
class Composition:
    """One prefill method plus one compression or decode method, acting in their own phases.

    `prefill` is None for dense prefill; `decode` is None for dense decode. The composition's `name` is
    ``"<prefill>+<decode>"`` (e.g. ``"vertical_slash+quest"``), or the single method's name.
    """

    prefill: Optional[MethodConfig] = None
    decode: Optional[MethodConfig] = None

    def __post_init__(self) -> None:
        if self.prefill is not None and self.prefill.phase != "prefill":
            raise ConfigError(
                f"'{self.prefill.name}' acts on the {self.prefill.phase} phase and cannot be the prefill part; "
                f"prefill methods are vertical_slash, block_sparse, flexprefill"
            )
        if self.decode is not None and self.decode.phase not in ("compression", "decode"):
            raise ConfigError(
                f"'{self.decode.name}' acts on the {self.decode.phase} phase and cannot be the decode part; "
                f"decode/compression methods are snapkv, ada_snapkv, quest"
            )

    @property
    def name(self) -> str:
        parts = [m.name for m in (self.prefill, self.decode) if m is not None]
        return "+".join(parts) if parts else "dense"

    @property
    def methods(self) -> list[MethodConfig]:
        return [m for m in (self.prefill, self.decode) if m is not None]

    def to_dict(self) -> Dict[str, Any]:
        """Flat, JSON-friendly form accepted back by `sparse_attn.build_config`."""
        out: Dict[str, Any] = {"method": self.name}
        for method in self.methods:
            out.update(method.to_dict())
        return out

    def label(self) -> str:
        return "+".join(m.label() for m in self.methods) or "dense"

    def replace(self, **params: Any) -> "Composition":
        """Route each parameter to the part that owns it (or ``part.param``); unknown names raise."""
        routed: Dict[str, Dict[str, Any]] = {"prefill": {}, "decode": {}}
        for key, value in params.items():
            owners = self._owners_of(key)
            if len(owners) != 1:
                valid = [f"{m.name}.{p}" for m in self.methods for p in m.parameter_names()]
                raise ConfigError(
                    f"{self.name}: parameter {key!r} is unknown"
                    + (" or ambiguous" if owners else "")
                    + f"; valid parameters are {valid or 'none (dense)'}"
                )
            part, param = owners[0]
            routed[part][param] = value
        prefill = self.prefill.replace(**routed["prefill"]) if routed["prefill"] else self.prefill
        decode = self.decode.replace(**routed["decode"]) if routed["decode"] else self.decode
        return Composition(prefill=prefill, decode=decode)

    def _owners_of(self, key: str) -> list[tuple[str, str]]:
        owners = []
        for part in ("prefill", "decode"):
            method = getattr(self, part)
            if method is None:
                continue
            if "." in key:
                prefix, param = key.split(".", 1)
                if prefix == method.name and param in method.parameter_names():
                    owners.append((part, param))
            elif key in method.parameter_names():
                owners.append((part, key))
        return owners


def check_params_mapping(params: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(params, Mapping):
        raise ConfigError(f"method parameters must be a mapping, got {type(params).__name__}")
    return dict(params)
