"""Decode attention over a compressed KV cache with per-head lengths: the readable PyTorch reference.

Used after SnapKV / Ada-SnapKV eviction, where every KV head keeps its own number of tokens. GQA is handled by
viewing the query heads as `[B, Hkv, G, D]` against `[B, Hkv, C, D]` keys, never by repeating K/V.
"""
from typing import Optional, Tuple, Union

import torch


def _check_decode_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: torch.Tensor) -> None:
    if q.dim() != 3 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(
            f"decode expects q [B, Hq, D] and k, v [B, Hkv, C, D]; got q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}"
        )
    batch, num_q_heads, head_dim = q.shape
    if k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch size or head dim")
    if num_q_heads % k.shape[1]:
        raise ValueError(f"query heads ({num_q_heads}) must be a multiple of KV heads ({k.shape[1]})")
    if tuple(lens.shape) != tuple(k.shape[:2]):
        raise ValueError(f"lens must be [B, Hkv] = {tuple(k.shape[:2])}, got {tuple(lens.shape)}")
    if bool((lens < 1).any()) or bool((lens > k.shape[2]).any()):
        raise ValueError(f"lens must lie in [1, C={k.shape[2]}], got min {int(lens.min())} max {int(lens.max())}")


def naive_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lens: torch.Tensor,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    return_lse: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One decode step of attention over a cache whose KV heads hold different numbers of valid tokens.

    Args:
        q: `[B, Hq, D]` the new token's queries (post-RoPE).
        k, v: `[B, Hkv, C, D]` compressed cache; head `(b, h)` holds valid tokens at `0 .. lens[b, h] - 1`;
            entries beyond are never read (they may hold anything, NaN included).
        lens: `[B, Hkv]` int, `1 <= lens <= C`.
        scale: softmax scale. Default: `D ** -0.5`.
        out: optional `[B, Hq, D]` output written in place.
        return_lse: also return the log-sum-exp of the scaled scores, `[B, Hq]` fp32.

    Returns:
        `out [B, Hq, D]` in q's dtype (and `lse [B, Hq]` fp32 when `return_lse`).
    """
    _check_decode_shapes(q, k, v, lens)
    head_dim, capacity = q.shape[2], k.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    valid = torch.arange(capacity, device=k.device) < lens[..., None]  # [B, Hkv, C]
    return masked_gqa_decode(q, k, v, valid[:, :, None, :], scale, out, return_lse)


def masked_gqa_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    out: Optional[torch.Tensor] = None,
    return_lse: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Decode attention of `q [B, Hq, D]` over the keys `mask` allows, in fp32 (shared by the decode references).

    Args:
        k, v: `[B, Hkv, S, D]`; query head h reads KV head h // G (G = Hq // Hkv), K/V never repeated.
        mask: `[B, Hkv, G or 1, S]` bool, the keys each query head (or whole group) reads; every row needs one.
        scale, out, return_lse: as `naive_decode`.
    """
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    # Zero the unread entries so NaN / garbage there cannot leak through 0 * NaN.
    read_anywhere = mask.any(dim=2)[..., None]  # [B, Hkv, S, 1]
    k32 = torch.where(read_anywhere, k.float(), 0.0)
    v32 = torch.where(read_anywhere, v.float(), 0.0)
    q32 = q.float().view(batch, num_kv_heads, num_q_heads // num_kv_heads, head_dim)

    scores = torch.einsum("bhgd,bhsd->bhgs", q32, k32) * scale  # [B, Hkv, G, S]
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [B, Hkv, G]
    probs = torch.exp(scores - lse[..., None])
    result = torch.einsum("bhgs,bhsd->bhgd", probs, v32).reshape(batch, num_q_heads, head_dim)

    if out is None:
        out = result.to(q.dtype)
    else:
        out.copy_(result)
    if return_lse:
        return out, lse.reshape(batch, num_q_heads)
    return out
