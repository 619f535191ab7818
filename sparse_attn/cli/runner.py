"""Running jobs: in this process (one device) or one worker process per GPU (group) in parallel.

`run_job` is resumable at sample granularity: it asks the store which (task, document) pairs are finished and
hands lm-eval only the others (`simple_evaluate(samples=...)`); a job with nothing left loads no model.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .provenance import provenance
from .spec import Job, Sweep
from .store import JobBusy, RecordStore


class JobFailed(RuntimeError):
    pass


# -- one job ------------------------------------------------------------------------------------------------------
def task_metadata(job: Job) -> Dict[str, Any]:
    """What lm-eval hands our tasks' `custom_dataset` (as `simple_evaluate` would: model args | metadata)."""
    return {"pretrained": job.model.path, "tokenizer": job.model.path, **job.model.model_args,
            "max_seq_lengths": [job.length], "task_seed": job.seed, "num_samples": job.samples}


_TASK_CACHE: Dict[str, Any] = {}


def load_tasks(job: Job):
    """Build the job's lm-eval tasks (this generates their documents). Returns (manager, {leaf: Task},
    {leaf: requested name}). Jobs that differ only in the method share them (the documents depend on the
    tokenizer, length, seed and sample count only), so a sweep generates each task's data once per process."""
    key = json.dumps([task_metadata(job), job.tasks, job.include_path], sort_keys=True, default=str)
    if key not in _TASK_CACHE:
        _TASK_CACHE.clear()  # keep one set: documents at long lengths are large
        _TASK_CACHE[key] = _build_tasks(job)
    return _TASK_CACHE[key]


def _build_tasks(job: Job):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=job.include_path or None, metadata=task_metadata(job))
    leaves: Dict[str, Any] = {}
    groups: Dict[str, str] = {}
    for name in job.tasks:
        loaded = manager.load(name)
        for leaf, task in loaded["tasks"].items():
            if task.get_config("output_type") != "generate_until":
                raise JobFailed(f"task {leaf} is {task.get_config('output_type')}; sparse-attn sweeps record "
                                f"generations (generate_until tasks) only")
            leaves[leaf] = task
            groups[leaf] = name
    return manager, leaves, groups


class ModelCache:
    """Keeps the last loaded model so jobs differing only in method parameters reuse it (HF: `configure`)."""

    def __init__(self):
        self.key = None
        self.lm = None

    def get(self, job: Job):
        composition = job.composition()
        if job.backend == "hf":
            impl = hf_attn_implementation(composition.name)
            key = ("hf", job.model.path, impl, json.dumps(job.model.model_args, sort_keys=True), job.device,
                   job.batch_size)
        else:
            key = ("vllm", job.model.path, json.dumps(composition.to_dict(), sort_keys=True),
                   json.dumps(job.model.model_args, sort_keys=True))
        if key != self.key:
            self.release()
            self.lm = _load_hf(job, impl) if job.backend == "hf" else _load_vllm(job, composition)
            self.key = key

        if job.backend == "hf" and self.lm.sparse:
            import sparse_attn

            sparse_attn.configure(self.lm.model, **job.params)
        return self.lm

    def release(self):
        if self.lm is not None:
            del self.lm
            self.lm, self.key = None, None
            import gc

            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()  # the next job's model gets the memory back
            except ImportError:
                pass


def _check_context_fits(lm, job: Job, tasks: Dict[str, Any]) -> None:
    """lm-eval silently left-truncates prompts to max_length - max_gen_toks: refuse instead."""
    generate = max((int(job.generation.get("max_gen_toks") or (task.get_config("generation_kwargs") or {}).get(
        "max_gen_toks") or getattr(lm, "max_gen_toks", 256)) for task in tasks.values()), default=0)
    needed = job.length + generate
    if lm.max_length < needed:
        arg = "max_length" if job.backend == "hf" else "max_model_len"
        raise JobFailed(f"{job.model.name}: lm-eval's context limit is {lm.max_length} tokens but length "
                        f"{job.length} (+ max_gen_toks) needs {needed}; prompts would be truncated. Set "
                        f"models[].model_args.{arg}: {needed} (or more) if the model supports it")


def hf_attn_implementation(name: str) -> str:
    """The `attn_implementation` for a composition name: 'sdpa' for dense, else the registered sparse name."""
    if name == "dense":
        return "sdpa"
    import sparse_attn  # noqa: F401  (registers the methods with transformers)
    from transformers import AttentionInterface

    if name not in AttentionInterface._global_mapping:
        raise JobFailed(f"attn_implementation {name!r} is not registered with transformers: is "
                        f"sparse_attn.integrations.transformers installed and importable?")
    return name


