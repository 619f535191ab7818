"""Shared pieces of the KV-compression methods (snapkv, ada_snapkv): window scores, pooling, packing.

Shapes follow docs/architecture.md. The estimation only materialises the last-window scores `[Hq, W, T]`
(never `T x T`), in fp32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..kernels._window import causal_window_probs
from ..kernels.decode import pack_kept, pool_keys
from ..kernels.decode.kv_select_naive import naive_pool_and_force
from ..kernels.estimation.topk import ordered_keys


@dataclass
class KeptTokens:
    """Tokens one sample keeps per KV head.

    index: `[Hkv, C]` int64 token positions in ascending (positional) order, -1 beyond `lens`; `C` = the longest
        head's count.
    lens: `[Hkv]` int32 number of kept tokens per KV head.
    uniform: host-side flag, True when every head keeps exactly `C` tokens (no -1 padding): lets `pack` skip the
        padding fill without reading `lens` back from the device.
    """

    index: torch.Tensor
    lens: torch.Tensor
    uniform: bool = False


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
    `prefix_tokens` and the last `local_window` tokens to +inf so they are always kept (the PyTorch reference of
    `pool_keys`' pooling: `kernels/decode/kv_select_naive.py`)."""
    return naive_pool_and_force(scores, kernel_size, local_window, prefix_tokens)


def pooled_scores_and_keys(raw: torch.Tensor, kernel_size: int, local_window: int, prefix_tokens: int):
    """`[Hkv, T]` raw window scores -> (pooled + forced scores `[Hkv, T]` fp32, int64 ranking keys `[Hkv, T]`).

    Keys order (score descending, flat index `h * T + t` ascending), distinct: a plain `torch.topk` on them picks
    what a stable descending sort picks, per head (ties: earlier token) and over all heads (ties: earlier head).
    One Triton launch on CUDA (`kernels/decode/kv_select_triton.py`), the PyTorch reference elsewhere.
    """
    return pool_keys(raw, kernel_size, local_window, prefix_tokens)


def keys_of(scores: torch.Tensor) -> torch.Tensor:
    """Ranking keys of already pooled `[Hkv, T]` scores (see `pooled_scores_and_keys`)."""
    return pool_keys(scores, 1, 0, 0, pool=False)[1]


def top_positions(scores: torch.Tensor, count: int, sorted: bool = True) -> torch.Tensor:
    """`[H, count]` int64 positions of the `count` best scores per row; ties go to the lower position.

    The same set (and, with `sorted`, the same best-first order) as a stable descending sort cut at `count`
    (`reference_top_positions`), but through `torch.topk` on int64 keys that pack (score, position) into one
    distinct value (`kernels/estimation/topk.py:ordered_keys`): no full-row sort. `sorted=False` returns the set in
    an unspecified order (cheaper). Scores must not be NaN.
    """
    return torch.topk(ordered_keys(scores), count, dim=-1, sorted=sorted).indices


