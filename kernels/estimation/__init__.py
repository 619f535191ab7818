"""Sparse-prefill pattern estimation: last-window vertical / slash sums, pooled block scores, stable top-k.

`naive_*` are the PyTorch references; the dispatchers without prefix take `backend="auto" | "naive" | "triton"`
(see `kernels/_dispatch.py`). `stable_topk` (topk.py) is plain torch.
"""
from typing import Optional, Tuple

import torch

from .._dispatch import triton_module_for
from .naive import naive_last_window_sums, naive_pooled_block_scores
from .topk import stable_topk

__all__ = [
    "last_window_sums", "pooled_block_scores", "stable_topk",
    "naive_last_window_sums", "naive_pooled_block_scores",
]


def _triton_module(tensor: torch.Tensor, backend: str):
    return triton_module_for(__name__, "the Triton estimation kernels are", tensor, backend)


def last_window_sums(
    q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, window: int,
    scale: Optional[float] = None, backend: str = "auto", max_len: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dispatch `naive_last_window_sums` / `triton_last_window_sums` (same signature; see the naive docstring).

    max_len: the longest sample's length, when known on the host (saves the Triton path a device-to-host read).
    """
    module = _triton_module(q, backend)
    if module is None:
        return naive_last_window_sums(q, k, cu_seqlens, window, scale=scale)
    return module.triton_last_window_sums(q, k, cu_seqlens, window, scale=scale, max_len=max_len)


def pooled_block_scores(
    q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, chunk_size: int, backend: str = "auto",
) -> torch.Tensor:
    """Dispatch `naive_pooled_block_scores` / `triton_pooled_block_scores` (see the naive docstring)."""
    module = _triton_module(q, backend)
    if module is None:
        return naive_pooled_block_scores(q, k, cu_seqlens, chunk_size)
    return module.triton_pooled_block_scores(q, k, cu_seqlens, chunk_size)
