"""Achieved sparsity inside vLLM processes: recorded by the backend, read back with `get_stats(llm)`.

Each worker process (one per tensor-parallel rank) accumulates, per layer and phase, the sum and count of the
sparsity values its methods measured from their own selections:

- ``prefill``     : per (request, query head) of every full prefill, `1 - computed pairs / causal pairs`;
- ``compression`` : per (request, KV head) of every compacted prompt, `1 - kept / prompt length`;
- ``decode``      : per (request, decode step) of Quest, `1 - tokens read / context length`.

Sums stay on the device (no host sync per step). `snapshot()` reads them; `merge()` combines ranks (heads are
split evenly across ranks, so a count-weighted mean is the global mean). Optionally each worker also writes its
snapshot to `<stats_dir>/stats-rank<R>-pid<P>.json` (from a background thread, at most `FILE_INTERVAL_S` seconds
behind, and at exit), which is
how stats leave worker processes when `collective_rpc` cannot carry a function (multi-process engines without
VLLM_ALLOW_INSECURE_SERIALIZATION=1, or `lm_eval --model vllm`).
"""
from __future__ import annotations

import atexit
import json
import os
import threading
import time
from typing import Any, Dict, Iterable, List, Optional

import torch

PHASES = ("prefill", "compression", "decode")
FILE_INTERVAL_S = 0.25

_sums: Dict[int, Dict[str, torch.Tensor]] = {}
_counts: Dict[int, Dict[str, int]] = {}
_info: Dict[str, Any] = {"method": None, "rank": 0}
# Batches seen by the first sparse layer, by the kinds of rows they held (proves mixed batches / chunks happened).
_batches: Dict[str, int] = {}
_file: Dict[str, Any] = {"dir": None, "dirty": False}
_lock = threading.Lock()


def configure(method: str, rank: int, stats_dir: Optional[str]) -> None:
    _info["method"] = method
    _info["rank"] = rank
    if stats_dir and _file["dir"] is None:
        os.makedirs(stats_dir, exist_ok=True)
        _file["dir"] = stats_dir
        atexit.register(write_file)
        threading.Thread(target=_writer, name="sparse_attn-stats", daemon=True).start()


def _writer() -> None:
    """Background writer: the file is at most FILE_INTERVAL_S behind the engine (no work on the forward path)."""
    while True:
        time.sleep(FILE_INTERVAL_S)
        if _file["dirty"]:
            _file["dirty"] = False
            try:
                write_file()
            except Exception:  # a full disk must not take the engine down; the next write retries
                _file["dirty"] = True


def record(layer: int, phase: str, values: torch.Tensor) -> None:
    """Add measured sparsity values (any shape) of one layer and phase."""
    if values.numel() == 0:
        return
    total = values.detach().float().sum()
    with _lock:
        layer_sums = _sums.setdefault(layer, {})
        layer_sums[phase] = layer_sums[phase] + total if phase in layer_sums else total
        layer_counts = _counts.setdefault(layer, {})
        layer_counts[phase] = layer_counts.get(phase, 0) + values.numel()
    _file["dirty"] = True


_dense_layers: set = set()


def note_dense_layer(layer: int) -> None:
    """A layer the method does not act on (sliding window): reported under "dense_layers"."""
    _dense_layers.add(layer)


def record_batch(has_prefill: bool, has_extend: bool, has_decode: bool) -> None:
    """Count one engine step by row kinds: "prefill", "extend" (prompt chunk after a context), "decode", "mixed"."""
    for kind, present in (("prefill", has_prefill), ("extend", has_extend), ("decode", has_decode)):
        if present:
            _batches[kind] = _batches.get(kind, 0) + 1
    if has_decode and (has_prefill or has_extend):
        _batches["mixed"] = _batches.get("mixed", 0) + 1
    _file["dirty"] = True


def reset() -> None:
    with _lock:
        _sums.clear()
        _counts.clear()
        _batches.clear()
    _file["dirty"] = True


def snapshot() -> Dict[str, Any]:
    """This process's raw sums and counts: `{"method", "rank", "pid", "layers": {layer: {phase: [sum, n]}}}`."""
    with _lock:
        items = [(layer, dict(_sums[layer]), dict(_counts[layer])) for layer in sorted(_sums)]
        batches = dict(_batches)
    layers = {str(layer): {phase: [float(sums[phase]), counts[phase]] for phase in sums}
              for layer, sums, counts in items}
    return {"method": _info["method"], "rank": _info["rank"], "pid": os.getpid(), "layers": layers,
            "batches": batches, "dense_layers": sorted(_dense_layers)}


