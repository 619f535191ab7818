"""`sparse-attn report RESULTS_DIR`: tables (markdown + CSV) and plots (PNG + SVG) from the per-sample records.

One summary row per (model, length, task, method configuration): samples, mean score with its standard error,
mean achieved sparsity, mean output tokens, and the paper's costs (prefill FLOPs, decode bytes; `sparse_attn.cost`)
at the measured densities. Plots, per (model, length):

- ``compression_<task>``: accuracy vs compression ratio, one line per method, dense baseline (dashed line and
  the 1x point);
- ``compression_all_tasks``: the same as small multiples, one panel per task plus their average;
- ``cost``: average accuracy vs prefill FLOPs (prefill methods) and vs decode bytes per token (decode methods),
  dense on both panels;
- ``<model>_lengths`` (sweeps over several lengths): score vs length per task and on average, one line per method
  configuration, dense dashed.

The compression ratio of a point is the sweep's target ratio when the budget came from one, else the achieved
1 / (1 - sparsity).
"""
from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config import ConfigError
from .store import RecordStore

COLUMNS = ["model", "length", "task", "method", "label", "ratio", "compression", "params", "samples", "score",
           "stderr", "sparsity", "output_tokens", "input_tokens", "prefill_flops", "decode_bytes_per_token",
           "delta_vs_dense", "delta_ci_low", "delta_ci_high", "p_worse", "retained"]
#: one-sided significance level of "worse than dense" (paired sign-flip test over the same documents)
ALPHA = 0.05


# -- aggregation --------------------------------------------------------------------------------------------------
def summarize(results_dir: str | Path) -> List[Dict[str, Any]]:
    """Summary rows (see module doc), sorted by model, length, task, method, ratio."""
    store = RecordStore(results_dir)
    jobs = {job["id"]: job for job in store.jobs()}
    buckets: Dict[tuple, List[Dict[str, Any]]] = defaultdict(list)
    for record in store.all_records():
        buckets[(record["job_id"], record["group"])].append(record)
    shapes: Dict[str, Any] = {}
    rows = []
    for (job_id, task), records in buckets.items():
        job = jobs.get(job_id) or records[0]["config"]
        row = _row(job, task, records, shapes)
        row["_docs"] = {(r["task"], r["doc_id"]): r["score"] for r in records if r["score"] is not None}
        rows.append(row)
    _compare_with_dense(rows)
    rows.sort(key=lambda r: (r["model"], r["length"], r["task"], r["method"] != "dense", r["label"],
                             r["compression"] or 0))
    return rows


def paired_test(sparse: List[float], dense: List[float], iterations: int = 10000, seed: int = 0):
    """Paired comparison of per-document scores (same documents, same order).

    Returns (mean difference sparse - dense, bootstrap 95% CI low, high, one-sided p-value that sparse is worse),
    the p-value from a sign-flip permutation test of the mean difference (exact under the null of exchangeable
    signs; fine for 0/1 and fractional scores). CI and p are None with fewer than 2 documents.
    """
    import numpy as np

    diff = np.asarray(sparse, dtype=float) - np.asarray(dense, dtype=float)
    mean = float(diff.mean()) if diff.size else None
    if diff.size < 2:
        return mean, None, None, None
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, diff.size, size=(iterations, diff.size))].mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    flips = rng.choice([-1.0, 1.0], size=(iterations, diff.size)) * np.abs(diff)
    p_worse = (np.sum(flips.mean(axis=1) <= mean + 1e-12) + 1) / (iterations + 1)
    return mean, float(low), float(high), float(p_worse)