def _device(job: Job) -> str:
    if job.device != "auto":
        return job.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_hf(job: Job, impl: str):
    from .recording import RecordingHFLM

    args = {"dtype": "auto", **job.model.model_args}
    lm = RecordingHFLM(pretrained=job.model.path, attn_implementation=impl, device=_device(job),
                       batch_size=job.batch_size, **args)
    lm.sparse = impl != "sdpa"
    return lm


def _load_vllm(job: Job, composition):
    from .recording import make_vllm_lm

    args = {"tensor_parallel_size": job.model.tp, "seed": job.seed}
    if composition.name != "dense":
        from sparse_attn.integrations.vllm import engine_kwargs

        # the plugin's own recipe: additional_config, CUSTOM backend on GPU, whole-prompt prefill when needed
        args.update(engine_kwargs(composition, max_model_len=job.model.model_args.get("max_model_len")))
        # per-chunk statistics are read from the engine's workers through collective_rpc (our own engine)
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    args.update(job.model.model_args)
    return make_vllm_lm(pretrained=job.model.path, **args)


def pending_samples(job: Job, leaves: Dict[str, Any], store: RecordStore) -> Dict[str, List[int]]:
    done = store.done(job.id)
    pending = {}
    for leaf, task in leaves.items():
        available = len(task.eval_docs)
        if available < job.samples:
            print(f"[sparse-attn] {leaf}: only {available} documents at length {job.length} "
                  f"(samples: {job.samples})", file=sys.stderr)
        todo = [i for i in range(min(job.samples, available)) if (leaf, i) not in done]
        if todo:
            pending[leaf] = todo
    return pending


def run_job(job: Job, store: RecordStore, cache: Optional[ModelCache] = None,
            progress: Optional[Callable[[int], None]] = None, on_total: Optional[Callable[[int], None]] = None) -> int:
    """Run what is left of `job`; returns the number of samples recorded now."""
    store.save_job(job.to_dict())
    if _finished_by_manifest(job, store, on_total):
        return 0  # nothing left: neither the tasks' documents nor the model are built
    try:
        writer = store.writer(job.id)  # locks the job's record file for this process
    except JobBusy as busy:
        print(f"[sparse-attn] skipping job {job.id}: {busy}", file=sys.stderr)
        return 0
    with writer:
        return _run_locked(job, store, writer, cache, progress, on_total)


def _run_locked(job: Job, store: RecordStore, writer, cache, progress, on_total) -> int:
    import lm_eval

    from .recording import Recorder

    manager, leaves, groups = load_tasks(job)
    _save_manifest(job, store, leaves, groups)
    if on_total is not None:
        on_total(sum(min(job.samples, len(t.eval_docs)) for t in leaves.values()))
    pending = pending_samples(job, leaves, store)
    if not pending:
        return 0
    cache = cache or ModelCache()
    lm = cache.get(job)
    _check_context_fits(lm, job, leaves)
    before = len(store.done(job.id))
    lm.recorder = Recorder(job, writer, leaves, pending, groups, provenance(job.device), progress)
    try:
        results = lm_eval.simple_evaluate(
            model=lm, tasks=[leaves[name] for name in pending], samples=pending, task_manager=manager,
            gen_kwargs=dict(job.generation) or None, log_samples=False, random_seed=job.seed,
            numpy_random_seed=job.seed, torch_random_seed=job.seed, fewshot_random_seed=job.seed,
            apply_chat_template=job.apply_chat_template, verbosity="WARNING",
        )
    finally:
        lm.recorder = None
    _save_lm_eval_results(store, job, results)
    return len(store.done(job.id)) - before


def _manifest_path(job: Job, store: RecordStore) -> Path:
    folder = store.root / "task_manifests"
    folder.mkdir(exist_ok=True)
    return folder / f"{job.id}.json"


def _save_manifest(job: Job, store: RecordStore, leaves: Dict[str, Any], groups: Dict[str, str]) -> None:
    """{requested task: {leaf task: documents available}}, so a rerun can tell "all done" without building data."""
    path = _manifest_path(job, store)
    manifest = json.loads(path.read_text()) if path.exists() else {}
    for leaf, task in leaves.items():
        manifest.setdefault(groups[leaf], {})[leaf] = len(task.eval_docs)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def _finished_by_manifest(job: Job, store: RecordStore, on_total) -> bool:
    path = _manifest_path(job, store)
    if not path.exists():
        return False
    manifest = json.loads(path.read_text())
    if not all(name in manifest for name in job.tasks):
        return False
    wanted = {(leaf, i) for name in job.tasks for leaf, available in manifest[name].items()
              for i in range(min(job.samples, available))}
    if not wanted <= store.done(job.id):
        return False
    if on_total is not None:
        on_total(len(wanted))
    return True


