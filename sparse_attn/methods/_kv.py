"""Shared pieces of the KV-compression methods (snapkv, ada_snapkv): window scores, pooling, packing.

Shapes follow docs/architecture.md. The estimation only materialises the last-window scores `[Hq, W, T]`
(never `T x T`), in fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch
import torch.nn.functional as F

from ..kernels._window import causal_window_probs


@dataclass
class KeptTokens:
    """Tokens one sample keeps per KV head.

    index: `[Hkv, C]` int64 token positions in ascending (positional) order, -1 beyond `lens`.
    lens: `[Hkv]` int32 number of kept tokens per KV head.
    """

    index: torch.Tensor
    lens: torch.Tensor


@dataclass
class CompressedKV:
    """A compressed cache for a batch: what decoding reads instead of the full prompt cache.

    k, v: `[B, Hkv, C, D]` kept keys / values in positional order, zeros beyond `lens` (C = max kept length).
    lens: `[B, Hkv]` int32 kept tokens per sample and KV head.
    index: `[B, Hkv, C]` int64 original token positions of the kept tokens, -1 beyond `lens`.
    sparsity: `[B, Hkv]` fp32 `1 - lens / T_b`, measured from the selection.
    """

    k: torch.Tensor
    v: torch.Tensor
    lens: torch.Tensor
    index: torch.Tensor
    sparsity: torch.Tensor


def check_window_shapes(q_window: torch.Tensor, k: torch.Tensor, expected_window: int) -> None:
    if q_window.dim() != 3 or k.dim() != 3:
        raise ValueError(
            f"expected q_window [Hq, W, D] and k [Hkv, T, D], got {tuple(q_window.shape)} and {tuple(k.shape)}"
        )
    num_q_heads, window, head_dim = q_window.shape
    num_kv_heads, seq_len, _ = k.shape
    if k.shape[2] != head_dim:
        raise ValueError(f"q_window head dim {head_dim} != k head dim {k.shape[2]}")
    if num_q_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_q_heads}) must be a multiple of KV heads ({num_kv_heads})")
    if window != expected_window:
        raise ValueError(
            f"q_window holds {window} queries but the method scores with the last min(approximation_window, T) = "
            f"{expected_window} prompt queries (T={seq_len}): pass q[-{expected_window}:]"
        )


# Softmax of the last W prompt queries over all T keys: `q_window [Hq, W, D]`, `k [Hkv, T, D]` ->
# `[Hkv, G, W, T]` fp32 (the shared definition in kernels/_window.py).
window_probs = causal_window_probs


def pool_and_force(scores: torch.Tensor, kernel_size: int, local_window: int, prefix_tokens: int) -> torch.Tensor:
    """Smooth `[Hkv, T]` scores with a same-length average pool (zero padding counted), then force the first
    `prefix_tokens` and the last `local_window` tokens to +inf so they are always kept."""
    pooled = F.avg_pool1d(
        scores[:, None, :], kernel_size=kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=True
    )[:, 0, :]
    seq_len = pooled.shape[-1]
    pooled[:, : min(prefix_tokens, seq_len)] = float("inf")
    if local_window > 0:
        pooled[:, max(seq_len - local_window, 0):] = float("inf")
    return pooled


def top_positions(scores: torch.Tensor, count: int) -> torch.Tensor:
    """`[H, count]` positions of the `count` best scores per row; ties go to the lower position (stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :count]


def kept_from_mask(mask: torch.Tensor) -> KeptTokens:
    """Positional-order kept tokens from a `[Hkv, T]` boolean mask."""
    lens = mask.sum(dim=-1)
    width = int(lens.max())
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    # Kept positions keep their value, dropped ones move past the end; an ascending sort packs them to the left.
    keyed = torch.where(mask, positions, mask.shape[-1])
    ordered = torch.sort(keyed, dim=-1).values[:, :width]
    index = torch.where(ordered == mask.shape[-1], -1, ordered).long()
    return KeptTokens(index=index, lens=lens.to(torch.int32))


def keep_all(num_kv_heads: int, seq_len: int, device: torch.device) -> KeptTokens:
    index = torch.arange(seq_len, device=device).expand(num_kv_heads, seq_len).clone()
    return KeptTokens(index=index, lens=torch.full((num_kv_heads,), seq_len, dtype=torch.int32, device=device))


def pack(kept: List[KeptTokens], keys: List[torch.Tensor], values: List[torch.Tensor],
         seq_lens: List[int]) -> CompressedKV:
    """Gather each sample's kept K/V (`[Hkv, T_b, D]`) into one right-padded `[B, Hkv, C, D]` cache."""
    batch = len(kept)
    num_kv_heads, _, head_dim = keys[0].shape
    width = max(int(item.lens.max()) for item in kept)
    device, dtype = keys[0].device, keys[0].dtype
    k_out = torch.zeros(batch, num_kv_heads, width, head_dim, dtype=dtype, device=device)
    v_out = torch.zeros_like(k_out)
    index = torch.full((batch, num_kv_heads, width), -1, dtype=torch.int64, device=device)
    lens = torch.stack([item.lens for item in kept]).to(torch.int32)
    for b, item in enumerate(kept):
        c = item.index.shape[1]
        gather = item.index.clamp(min=0)[..., None].expand(num_kv_heads, c, head_dim)
        valid = (item.index >= 0)[..., None]
        k_out[b, :, :c] = torch.where(valid, keys[b].gather(1, gather), 0)
        v_out[b, :, :c] = torch.where(valid, values[b].gather(1, gather), 0)
        index[b, :, :c] = item.index
    totals = torch.tensor(seq_lens, dtype=torch.float32, device=device)[:, None]
    sparsity = 1.0 - lens.float() / totals
    return CompressedKV(k=k_out, v=v_out, lens=lens, index=index, sparsity=sparsity)
