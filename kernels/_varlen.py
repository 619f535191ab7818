"""Shared input checks for the varlen packed prefill layout (`q [N, Hq, D]`, `k, v [N, Hkv, D]`, `cu_seqlens [B+1]`).

Every prefill primitive (naive and Triton) validates its inputs here, so a wrong layout fails with the same clear
message everywhere instead of an index error deep inside a kernel.
"""
from typing import List, Optional

import torch


def check_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    cu_seqlens: torch.Tensor,
    v: Optional[torch.Tensor] = None,
) -> List[int]:
    """Validate the packed layout and return the per-sample lengths `[L_0, ..., L_{B-1}]` (Python ints).

    Raises `ValueError` naming the problem: wrong ranks, K/V shape mismatch, Hq not a multiple of Hkv (GQA),
    cu_seqlens not a 1-D non-decreasing integer tensor starting at 0 and ending at N.
    """
    if q.dim() != 3 or k.dim() != 3:
        raise ValueError(
            f"prefill expects the varlen packed layout q [N, Hq, D], k/v [N, Hkv, D]; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)} (flatten a padded [B, H, T, D] batch with its valid lengths first)"
        )
    if v is not None and v.shape != k.shape:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on token count N or head dim D")
    if q.shape[1] % k.shape[1]:
        raise ValueError(
            f"query heads ({q.shape[1]}) must be a multiple of KV heads ({k.shape[1]}) for GQA: query head h reads "
            f"KV head h // (Hq // Hkv)"
        )
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype.is_floating_point:
        raise ValueError(
            f"cu_seqlens must be a 1-D integer tensor [B+1], got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}"
        )
    bounds = [int(x) for x in cu_seqlens.tolist()]
    if bounds[0] != 0 or bounds[-1] != q.shape[0]:
        raise ValueError(f"cu_seqlens must start at 0 and end at N={q.shape[0]}, got {bounds[0]} .. {bounds[-1]}")
    lens = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    if min(lens) < 1:
        raise ValueError(f"every sample needs at least one token; cu_seqlens gives lengths {lens}")
    return lens
