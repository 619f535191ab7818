"""Decode attention over a compressed cache with per-head lengths (`[B, Hkv, C, D]`, `lens [B, Hkv]`).

`naive_decode` is the PyTorch reference; `decode(..., backend=...)` picks the implementation.
"""
from typing import Optional

import torch

from .naive import naive_decode

__all__ = ["decode", "naive_decode"]


def decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lens: torch.Tensor,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    return_lse: bool = False,
    backend: str = "auto",
):
    """Dispatch to `naive_decode` or the Triton kernel (same signature). See `naive_decode` for shapes.

    backend: "naive", "triton", or "auto" (Triton for CUDA tensors when the kernel is available, else naive).
    """
    if backend not in ("auto", "naive", "triton"):
        raise ValueError(f"backend must be 'auto', 'naive' or 'triton', got {backend!r}")
    if backend == "naive" or (backend == "auto" and not q.is_cuda):
        return naive_decode(q, k, v, lens, scale=scale, out=out, return_lse=return_lse)
    try:
        from .triton import triton_decode
    except ImportError as error:
        if backend == "triton":
            raise ImportError(f"backend='triton' requested but the Triton decode kernel is unavailable: {error}")
        return naive_decode(q, k, v, lens, scale=scale, out=out, return_lse=return_lse)
    return triton_decode(q, k, v, lens, scale=scale, out=out, return_lse=return_lse)