def subtract(snapshots: List[Dict[str, Any]], baseline: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Snapshots minus an earlier reading of the same processes (a driver-side reset for stats files)."""
    before = {snap["pid"]: snap for snap in baseline}
    result = []
    for snap in snapshots:
        old = before.get(snap["pid"])
        if old is None:
            result.append(snap)
            continue
        layers = {}
        for layer, phases in snap["layers"].items():
            for phase, (total, count) in phases.items():
                old_total, old_count = old["layers"].get(layer, {}).get(phase, (0.0, 0))
                if count - old_count > 0:
                    layers.setdefault(layer, {})[phase] = [total - old_total, count - old_count]
        batches = {k: v - old.get("batches", {}).get(k, 0) for k, v in snap.get("batches", {}).items()}
        result.append({**snap, "layers": layers, "batches": {k: v for k, v in batches.items() if v > 0}})
    return result


def merge(snapshots: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    """Combine per-process snapshots into the user-facing summary (same keys as the Transformers `get_stats`).

    Returns ``{"method", "sparsity", "per_layer", "prefill", "compression", "decode", "counts", "batches",
    "processes"}``: ``prefill`` / ``compression`` / ``decode`` are ``{"sparsity", "per_layer"}`` (mean over
    layers; ``decode`` adds ``"steps"``, selections per layer) or None when the method does not act on that
    phase; ``sparsity`` / ``per_layer`` repeat the first phase present in that order (0.0 for dense);
    ``counts`` the values averaged per phase; ``batches`` engine steps by row kinds ("prefill", "extend" = prompt
    chunk after a context, "decode", "mixed" = decodes with prompt rows); ``sparse_layers`` / ``dense_layers``
    (sliding-window layers stay dense); ``processes`` rank and pid of each worker.
    """
    snapshots = list(snapshots)
    totals: Dict[int, Dict[str, List[float]]] = {}
    for snap in snapshots:
        for layer, phases in snap["layers"].items():
            for phase, (total, count) in phases.items():
                entry = totals.setdefault(int(layer), {}).setdefault(phase, [0.0, 0])
                entry[0] += total
                entry[1] += count
    layers = sorted(totals)
    summary: Dict[str, Any] = {"method": next((s["method"] for s in snapshots if s["method"]), None)}
    counts = {}
    for phase in PHASES:
        per_layer = [totals[layer][phase][0] / totals[layer][phase][1] if phase in totals[layer] else None
                     for layer in layers]
        counts[phase] = sum(totals[layer][phase][1] for layer in layers if phase in totals[layer])
        present = [v for v in per_layer if v is not None]
        summary[phase] = {"sparsity": sum(present) / len(present), "per_layer": per_layer} if present else None
    if summary["decode"] is not None:
        summary["decode"]["steps"] = counts["decode"] // max(1, len(layers))
    primary = summary["prefill"] or summary["compression"] or summary["decode"]
    summary["sparsity"] = primary["sparsity"] if primary else (0.0 if summary["method"] == "dense" else None)
    summary["per_layer"] = primary["per_layer"] if primary else []
    summary["counts"] = counts
    batches: Dict[str, int] = {}
    for snap in snapshots:  # every rank sees every step: report rank 0's view
        if snap["rank"] == 0:
            for kind, count in snap.get("batches", {}).items():
                batches[kind] = batches.get(kind, 0) + count
    summary["batches"] = batches
    summary["dense_layers"] = sorted({layer for snap in snapshots for layer in snap.get("dense_layers", [])})
    summary["sparse_layers"] = layers
    summary["processes"] = [{"rank": s["rank"], "pid": s["pid"]} for s in snapshots]
    return summary


def write_file() -> None:
    directory = _file["dir"]
    if directory is None:
        return
    snap = snapshot()
    path = os.path.join(directory, f"stats-rank{snap['rank']}-pid{snap['pid']}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(snap, handle)
    os.replace(tmp, path)


def read_files(directory: str) -> List[Dict[str, Any]]:
    """The snapshots every worker wrote to `directory` (one file per process)."""
    snapshots = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("stats-") and name.endswith(".json"):
            with open(os.path.join(directory, name)) as handle:
                snapshots.append(json.load(handle))
    return snapshots
