"""Append-only per-sample record store: one JSON line per finished (job, task, document).

Layout of a results folder::

    <output>/jobs/<job_id>.json        the job (model, method, full parameters, length, tasks, ...)
    <output>/records/<job_id>.jsonl    one line per finished sample (prediction, score, sparsity, tokens, ...)
    <output>/lm_eval/<job_id>/*.json   lm-eval's aggregated results of each run of the job
    <output>/report/                   tables and plots written by `sparse-attn report`

Crash safety: a line is written with one `os.write` on an O_APPEND descriptor and fsync'ed before the sample
counts as done; one file per job means parallel workers never share a file. A SIGKILL can at worst leave a
partial last line (no newline): readers ignore it and the next writer cuts it off before appending, so no
finished record is lost and none is duplicated.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

Key = Tuple[str, int]  # (task, doc_id)


class RecordStore:
    """The records of one results folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "records").mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    def record_path(self, job_id: str) -> Path:
        return self.root / "records" / f"{job_id}.jsonl"

    def save_job(self, job_dict: Dict[str, Any]) -> None:
        path = self.root / "jobs" / f"{job_dict['id']}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job_dict, indent=2, sort_keys=True, default=str))
        os.replace(tmp, path)

    def jobs(self) -> List[Dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.root / "jobs").glob("*.json"))]

    # -- reading ---------------------------------------------------------------------------------------------
    def read(self, job_id: str) -> List[Dict[str, Any]]:
        return list(_read_lines(self.record_path(job_id)))

    def done(self, job_id: str) -> Set[Key]:
        return {(r["task"], r["doc_id"]) for r in self.read(job_id)}

    def all_records(self) -> Iterator[Dict[str, Any]]:
        for path in sorted((self.root / "records").glob("*.jsonl")):
            yield from _read_lines(path)

    def count(self) -> int:
        return sum(1 for _ in self.all_records())

    # -- writing ---------------------------------------------------------------------------------------------
    def writer(self, job_id: str) -> "RecordWriter":
        return RecordWriter(self.record_path(job_id))


class JobBusy(RuntimeError):
    """Another process holds the job's record file (e.g. a second sweep on the same folder)."""


class RecordWriter:
    """Appends records of one job; refuses a (task, doc_id) that is already stored.

    Holds an exclusive lock on the file while open, so two processes can never write the same job (which could
    duplicate records); the second gets `JobBusy`.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = -1
            raise JobBusy(f"{path.name} is being written by another process") from None
        _cut_partial_tail(path)
        self.done = {(r["task"], r["doc_id"]) for r in _read_lines(path)}

    def append(self, record: Dict[str, Any]) -> bool:
        """Write one record durably; returns False (and writes nothing) if its sample is already stored."""
        key = (record["task"], record["doc_id"])
        if key in self.done:
            return False
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        os.write(self._fd, line)
        os.fsync(self._fd)
        self.done.add(key)
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_lines(path: Path) -> Iterator[Dict[str, Any]]:
    if not path.exists():
        return
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break  # partial last line of a killed writer: not a finished record
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue


def _cut_partial_tail(path: Path) -> None:
    """Truncate a trailing line without newline (left by a killed writer) so appends start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        handle.truncate(data.rfind(b"\n") + 1)