def _compare_with_dense(rows: List[Dict[str, Any]]) -> None:
    """Fill delta_vs_dense / CI / p_worse / retained for each sparse row from the dense row of its (model,
    length, task), paired over the documents both have."""
    dense = {(r["model"], r["length"], r["task"]): r for r in rows if r["method"] == "dense"}
    for row in rows:
        row.update(delta_vs_dense=None, delta_ci_low=None, delta_ci_high=None, p_worse=None, retained=None)
        base = dense.get((row["model"], row["length"], row["task"]))
        if row["method"] == "dense" or base is None:
            continue
        shared = sorted(set(row["_docs"]) & set(base["_docs"]))
        if not shared:
            continue
        mean, low, high, p = paired_test([row["_docs"][k] for k in shared], [base["_docs"][k] for k in shared])
        row.update(delta_vs_dense=mean, delta_ci_low=low, delta_ci_high=high, p_worse=p,
                   retained=None if p is None else bool(p >= ALPHA))


def tolerable_compression(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The paper's "maximum compression with performance retention": per (model, length, task, method line) the
    largest ratio r such that every tested ratio <= r is not significantly worse than dense (p_worse >= ALPHA)."""
    out = []
    for (model, length, task, label), cells in _by([r for r in rows if r["method"] != "dense"],
                                                    "model", "length", "task", "label").items():
        cells = sorted((c for c in cells if c["compression"] is not None and c["retained"] is not None),
                       key=lambda c: c["compression"])
        best = None
        for cell in cells:
            if not cell["retained"]:
                break
            best = cell["compression"]
        if cells:
            out.append({"model": model, "length": length, "task": task, "label": label,
                        "max_retained_compression": best, "tested": [c["compression"] for c in cells]})
    return out


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _row(job: Dict[str, Any], task: str, records: List[Dict[str, Any]], shapes: Dict[str, Any]) -> Dict[str, Any]:
    scores = [r["score"] for r in records if r["score"] is not None]
    n = len(scores)
    mean = sum(scores) / n if n else None
    stderr = None
    if n > 1:
        var = sum((s - mean) ** 2 for s in scores) / (n - 1)
        stderr = math.sqrt(var / n)
    sparsity = _mean(r.get("sparsity") for r in records)
    ratio = job.get("ratio")
    compression = 1.0 if job["method"] == "dense" else ratio
    if compression is None and sparsity is not None and sparsity < 1:
        compression = 1.0 / (1.0 - sparsity)
    row = {
        "model": job["model"]["name"], "length": job["length"], "task": task, "method": job["method"],
        "label": job.get("label") or job["method"], "ratio": ratio, "compression": compression,
        "params": json.dumps(job["params"], sort_keys=True), "samples": len(records), "score": mean,
        "stderr": stderr, "sparsity": sparsity, "output_tokens": _mean(r.get("output_tokens") for r in records),
        "input_tokens": _mean(r.get("input_tokens") for r in records),
    }
    row.update(_costs(job, records, row, shapes))
    return row


def _costs(job: Dict[str, Any], records: List[Dict[str, Any]], row: Dict[str, Any],
           shapes: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """The paper's costs at the measured densities; None when the model's shape or a density is unknown."""
    from ..cost import ModelShape, method_cost
    from ..registry import build_config

    path = job["model"]["path"]
    if path not in shapes:
        try:
            shapes[path] = ModelShape.from_pretrained(path)
        except Exception:  # config not readable here (e.g. report on another machine): no cost columns
            shapes[path] = None
    shape = shapes[path]
    empty = {"prefill_flops": None, "decode_bytes_per_token": None}
    if shape is None:
        return empty
    composition = build_config(job["method"], **job["params"])
    measured = _mean(r.get("sparsity") for r in records)
    prefill_stats = _mean(phase_sparsity(r.get("stats"), "prefill") for r in records)
    decode_stats = _mean(phase_sparsity(r.get("stats"), "decode") for r in records)
    prefill_density = decode_density = None
    if composition.prefill is not None:
        source = prefill_stats if prefill_stats is not None else (measured if composition.decode is None else None)
        prefill_density = None if source is None else 1.0 - source
    if composition.decode is not None:
        source = decode_stats if decode_stats is not None else (measured if composition.prefill is None else None)
        decode_density = None if source is None else 1.0 - source
    length = int(round(row["input_tokens"] or job["length"]))
    try:
        cost = method_cost(composition, shape, length, output_tokens=int(round(row["output_tokens"] or 1)),
                           prefill_density=prefill_density, decode_density=decode_density)
    except ConfigError:
        return empty
    return {"prefill_flops": cost["prefill_flops"], "decode_bytes_per_token": cost["decode_bytes_per_token"]}


def phase_sparsity(stats: Optional[Dict[str, Any]], phase: str) -> Optional[float]:
    """A phase's measured sparsity from a record's stats: Transformers' nested {"prefill": {"sparsity"}},
    {"decode"|"compression": {...}} or vLLM's flat "prefill_sparsity" / "decode_sparsity"."""
    stats = stats or {}
    names = ("prefill",) if phase == "prefill" else ("decode", "compression")
    for name in names:
        part = stats.get(name)
        if isinstance(part, dict) and part.get("sparsity") is not None:
            return part["sparsity"]
        if stats.get(f"{name}_sparsity") is not None:
            return stats[f"{name}_sparsity"]
    return None


# -- tables -------------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.3f}".rstrip("0").rstrip(".") if not value.is_integer() else f"{int(value)}"
    return str(value)


def _small_multiples(plt, panels: List[str], title: str, legend_room: float, draw_panel):
    """One figure with a panel per name (3 per row, shared y axis), one legend on the right, unused axes hidden."""
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.4 * nrows), squeeze=False, sharey=True)
    for ax, panel in zip(axes.flat, panels):
        draw_panel(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, legend_room, 1))
    return fig


