"""Decode attention over a compressed cache with per-head lengths (`[B, Hkv, C, D]`, `lens [B, Hkv]`).

`naive_decode` is the PyTorch reference (`naive.py`), `triton_decode` the flash-decoding kernel (`triton.py`, same
signature); `decode(..., backend=...)` picks one: "auto" = Triton for CUDA tensors, the reference otherwise;
"naive" / "triton" force one ("triton" on CPU tensors needs `TRITON_INTERPRET=1`). Nothing falls back silently:
a forced backend that cannot run raises.
"""
from typing import Optional

import torch

from .naive import naive_decode

__all__ = ["decode", "naive_decode", "resolve_backend"]


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """"naive" or "triton" for this request and device (shared by the Quest dispatcher)."""
    if backend not in ("auto", "naive", "triton"):
        raise ValueError(f"backend must be 'auto', 'naive' or 'triton', got {backend!r}")
    if backend == "auto":
        return "triton" if tensor.is_cuda else "naive"
    return backend


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
    """One decode step over a per-head variable-length cache. See `naive_decode` for shapes.

    backend: "auto" (Triton for CUDA tensors, else the PyTorch reference), "naive" or "triton".
    """
    if resolve_backend(backend, q) == "naive":
        return naive_decode(q, k, v, lens, scale=scale, out=out, return_lse=return_lse)
    from .triton import triton_decode  # imports triton only when the kernel is used

    return triton_decode(q, k, v, lens, scale=scale, out=out, return_lse=return_lse)