def _save_lm_eval_results(store: RecordStore, job: Job, results) -> None:
    if not results:
        return
    folder = store.root / "lm_eval" / job.id
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    keep = {k: results[k] for k in ("results", "configs", "versions", "n-samples", "config") if k in results}
    (folder / f"results_{stamp}.json").write_text(json.dumps(keep, indent=2, default=str))


# -- a whole sweep --------------------------------------------------------------------------------------------------
def device_slots(sweep: Sweep) -> List[Optional[str]]:
    """CUDA_VISIBLE_DEVICES value of each parallel slot; [None] means: one slot, in this process."""
    gpus = sweep.parallel.get("gpus", "auto")
    if gpus == "auto":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            ids = [g for g in visible.split(",") if g.strip()]
        else:
            try:
                import torch

                ids = [str(i) for i in range(torch.cuda.device_count())]
            except Exception:
                ids = []
    elif isinstance(gpus, int):
        ids = [str(i) for i in range(gpus)]
    else:
        ids = [str(g) for g in gpus]
    tp = max((job.model.tp for job in sweep.jobs), default=1) if sweep.backend == "vllm" else 1
    groups = [",".join(ids[i:i + tp]) for i in range(0, len(ids) - tp + 1, tp)]
    if len(ids) and not groups:
        raise JobFailed(f"tensor-parallel size {tp} needs {tp} GPUs, only {len(ids)} visible")
    return groups if len(groups) > 1 else [None]


def run_sweep(sweep: Sweep, show_progress: bool = True) -> Dict[str, Any]:
    """Run every job (skipping finished samples). Returns {"recorded": n, "failed": [job ids]}."""
    store = RecordStore(sweep.output)
    (sweep.output / "sweep.json").write_text(json.dumps(sweep.raw, indent=2, default=str))
    for job in sweep.jobs:
        store.save_job(job.to_dict())
    slots = device_slots(sweep)
    expected = sum(len(job.tasks) * job.samples for job in sweep.jobs)
    bar = _progress_bar(expected, store.count(), show_progress)
    try:
        if slots == [None]:
            return _run_in_process(sweep, store, bar)
        return _run_parallel(sweep, store, slots, bar)
    finally:
        bar.close()


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=max(total, initial), initial=initial, desc="samples", unit="sample", disable=not enabled,
                dynamic_ncols=True)


def _run_in_process(sweep: Sweep, store: RecordStore, bar) -> Dict[str, Any]:
    cache = ModelCache()
    recorded, failed = 0, []
    assumed = {job.id: len(job.tasks) * job.samples for job in sweep.jobs}

    for job in sweep.jobs:
        bar.set_postfix_str(f"{job.label} {job.ratio or ''} L={job.length}")

        def adjust(total, job_id=job.id):  # groups expand into several leaf tasks: fix the bar's total
            bar.total += total - assumed[job_id]
            bar.refresh()

        try:
            recorded += run_job(job, store, cache, progress=bar.update, on_total=adjust)
        except Exception:  # one broken job (e.g. a task that cannot fit the length) must not stop the others
            failed.append(job.id)
            logs = sweep.output / "logs"
            logs.mkdir(exist_ok=True)
            message = traceback.format_exc()
            (logs / f"{job.id}.log").write_text(message)
            print(f"[sparse-attn] job {job.id} failed:\n{message}", file=sys.stderr)
    cache.release()
    return {"recorded": recorded, "failed": failed}


def _run_parallel(sweep: Sweep, store: RecordStore, slots: List[str], bar) -> Dict[str, Any]:
    queue = list(sweep.jobs)
    lock = threading.Lock()
    failed: List[str] = []
    logs = sweep.output / "logs"
    logs.mkdir(exist_ok=True)
    start_count = store.count()

    def worker(devices: str) -> None:
        while True:
            with lock:
                if not queue:
                    return
                job = queue.pop(0)
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices}
            with open(logs / f"{job.id}.log", "a") as log:
                code = subprocess.call([sys.executable, "-m", "sparse_attn.cli", "worker", str(sweep.output),
                                        job.id], env=env, stdout=log, stderr=subprocess.STDOUT)
            if code != 0:
                with lock:
                    failed.append(job.id)

    threads = [threading.Thread(target=worker, args=(devices,), daemon=True) for devices in slots]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        time.sleep(2)
        bar.n = store.count()
        bar.refresh()
    for thread in threads:
        thread.join()
    bar.n = store.count()
    bar.refresh()
    return {"recorded": store.count() - start_count, "failed": failed}


def run_worker(output: str, job_id: str) -> int:
    """Entry of a parallel worker process: run one saved job (CUDA_VISIBLE_DEVICES set by the parent)."""
    store = RecordStore(output)
    path = Path(output) / "jobs" / f"{job_id}.json"
    job = Job.from_dict(json.loads(path.read_text()))
    return run_job(job, store)
