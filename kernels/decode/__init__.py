"""Decode attention over a compressed cache with per-head lengths (`[B, Hkv, C, D]`, `lens [B, Hkv]`), and the
window importance that SnapKV / Ada-SnapKV compression ranks tokens by (`window_importance`).

`naive_decode` is the PyTorch reference (`naive.py`), `triton_decode` the flash-decoding kernel (`triton.py`, same
signature); `decode(..., backend=...)` picks one: "auto" = Triton for CUDA tensors, the reference otherwise;
"naive" / "triton" force one ("triton" on CPU tensors needs `TRITON_INTERPRET=1`). Nothing falls back silently:
a forced backend that cannot run raises.
"""
from typing import Optional

import torch

from .._dispatch import resolve_backend, triton_module
from .kv_select_naive import (
    flat_ordered_keys,
    naive_ada_cuts,
    naive_compact_kept,
    naive_keep_top,
    naive_pack_kept,
    naive_pool_keys,
)
from .naive import naive_decode
from .window_naive import naive_window_importance

__all__ = ["decode", "naive_decode", "window_importance", "naive_window_importance", "resolve_backend",
           "pool_keys", "naive_pool_keys", "pack_kept", "naive_pack_kept", "flat_ordered_keys", "compact_kept",
           "naive_compact_kept", "keep_top", "naive_keep_top", "ada_cuts", "naive_ada_cuts"]


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
    kernels = triton_module(__name__, "the Triton decode kernel is")  # imports triton only when it is used
    return kernels.triton_decode(q, k, v, lens, scale=scale, out=out, return_lse=return_lse)


def window_importance(
    q_window: torch.Tensor,
    k: torch.Tensor,
    scale: Optional[float] = None,
    reduce: str = "mean_sum",
    backend: str = "auto",
) -> torch.Tensor:
    """SnapKV ("mean_sum") / Ada-SnapKV ("max") token importance `[Hkv, T]` fp32 from `q_window [Hq, W, D]` and
    `k [Hkv, T, D]`, before pooling. The Triton kernel never materialises the `[Hkv, G, W, T]` probabilities
    (32K prompt on an H100: 0.56 ms instead of 6.1 ms). See `naive_window_importance`.

    backend: "auto" (Triton for CUDA tensors with head dim 64 or 128, else the PyTorch reference: both compute
    the same scores, so a method's selection does not depend on it), "naive" or "triton".
    """
    if backend == "auto" and q_window.shape[-1] not in (64, 128):
        backend = "naive"
    if resolve_backend(backend, q_window) == "naive":
        return naive_window_importance(q_window, k, scale=scale, reduce=reduce)
    from .window_triton import triton_window_importance

    return triton_window_importance(q_window, k, scale=scale, reduce=reduce)


def pool_keys(scores: torch.Tensor, kernel_size: int, local_window: int, prefix_tokens: int, pool: bool = True,
              backend: str = "auto"):
    """Pooled + forced SnapKV scores `[H, T]` fp32 and their int64 ranking keys `[H, T]` (score descending, then
    flat index `h * T + t` ascending). See `naive_pool_keys`; the Triton kernel does it in one launch.

    backend: "auto" (Triton for CUDA tensors, else the PyTorch reference), "naive" or "triton".
    """
    if resolve_backend(backend, scores) == "naive":
        return naive_pool_keys(scores, kernel_size, local_window, prefix_tokens, pool=pool)
    from .kv_select_triton import triton_pool_keys

    return triton_pool_keys(scores, kernel_size, local_window, prefix_tokens, pool=pool)


def pack_kept(k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, lens: torch.Tensor, cu_seqlens: torch.Tensor,
              backend: str = "auto"):
    """Kept K / V rows of a packed batch -> `(k, v [B, Hkv, C, D], sparsity [B, Hkv])`. See `naive_pack_kept`.

    backend: "auto" (Triton for CUDA tensors with a power-of-two head dim, else the PyTorch reference: both copy
    the same rows), "naive" or "triton".
    """
    head_dim = k.shape[-1]
    if backend == "auto" and head_dim & (head_dim - 1):
        backend = "naive"
    if resolve_backend(backend, k) == "naive":
        return naive_pack_kept(k, v, index, lens, cu_seqlens)
    from .kv_select_triton import triton_pack_kept

    return triton_pack_kept(k, v, index, lens, cu_seqlens)


def compact_kept(keys: torch.Tensor, cut: torch.Tensor, width: int, backend: str = "auto"):
    """Kept positions `[H, width]` (ascending, -1 after each head's count) and counts `[H]` int32 of the keys
    `>= cut[h]` per head. See `naive_compact_kept`.

    backend: "auto" (Triton for CUDA tensors, else the PyTorch reference), "naive" or "triton".
    """
    if resolve_backend(backend, keys) == "naive":
        return naive_compact_kept(keys, cut, width)
    from .kv_select_triton import triton_compact_kept

    return triton_compact_kept(keys, cut, width)


def keep_top(scores: torch.Tensor, count: int, backend: str = "auto"):
    """SnapKV's kept tokens: the `count` best scores of each head of `[H, T]` fp32 (ties: the earlier token), as
    (index `[H, count]` int64 ascending, lens `[H]` int32). See `naive_keep_top`.

    backend: "auto" (Triton for CUDA tensors, else the PyTorch reference), "naive" or "triton".
    """
    if resolve_backend(backend, scores) == "naive":
        return naive_keep_top(scores, count)
    from .kv_select_triton import triton_keep_top

    return triton_keep_top(scores, count)


def ada_cuts(keys: torch.Tensor, floor: int, total: int, backend: str = "auto"):
    """Ada-SnapKV's per-head key cuts of `[H, T]` int64 ranking keys: (cut `[H]` int64, width 0-dim int64 = the
    largest per-head count); head h keeps the keys `>= cut[h]`. See `naive_ada_cuts`; the Triton path is a radix
    select (8 launches of one kernel, no torch.topk, no host sync).

    backend: "auto" (Triton for CUDA tensors, else the PyTorch reference), "naive" or "triton".
    """
    if resolve_backend(backend, keys) == "naive":
        return naive_ada_cuts(keys, floor, total)
    from .kv_select_triton import triton_ada_cuts

    return triton_ada_cuts(keys, floor, total)
