"""Sparse-prefill pattern estimation: last-window vertical / slash sums, pooled block scores, stable top-k.

`naive_*` are the PyTorch references; the dispatchers without prefix take `backend="auto" | "naive" | "triton"`
("auto": the Triton kernel for CUDA tensors, the reference for CPU tensors; a CUDA tensor without Triton raises). `stable_topk` is plain torch.
"""
from typing import Optional, Tuple

import torch

from .naive import naive_last_window_sums, naive_pooled_block_scores, stable_topk

__all__ = [
    "last_window_sums", "pooled_block_scores", "stable_topk",
    "naive_last_window_sums", "naive_pooled_block_scores",
]


def _use_naive(tensor: torch.Tensor, backend: str) -> bool:
    if backend not in ("auto", "naive", "triton"):
        raise ValueError(f"backend must be 'auto', 'naive' or 'triton', got {backend!r}")
    return backend == "naive" or (backend == "auto" and not tensor.is_cuda)


def _triton_module(backend: str):
    try:
        from . import triton as module
    except ImportError as error:  # CUDA tensors never fall back to the slow reference silently
        raise ImportError(
            f"the Triton estimation kernels are unavailable ({error}); install Triton "
            f"(pip install 'sparse-attn[triton]') or pass backend='naive' to run the PyTorch reference on purpose"
        ) from error
    return module


def last_window_sums(
    q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, window: int,
    scale: Optional[float] = None, backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dispatch `naive_last_window_sums` / `triton_last_window_sums` (same signature; see the naive docstring)."""
    module = None if _use_naive(q, backend) else _triton_module(backend)
    if module is None:
        return naive_last_window_sums(q, k, cu_seqlens, window, scale=scale)
    return module.triton_last_window_sums(q, k, cu_seqlens, window, scale=scale)


def pooled_block_scores(
    q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, chunk_size: int, backend: str = "auto",
) -> torch.Tensor:
    """Dispatch `naive_pooled_block_scores` / `triton_pooled_block_scores` (see the naive docstring)."""
    module = None if _use_naive(q, backend) else _triton_module(backend)
    if module is None:
        return naive_pooled_block_scores(q, k, cu_seqlens, chunk_size)
    return module.triton_pooled_block_scores(q, k, cu_seqlens, chunk_size)