def reference_top_positions(scores: torch.Tensor, count: int) -> torch.Tensor:
    """PyTorch reference of `top_positions`: a full stable descending sort, cut at `count` (best first)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :count]


def kept_from_mask(mask: torch.Tensor, width: Optional[int] = None) -> KeptTokens:
    """Positional-order kept tokens from a `[Hkv, T]` boolean mask, without sorting.

    Each kept token's slot is its rank among the head's kept tokens (`cumsum - 1`); dropped tokens are scattered
    into a spare column past the end, which is cut off. `width` = columns of the result; None reads
    `max(lens)` back from the device (the one host sync of a ragged selection).
    """
    num_heads, seq_len = mask.shape
    lens = mask.sum(dim=-1)
    if width is None:
        width = int(lens.max())
    slot = torch.where(mask, mask.cumsum(dim=-1) - 1, width)  # kept: 0 .. lens-1, dropped: the spare column
    positions = torch.arange(seq_len, device=mask.device).expand(num_heads, seq_len)
    index = torch.full((num_heads, width + 1), -1, dtype=torch.int64, device=mask.device)
    index.scatter_(1, slot, positions)  # the spare column receives every dropped position (any of them): cut
    return KeptTokens(index=index[:, :width], lens=lens.to(torch.int32))


def reference_kept_from_mask(mask: torch.Tensor) -> KeptTokens:
    """PyTorch reference of `kept_from_mask`: kept positions packed to the left by a full ascending sort."""
    lens = mask.sum(dim=-1)
    width = int(lens.max())
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    keyed = torch.where(mask, positions, mask.shape[-1])  # dropped ones move past the end
    ordered = torch.sort(keyed, dim=-1).values[:, :width]
    index = torch.where(ordered == mask.shape[-1], -1, ordered).long()
    return KeptTokens(index=index, lens=lens.to(torch.int32))


def keep_all(num_kv_heads: int, seq_len: int, device: torch.device) -> KeptTokens:
    index = torch.arange(seq_len, device=device).expand(num_kv_heads, seq_len).clone()
    lens = torch.full((num_kv_heads,), seq_len, dtype=torch.int32, device=device)
    return KeptTokens(index=index, lens=lens, uniform=True)


def host_bounds(cu_seqlens: torch.Tensor, seq_lens: Optional[Sequence[int]] = None) -> List[int]:
    """`cu_seqlens` as host ints, validated. `seq_lens` (host per-sample lengths, e.g. the integration's own list)
    avoids reading a CUDA `cu_seqlens` back (a device sync that waits for the prefill)."""
    if seq_lens is not None:
        bounds = [0]
        for length in seq_lens:
            bounds.append(bounds[-1] + int(length))
        if len(bounds) != cu_seqlens.numel():
            raise ValueError(f"seq_lens has {len(bounds) - 1} samples but cu_seqlens {cu_seqlens.numel() - 1}")
    else:
        bounds = [int(x) for x in cu_seqlens.tolist()]
    if len(bounds) < 2 or any(end <= start for start, end in zip(bounds, bounds[1:])):
        raise ValueError(f"cu_seqlens must start a non-empty sample per entry, got {bounds}")
    return bounds


def stack_kept(kept: List[KeptTokens]):
    """Per-sample `KeptTokens` -> (index `[B, Hkv, C]` int64 with -1 padding, lens `[B, Hkv]` int32), C = the
    widest sample (host-known: no sync). One sample: views, no copy."""
    width = max(item.index.shape[1] for item in kept)
    if len(kept) == 1:
        return kept[0].index[None], kept[0].lens.to(torch.int32)[None]
    indices = [F.pad(item.index, (0, width - item.index.shape[1]), value=-1) if item.index.shape[1] < width
               else item.index for item in kept]
    return torch.stack(indices), torch.stack([item.lens for item in kept]).to(torch.int32)


def pack(kept: List[KeptTokens], k: torch.Tensor, v: torch.Tensor, bounds: List[int],
         cu_seqlens: Optional[torch.Tensor] = None, backend: str = "auto") -> CompressedKV:
    """Gather each sample's kept K/V into one right-padded `[B, Hkv, C, D]` cache, no host sync.

    Args:
        kept: one `KeptTokens` per sample (positions relative to the sample's start).
        k, v: `[N, Hkv, D]` the packed prompt keys / values.
        bounds: host `cu_seqlens` (`[B + 1]` ints).
        cu_seqlens: the same bounds as a tensor (the kernel reads sample starts and lengths from it); None builds
            it from `bounds`.

    On CUDA one Triton launch copies K, V and computes the sparsity (`kernels/decode/kv_select_triton.py`);
    `reference_pack` is the PyTorch definition.
    """
    index, lens = stack_kept(kept)
    if cu_seqlens is None:
        cu_seqlens = torch.tensor(bounds, dtype=torch.int64)
    k_out, v_out, sparsity = pack_kept(k, v, index, lens, cu_seqlens, backend=backend)
    return CompressedKV(k=k_out, v=v_out, lens=lens, index=index, sparsity=sparsity)


def reference_pack(kept: List[KeptTokens], k: torch.Tensor, v: torch.Tensor, bounds: List[int]) -> CompressedKV:
    """PyTorch reference of `pack`: one `index_select` per tensor over the `[N * Hkv, D]` rows (row of token t,
    head h = t * Hkv + h), padded slots zeroed, sparsity `1 - lens / T_b` from the host bounds."""
    batch = len(kept)
    num_kv_heads, head_dim = k.shape[1], k.shape[2]
    index, lens = stack_kept(kept)
    width = index.shape[-1]
    starts = torch.tensor(bounds[:-1], device=k.device, dtype=torch.int64)
    heads = torch.arange(num_kv_heads, device=k.device)[None, :, None]
    flat = ((starts[:, None, None] + index.clamp(min=0)) * num_kv_heads + heads).view(-1)
    outputs = []
    for x in (k, v):
        gathered = x.reshape(-1, head_dim).index_select(0, flat).view(batch, num_kv_heads, width, head_dim)
        outputs.append(gathered.masked_fill((index < 0)[..., None], 0))
    sparsity = torch.stack([1.0 - item.lens.float() / (end - start)
                            for item, start, end in zip(kept, bounds, bounds[1:])])
    return CompressedKV(k=outputs[0], v=outputs[1], lens=lens, index=index, sparsity=sparsity)
