"""SnapKV / Ada-SnapKV selection and packing: the readable PyTorch references of `kv_select_triton.py`.

* `naive_pool_keys`: same-length average pooling of the window scores, prefix / local window forced to +inf, and
  the int64 ranking keys of the pooled scores (order = score descending, then flat index `h * T + t` ascending:
  ties go to the earlier head, then the earlier token).
* `naive_pack_kept`: gather the kept tokens' K / V rows of a packed batch into a right-padded cache, zeros beyond
  each head's length, and the measured sparsity.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

from ..estimation.topk import ordered_keys


def flat_ordered_keys(scores: torch.Tensor) -> torch.Tensor:
    """`[H, T]` fp32 scores -> `[H, T]` int64 keys, distinct, ordered as (score descending, flat index `h * T + t`
    ascending) when sorted descending (`kernels/estimation/topk.py:ordered_keys` over the flattened row). Within
    one head this is the (score, position) order, so the same keys serve the per-head and the global selection."""
    num_heads, seq_len = scores.shape
    return ordered_keys(scores.reshape(1, num_heads * seq_len)).view(num_heads, seq_len)


def naive_pool_and_force(scores: torch.Tensor, kernel_size: int, local_window: int,
                         prefix_tokens: int) -> torch.Tensor:
    """Smooth `[H, T]` scores with a same-length average pool (zero padding counted, odd `kernel_size`), then force
    the first `prefix_tokens` and the last `local_window` tokens to +inf so they are always kept."""
    pooled = F.avg_pool1d(
        scores[:, None, :], kernel_size=kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=True
    )[:, 0, :]
    seq_len = pooled.shape[-1]
    pooled[:, : min(prefix_tokens, seq_len)] = float("inf")
    if local_window > 0:
        pooled[:, max(seq_len - local_window, 0):] = float("inf")
    return pooled


def naive_pool_keys(scores: torch.Tensor, kernel_size: int, local_window: int, prefix_tokens: int,
                    pool: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """`[H, T]` fp32 raw scores -> (pooled `[H, T]` fp32, keys `[H, T]` int64 = `flat_ordered_keys(pooled)`).

    pool: False skips pooling and forcing (keys of already pooled scores; `pooled` is then `scores` as fp32)."""
    pooled = naive_pool_and_force(scores.float(), kernel_size, local_window, prefix_tokens) if pool else scores.float()
    return pooled, flat_ordered_keys(pooled)


def naive_pack_kept(k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, lens: torch.Tensor,
                    cu_seqlens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather kept K / V rows of a packed batch into a right-padded cache.

    Args:
        k, v: `[N, Hkv, D]` packed prompt keys / values.
        index: `[B, Hkv, C]` int64 kept positions relative to the sample start, -1 in unused slots.
        lens: `[B, Hkv]` int kept tokens per head (the slots before the first -1).
        cu_seqlens: `[B + 1]` int, sample b owns rows `cu_seqlens[b] : cu_seqlens[b + 1]` (k's device).

    Returns:
        (k_out, v_out `[B, Hkv, C, D]` with zeros in unused slots, sparsity `[B, Hkv]` fp32 `1 - lens / T_b`).
    """
    batch, num_kv_heads, width = index.shape
    head_dim = k.shape[2]
    starts = cu_seqlens[:-1].to(device=k.device, dtype=torch.int64)
    heads = torch.arange(num_kv_heads, device=k.device)[None, :, None]
    rows = ((starts[:, None, None] + index.clamp(min=0)) * num_kv_heads + heads).reshape(-1)
    outputs = []
    for x in (k, v):
        gathered = x.reshape(-1, head_dim)[rows].view(batch, num_kv_heads, width, head_dim)
        outputs.append(gathered.masked_fill((index < 0)[..., None], 0))
    seq_lens = (cu_seqlens[1:] - cu_seqlens[:-1]).to(device=k.device, dtype=torch.float32)
    sparsity = 1.0 - lens.float() / seq_lens[:, None]
    return outputs[0], outputs[1], sparsity