def write_tables(rows: List[Dict[str, Any]], out: Path) -> List[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in COLUMNS} for row in rows)
    lines = ["# sparse-attn results", ""]
    for (model, length), group in _by(rows, "model", "length").items():
        tasks = sorted({r["task"] for r in group})
        lines += [f"## {model}, {length} tokens", "", "Mean score (standard error) per task; * = significantly worse "
                  f"than dense (paired, one-sided p < {ALPHA}); sparsity is the achieved mean.", ""]
        header = ["method", "compression", "sparsity"] + tasks + ["average"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for (label, compression), cells in _by(group, "label", "compression").items():
            by_task = {c["task"]: c for c in cells}
            scores = [by_task[t]["score"] for t in tasks if t in by_task and by_task[t]["score"] is not None]
            entries = []
            for t in tasks:
                cell = by_task.get(t)
                mark = "*" if cell is not None and cell.get("retained") is False else ""
                entries.append("-" if cell is None else f"{_fmt(cell['score'])}{mark} ({_fmt(cell['stderr'])})")
            sparsity = _mean(c["sparsity"] for c in cells)
            lines.append("| " + " | ".join([label, _fmt(compression) + ("x" if compression else ""),
                                             _fmt(sparsity)] + entries + [_fmt(_mean(scores))]) + " |")
        lines.append("")
    tolerance = tolerable_compression(rows)
    if tolerance:
        lines += ["## Tolerable compression", "", f"Largest tested ratio up to which the method is not significantly "
                  f"worse than dense (paired sign-flip test over the same documents, one-sided p < {ALPHA}); "
                  "'-' = already worse at the lowest ratio.", "",
                  "| model | length | task | method | max retained compression | tested |", "|---|---|---|---|---|---|"]
        lines += [f"| {t['model']} | {t['length']} | {t['task']} | {t['label']} | "
                  f"{_fmt(t['max_retained_compression'])} | {', '.join(_fmt(x) for x in t['tested'])} |"
                  for t in tolerance]
        lines.append("")
    lines += ["## All rows", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(row.get(k)) for k in COLUMNS) + " |" for row in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return [out / "summary.csv", out / "summary.md"]


def _by(rows: List[Dict[str, Any]], *keys: str) -> Dict[tuple, List[Dict[str, Any]]]:
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


# -- plots --------------------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))


def _lines(rows: List[Dict[str, Any]]):
    """({label: sorted [(x, score, stderr)]} for sparse methods, dense row or None)."""
    dense = next((r for r in rows if r["method"] == "dense" and r["score"] is not None), None)
    lines: Dict[str, List[tuple]] = defaultdict(list)
    for r in rows:
        if r["method"] != "dense" and r["score"] is not None and r["compression"] is not None:
            lines[r["label"]].append((r["compression"], r["score"], r["stderr"] or 0.0))
    return {k: sorted(v) for k, v in sorted(lines.items())}, dense


def _draw_compression(ax, rows: List[Dict[str, Any]], title: str) -> None:
    lines, dense = _lines(rows)
    for label, points in lines.items():
        xs, ys, es = zip(*points)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    if dense is not None:
        ax.axhline(dense["score"], color="black", linestyle="--", linewidth=1, label="dense")
        ax.plot([1.0], [dense["score"]], marker="s", color="black")
    ax.set_xscale("log", base=2)
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.set_xlabel("compression ratio (1 / density)")
    ax.set_ylabel("score")
    _score_limits(ax, rows)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


def _score_limits(ax, rows: List[Dict[str, Any]]) -> None:
    """Scores in [0, 1] (every sf_* metric) get the full [0, 1] axis, so flat lines are not blown up."""
    scores = [r["score"] for r in rows if r["score"] is not None]
    if scores and 0.0 <= min(scores) and max(scores) <= 1.0:
        ax.set_ylim(-0.03, 1.03)


def _average_rows(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Average over tasks per (label, compression) (only configurations that ran every task)."""
    tasks = {r["task"] for r in rows}
    out = []
    for (method, label, compression), cells in _by(rows, "method", "label", "compression").items():
        if {c["task"] for c in cells} != tasks or any(c["score"] is None for c in cells):
            continue
        merged = dict(cells[0])
        merged.update(task="average", score=_mean(c["score"] for c in cells), stderr=None,
                      prefill_flops=_mean(c["prefill_flops"] for c in cells),
                      decode_bytes_per_token=_mean(c["decode_bytes_per_token"] for c in cells))
        out.append(merged)
    return out


def write_plots(rows: List[Dict[str, Any]], out: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []

    def save(fig, stem: str, layout: bool = True) -> None:
        if layout:
            fig.tight_layout()
        for ext in ("png", "svg"):
            path = out / f"{stem}.{ext}"
            fig.savefig(path, dpi=120)
            written.append(path)
        plt.close(fig)

    for (model, length), group in _by(rows, "model", "length").items():
        prefix = f"{_slug(model)}_L{length}"
        tasks = sorted({r["task"] for r in group})
        for task in tasks:
            fig, ax = plt.subplots(figsize=(6, 4))
            _draw_compression(ax, [r for r in group if r["task"] == task], f"{task} ({model}, {length} tokens)")
            ax.legend(fontsize=8)
            save(fig, f"{prefix}_compression_{_slug(task)}")

        average = _average_rows(group)
        fig = _small_multiples(
            plt, tasks + ["average"], f"{model}, {length} tokens: score vs compression", 0.88,
            lambda ax, panel: _draw_compression(
                ax, average if panel == "average" else [r for r in group if r["task"] == panel], panel))
        save(fig, f"{prefix}_compression_all_tasks", layout=False)

        if any(r["prefill_flops"] is not None for r in average):
            fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
            for ax, column, phase in ((axes[0], "prefill_flops", ("prefill",)),
                                      (axes[1], "decode_bytes_per_token", ("compression", "decode"))):
                _draw_cost(ax, average, column, phase)
            axes[0].set_ylabel("average score")
            fig.suptitle(f"{model}, {length} tokens: score vs cost (paper's cost model)")
            save(fig, f"{prefix}_cost")
    for (model,), group in _by(rows, "model").items():
        lengths = sorted({r["length"] for r in group})
        if len(lengths) < 2:
            continue
        tasks = sorted({r["task"] for r in group})
        averages = [a for length in lengths for a in _average_rows([r for r in group if r["length"] == length])]
        fig = _small_multiples(
            plt, tasks + ["average"], f"{model}: score vs length", 0.85,
            lambda ax, panel: _draw_lengths(
                ax, averages if panel == "average" else [r for r in group if r["task"] == panel], panel))
        save(fig, f"{_slug(model)}_lengths", layout=False)
    return written


def _draw_lengths(ax, rows: List[Dict[str, Any]], title: str) -> None:
    """Score vs prompt length, one line per method configuration (label at a ratio), dense in black."""
    from matplotlib.ticker import FuncFormatter

    for (label, ratio), cells in _by([r for r in rows if r["score"] is not None], "label", "ratio").items():
        points = sorted((c["length"], c["score"]) for c in cells)
        xs, ys = zip(*points)
        dense = cells[0]["method"] == "dense"
        name = label if ratio is None else f"{label} {ratio:g}x"
        style = dict(color="black", linestyle="--", marker="s") if dense else dict(marker="o")
        ax.plot(xs, ys, label=name, **style)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1024:g}K" if x >= 1024 else f"{x:g}"))
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _score_limits(ax, rows)


def _draw_cost(ax, rows: List[Dict[str, Any]], column: str, phases: tuple) -> None:
    from ..registry import build_config

    def phase_of(row):
        composition = build_config(row["method"])
        if composition.prefill is not None and composition.decode is None:
            return "prefill"
        if composition.decode is not None and composition.prefill is None:
            return composition.decode.phase
        return "both" if composition.methods else "dense"

    for label, cells in _by([r for r in rows if r[column] is not None], "label").items():
        phase = phase_of(cells[0])
        if phase not in phases and phase not in ("dense", "both"):
            continue
        points = sorted((c[column], c["score"]) for c in cells)
        xs, ys = zip(*points)
        style = dict(marker="s", color="black", linestyle="none") if phase == "dense" else dict(marker="o")
        ax.plot(xs, ys, label=label[0] if isinstance(label, tuple) else label, **style)
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    _score_limits(ax, rows)
    ax.set_xlabel("prefill FLOPs (paper's model)" if column == "prefill_flops" else
                  "decode bytes per token (paper's model)")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no method of this phase", ha="center", va="center", transform=ax.transAxes)


def provenance_section(results_dir: str | Path) -> str:
    """Markdown list of the distinct environments the records were produced in (versions, commit, device)."""
    seen: Dict[str, int] = {}
    for record in RecordStore(results_dir).all_records():
        prov = record.get("provenance") or {}
        versions = ", ".join(f"{k} {v}" for k, v in sorted((prov.get("versions") or {}).items()))
        key = f"{prov.get('device')}; sparse-attn commit {prov.get('git_commit')}; {versions}"
        seen[key] = seen.get(key, 0) + 1
    lines = ["", "## Provenance", "", "Records per environment (every record also stores its full job config):", ""]
    lines += [f"- {count} records: {key}" for key, count in sorted(seen.items())]
    return "\n".join(lines) + "\n"


def write_report(results_dir: str | Path, out: Optional[str | Path] = None) -> Dict[str, Any]:
    """Summaries, tables and plots of a results folder; returns {"rows": [...], "files": [...]}."""
    results_dir = Path(results_dir)
    if not (results_dir / "records").is_dir():
        raise ConfigError(f"{results_dir} has no records/ folder: is it the output of `sparse-attn sweep`?")
    out = Path(out) if out else results_dir / "report"
    rows = summarize(results_dir)
    if not rows:
        raise ConfigError(f"{results_dir} has no finished records yet")
    files = write_tables(rows, out) + write_plots(rows, out)
    with open(out / "summary.md", "a") as handle:
        handle.write(provenance_section(results_dir))
    return {"rows": rows, "files": files}
