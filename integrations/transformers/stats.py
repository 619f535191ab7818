"""What the last forward / generate really did, measured from the selections (`sparse_attn.get_stats`).

Each attention module keeps a `LayerStats` (attribute `_sparse_attn_stats`), reset when that layer starts a new
prompt. Recorded tensors stay on the device; `get_stats` turns them into floats (one synchronisation, at the end).

Sparsity definitions (docs/architecture.md "Statistics"):
- prefill methods: `1 - computed causal (q, k) pairs / (L (L + 1) / 2)` per sample and query head, from the index;
- snapkv / ada_snapkv: `1 - kept tokens / prompt tokens` per sample and KV head (what decode reads of the prompt);
- quest: per decode step `1 - tokens read / context length` per sample, from the pages actually selected.
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, List, Optional

import torch


class LayerStats:
    """Statistics of one attention layer for the current prompt."""

    def __init__(self, layer_idx: int):
        self.layer_idx = layer_idx
        self.reset()

    def reset(self, method: str = "", kind: str = "sparse") -> None:
        self.method = method
        self.kind = kind  # "sparse" or "sliding_window" (dense, keeps its window)
        self.prefill: Optional[torch.Tensor] = None  # [B, Hq] sparsity of the prompt's attention
        self.prompt_tokens: Optional[torch.Tensor] = None  # [B]
        self.kv: Optional[torch.Tensor] = None  # [B, Hkv] 1 - kept / prompt tokens
        self.decode_steps: List[torch.Tensor] = []  # each [B, Hsel] (quest) sparsity of one decode step per head
        self.cache_layer = None  # weakref to the sparse cache layer (memory numbers)
        self.notes: List[str] = []

    def record_cache(self, layer) -> None:
        self.cache_layer = weakref.ref(layer)


def layer_stats(module, method: str) -> LayerStats:
    stats = getattr(module, "_sparse_attn_stats", None)
    if stats is None:
        stats = LayerStats(getattr(module, "layer_idx", -1))
        module._sparse_attn_stats = stats
    return stats


def _mean(values: List[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def get_stats(model) -> Dict[str, Any]:
    """What the last forward / generate of `model` did, measured from the selections.

    Returns a dict:
        method: the composition name; sparsity: float, the mean over the layers the method acts on of that phase's
        sparsity (prefill methods and compositions: prefill; snapkv / ada_snapkv: `1 - kept / prompt`; quest: mean
        over decode steps); per_layer: that value per layer (sliding-window layers, which stay dense, count 0.0);
        sparse_layers / dense_layers: layer indices; prefill: {"sparsity", "per_layer"} or None;
        compression: {"sparsity", "kept_ratio", "per_layer", "cache_bytes", "dense_cache_bytes", "memory_saved"}
        or None; decode: {"sparsity", "per_layer", "steps", "per_step"} or None (quest: measured at every decode
        step from the pages read); cache: {"layer_type", "cache_bytes", "dense_cache_bytes", "memory_saved"} of
        sparse_attn's cache (quest keeps the full cache plus page metadata: memory_saved is False by design), None
        when transformers' own cache was used; notes: why something did not act.
    Raises RuntimeError when the model has not run a sparse_attn forward yet.
    """
    if type(model).__module__.startswith("vllm."):  # a vllm.LLM: its statistics live in vLLM's worker processes
        from ..vllm import get_stats as vllm_get_stats

        return vllm_get_stats(model)
    records = sorted((m._sparse_attn_stats for m in model.modules() if hasattr(m, "_sparse_attn_stats")),
                     key=lambda s: s.layer_idx)
    if not records:
        raise RuntimeError("get_stats: no sparse_attn forward recorded for this model yet (is it loaded with a "
                           "sparse_attn attn_implementation, and has it run?)")
    method = next((r.method for r in records if r.method), "")
    sparse = [r for r in records if r.kind == "sparse"]
    prefill = _phase(records, lambda r: r.prefill.float().mean().item() if r.prefill is not None else None)
    compression = _compression(records)
    decode = _phase(records, lambda r: torch.stack(r.decode_steps).float().mean().item() if r.decode_steps else None)
    if decode is not None:
        steps = [torch.stack(r.decode_steps).float().flatten(1).mean(dim=1) for r in sparse if r.decode_steps]
        decode["steps"] = max(len(r.decode_steps) for r in records)
        decode["per_step"] = torch.stack(steps).mean(dim=0).tolist() if len({len(s) for s in steps}) == 1 else None
    primary = prefill or compression or decode
    notes = sorted({note for r in records for note in r.notes})
    return {
        "method": method,
        "sparsity": primary["sparsity"] if primary else 0.0,
        "per_layer": primary["per_layer"] if primary else [0.0 for _ in records],
        "sparse_layers": [r.layer_idx for r in sparse],
        "dense_layers": [r.layer_idx for r in records if r.kind != "sparse"],
        "prefill": prefill,
        "compression": compression,
        "decode": decode,
        "cache": _cache(records),
        "notes": notes,
    }


def _phase(records: List[LayerStats], value_of) -> Optional[Dict[str, Any]]:
    per_layer = [value_of(r) if r.kind == "sparse" else 0.0 for r in records]
    measured = [v for r, v in zip(records, per_layer) if r.kind == "sparse" and v is not None]
    if not measured:
        return None
    per_layer = [0.0 if v is None else v for v in per_layer]
    return {"sparsity": sum(measured) / len(measured), "per_layer": per_layer}


def _cache(records: List[LayerStats]) -> Optional[Dict[str, Any]]:
    """Memory of sparse_attn's cache layers now (None when the forward ran over transformers' own cache)."""
    layers = [r.cache_layer() for r in records if r.cache_layer is not None]
    layers = [layer for layer in layers if layer is not None]
    if not layers:
        return None
    stored = sum(layer.stored_bytes() for layer in layers)
    dense = sum(layer.dense_bytes() for layer in layers)
    return {"layer_type": type(layers[0]).__name__, "cache_bytes": stored, "dense_cache_bytes": dense,
            "memory_saved": stored < dense}


def _compression(records: List[LayerStats]) -> Optional[Dict[str, Any]]:
    phase = _phase(records, lambda r: r.kv.float().mean().item() if r.kv is not None else None)
    if phase is None:
        return None
    cache = _cache(records) or {"cache_bytes": 0, "dense_cache_bytes": 0, "memory_saved": False}
    phase.update(kept_ratio=1.0 - phase["sparsity"], cache_bytes=cache["cache_bytes"],
                 dense_cache_bytes=cache["dense_cache_bytes"], memory_saved=cache["memory_saved"])
    return phase