def naive_compact_kept(keys: torch.Tensor, cut: torch.Tensor, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Positions whose key reaches the head's cut, in positional order.

    Args:
        keys: `[H, T]` int64 ranking keys; cut: `[H]` or `[H, 1]` int64, head h keeps the keys `>= cut[h]`.
        width: columns of the result (`<= T`, at least the largest count; host-known, so no sync).

    Returns:
        (index `[H, width]` int64 kept positions ascending, -1 after the head's count; lens `[H]` int32).
    """
    num_heads, seq_len = keys.shape
    mask = keys >= cut.reshape(num_heads, 1)
    positions = torch.arange(seq_len, device=keys.device).expand(num_heads, seq_len)
    ordered = torch.sort(torch.where(mask, positions, seq_len), dim=-1).values[:, :width]  # dropped: past the end
    return torch.where(ordered == seq_len, -1, ordered), mask.sum(dim=-1).to(torch.int32)


def naive_keep_top(scores: torch.Tensor, count: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The `count` best scores of each head (ties: the earlier token), in positional order.

    Args:
        scores: `[H, T]` fp32, no NaN; count: `1 <= count <= T`.

    Returns:
        (index `[H, count]` int64 ascending positions, lens `[H]` int32 = count). `torch.topk` on the distinct
        int64 ranking keys, then a sort of the kept positions: the same set as a stable descending sort cut at
        `count`.
    """
    keep = torch.topk(flat_ordered_keys(scores), count, dim=-1, sorted=False).indices
    lens = torch.full((scores.shape[0],), count, dtype=torch.int32, device=scores.device)
    return torch.sort(keep, dim=-1).values, lens


def naive_ada_cuts(keys: torch.Tensor, floor: int, total: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Ada-SnapKV's per-head key cuts: head h keeps exactly the keys `>= cut[h]`.

    Args:
        keys: `[H, T]` int64 distinct ranking keys (`flat_ordered_keys`: score descending, then flat index
            `h * T + t` ascending, so ties go to the earlier head, then the earlier token).
        floor: tokens every head keeps at least (`0 <= floor <= T`); total: tokens kept over all heads
            (`H * floor <= total <= H * T`).

    Returns:
        (cut `[H]` int64, width: 0-dim int64 tensor = the largest per-head count). `cut[h] = min(f_h, g)` with
        `f_h` the head's `floor`-th largest key (int64 max when `floor == 0`) and `g` the `(total - H * floor)`-th
        largest key of the rest (the keys below their head's `f_h`; int64 max when no slot is shared). Full
        descending sorts: the readable definition of `triton_ada_cuts`' radix select.
    """
    num_heads, seq_len = keys.shape
    _check_ada_budget(num_heads, seq_len, floor, total)
    top = torch.iinfo(torch.int64).max
    ordered = torch.sort(keys, dim=-1, descending=True).values
    head_cut = ordered[:, floor - 1] if floor > 0 else torch.full((num_heads,), top, device=keys.device)
    extra = total - floor * num_heads
    cut = head_cut
    if extra > 0:
        rest = keys.masked_fill(keys >= head_cut[:, None], torch.iinfo(torch.int64).min)  # below every real key
        shared = torch.sort(rest.flatten(), descending=True).values[extra - 1]
        cut = torch.minimum(head_cut, shared)
    width = (keys >= cut[:, None]).sum(dim=-1).max()
    return cut, width


def _check_ada_budget(num_heads: int, seq_len: int, floor: int, total: int) -> None:
    if not 0 <= floor <= seq_len or not num_heads * floor <= total <= num_heads * seq_len:
        raise ValueError(f"Ada budget out of range: need 0 <= floor <= T={seq_len} and H * floor <= total <= H * T "
                         f"(H={num_heads}), got floor={floor}, total={total}")
