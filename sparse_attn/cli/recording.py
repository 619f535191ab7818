"""lm-eval model wrappers that append one record per finished sample, as soon as it is finished.

lm-eval scores a task only after *all* its generations are done; resume at sample granularity needs more: each
wrapper below generates in small chunks (HF: `batch_size` requests per `generate`, 1 by default, so `get_stats`
is that sample's; vLLM: chunks of `chunk_size` requests), scores each output at once with the task's own
filters and `process_results` (exactly what lm-eval does afterwards), reads the achieved sparsity, and hands a
record to the `Recorder`, which writes it durably. lm-eval then aggregates as usual (its results JSON is kept next to ours).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Dict, List, Optional

from lm_eval.models.huggingface import HFLM


class Recorder:
    """Turns (request, generation, stats) into a record and writes it; shared by the model wrappers.

    tasks: {leaf task name: lm-eval Task}; doc_ids: {leaf task name: sorted true doc ids of this run} (lm-eval
    numbers the selected documents 0..n-1, this maps them back); groups: {leaf task name: requested name}.
    """

    def __init__(self, job, writer, tasks: Dict[str, Any], doc_ids: Dict[str, List[int]], groups: Dict[str, str],
                 provenance: Dict[str, Any], progress: Optional[Callable[[int], None]] = None):
        self.job, self.writer, self.tasks, self.doc_ids, self.groups = job, writer, tasks, doc_ids, groups
        self.provenance = provenance
        self.progress = progress
        self.config = {k: v for k, v in job.to_dict().items() if k not in ("tasks", "samples")}

    def __call__(self, request, prediction: str, stats: Dict[str, Any], output_tokens: int,
                 input_tokens: Optional[int]) -> None:
        task = self.tasks[request.task_name]
        doc_id = self.doc_ids[request.task_name][request.doc_id]
        metrics = score(task, request, prediction)
        record = {
            "job_id": self.job.id,
            "task": request.task_name,
            "group": self.groups.get(request.task_name, request.task_name),
            "doc_id": doc_id,
            "model": self.job.model.name,
            "method": self.job.method,
            "label": self.job.label,
            "ratio": self.job.ratio,
            "length": self.job.length,
            "prediction": prediction,
            "target": _jsonable(task.doc_to_target(request.doc)),
            "score": primary_score(metrics, self.job.length),
            "metrics": metrics,
            "sparsity": stats.get("sparsity"),
            "stats": stats,
            "output_tokens": output_tokens,
            "input_tokens": input_tokens,
            "prompt_sha1": hashlib.sha1(str(request.args[0]).encode()).hexdigest()[:12],
            "config": self.config,
            "provenance": self.provenance,
        }
        if self.writer.append(record) and self.progress is not None:
            self.progress(1)


def score(task, request, prediction: str) -> Dict[str, Any]:
    """The task's metrics for one generation: its filter pipeline (first ensemble) then `process_results`."""
    probe = dataclasses.replace(request, resps=[prediction], filtered_resps={})
    filters = getattr(task, "_filters", None) or []
    for ensemble in filters[:1]:
        ensemble.apply([probe])
    filtered = next(iter(probe.filtered_resps.values())) if probe.filtered_resps else prediction
    metrics = task.process_results(request.doc, [filtered])
    return {k: _jsonable(v) for k, v in metrics.items()}


def primary_score(metrics: Dict[str, Any], length: int) -> Optional[float]:
    """The sample's score: the metric keyed by its length (lm-eval RULER convention, -1 = other lengths), else
    the single numeric metric, else the first numeric one."""
    if str(length) in metrics and isinstance(metrics[str(length)], (int, float)):
        return float(metrics[str(length)])
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and v != -1}
    if not numeric:
        return None
    return float(next(iter(numeric.values())))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class RecordingHFLM(HFLM):
    """lm-eval's HFLM, generating one request at a time and recording each sample with its `get_stats`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorder: Optional[Recorder] = None
        self.sparse = False

    def generate_until(self, requests, disable_tqdm: bool = False):
        """Generate `batch_size` requests at a time (one `generate` call each chunk) and record each sample.

        With batch_size 1 (the default) a record's stats are its own; with more they are the batch mean
        (`stats.scope == "batch"`), since `get_stats` describes the last generate call.
        """
        outputs = []
        size = max(1, int(self.batch_size))
        for start in range(0, len(requests), size):
            chunk = requests[start:start + size]
            texts = super().generate_until(chunk, disable_tqdm=True)
            outputs += texts
            if self.recorder is None:
                continue
            stats = self._stats(len(chunk))
            for request, text in zip(chunk, texts):
                context = request.args[0]
                self.recorder(request, text, stats, output_tokens=len(self.tok_encode(text)),
                              input_tokens=len(self.tok_encode(context)) if isinstance(context, str) else None)
        return outputs

    def _stats(self, batch: int = 1) -> Dict[str, Any]:
        if not self.sparse:
            return {"sparsity": 0.0}
        import sparse_attn

        stats = _jsonable(sparse_attn.get_stats(self.model))
        return {**stats, "scope": "batch"} if batch > 1 else stats


def make_vllm_lm(**model_args):
    """lm-eval's VLLM wrapper subclassed to record samples chunk by chunk (imported lazily: vLLM is optional)."""
    from lm_eval.models.vllm_causallms import VLLM

    class RecordingVLLM(VLLM):
        chunk_size = 8

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.recorder: Optional[Recorder] = None
            self.sparse = "additional_config" in kwargs

        def generate_until(self, requests, disable_tqdm: bool = False):
            outputs = []
            for start in range(0, len(requests), self.chunk_size):
                chunk = requests[start:start + self.chunk_size]
                self._reset_stats()
                texts = super().generate_until(chunk, disable_tqdm=True)
                outputs += texts
                if self.recorder is None:
                    continue
                stats = self._stats()
                for request, text in zip(chunk, texts):
                    context = request.args[0]
                    self.recorder(request, text, stats, output_tokens=len(self.tok_encode(text)),
                                  input_tokens=len(self.tok_encode(context)) if isinstance(context, str) else None)
            return outputs

        def _plugin(self):
            try:
                from sparse_attn.integrations import vllm as plugin
            except ImportError:
                return None
            return plugin if hasattr(plugin, "get_stats") and hasattr(plugin, "reset_stats") else None

        def _reset_stats(self) -> None:
            plugin = self._plugin()
            if plugin is not None and self.sparse:
                plugin.reset_stats(self.model)

        def _stats(self) -> Dict[str, Any]:
            """Stats of the last chunk from the vLLM plugin (a chunk mean: `scope` says so); dense: 0."""
            if not self.sparse:
                return {"sparsity": 0.0}
            plugin = self._plugin()
            if plugin is None:
                return {"sparsity": None, "scope": "unmeasured"}
            return {**_jsonable(plugin.get_stats(self.model)), "scope": "chunk"}

    return RecordingVLLM(**model_args)
