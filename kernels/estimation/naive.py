"""Pattern estimation for sparse prefill: the readable PyTorch reference (fp32 math).

Three primitives, shared by Vertical-Slash, FlexPrefill and Block-Sparse:

- `naive_last_window_sums`: the last `w` queries of each sample attend (causally, softmax in fp32) to all of its
  keys; the probabilities are summed per key column ("vertical") and per diagonal offset ("slash").
  Only the window's `[G, w, L]` probabilities of one KV-head group exist at a time: never an `L x L` matrix.
- `naive_pooled_block_scores`: mean-pooled queries x mean-pooled keys per block (Block-Sparse estimation);
  `[G, nb, nb]` with `nb = ceil(L / chunk_size)`.
- `stable_topk` (in `topk.py`): the `k` best entries per row with a fixed tie rule (equal scores -> lower index
  first), so the same input always gives the same selection on every backend.

Differences from the reference system (deliberate, documented):

- logits and softmax are computed in fp32 and kept in fp32 (the reference cast the probabilities back to the
  model dtype before summing); rankings are the same up to bf16 rounding ties.
- block pooling divides by `chunk_size` (zero padding counts, as in the reference); for the last, partial block
  this scales all its scores by the same positive factor, so the ranking equals that of a true mean.
"""
from typing import Optional, Tuple

import torch

from .._varlen import check_varlen
from .._window import causal_window_probs


def naive_window_probs(q_window: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal softmax of the last `w` queries of ONE sample against all its `L` keys, for one GQA group.

    Args:
        q_window: `[G, w, D]` the last `w` queries (positions `L - w .. L - 1`) of the G query heads of a group.
        k: `[L, D]` the keys of the group's KV head.
        scale: softmax scale.

    Returns:
        `[G, w, L]` fp32 probabilities; entry `(g, i, j)` is 0 for future keys `j > L - w + i`.
    """
    return causal_window_probs(q_window, k[None], scale)[0]  # one KV head: [1, G, w, L] -> [G, w, L]


def diagonal_sums(probs: torch.Tensor) -> torch.Tensor:
    """Sum `probs [G, w, L]` (rows = the last `w` queries of an `L`-token sample) along each diagonal.

    Returns `[G, L]`: entry `o` = sum over rows `i` of `probs[:, i, (L - w + i) - o]` (offset `o = q_pos - k_pos`,
    0 = the main diagonal). Done with a strided view instead of an `L x L` matrix: after flipping the key axis,
    row `i` holds offset `o` at column `w - 1 - i + o`, i.e. at flat position `(w - 1) + i * (L + w - 1) + o` of a
    `[w, L + w]` buffer (zero-padded on the right for keys left of position 0).
    """
    heads, window, length = probs.shape
    flipped = torch.zeros(heads, window, length + window, dtype=probs.dtype, device=probs.device)
    flipped[:, :, :length] = probs.flip(-1)
    by_offset = flipped.as_strided(
        size=(heads, window, length),
        stride=(window * (length + window), length + window - 1, 1),
        storage_offset=window - 1,
    )
    return by_offset.sum(dim=1)


def naive_last_window_sums(
    q: torch.Tensor,
    k: torch.Tensor,
    cu_seqlens: torch.Tensor,
    window: int,
    scale: Optional[float] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Vertical and slash sums of the last-window attention probabilities of every sample and query head.

    Args:
        q: `[N, Hq, D]`, k: `[N, Hkv, D]` varlen packed; `cu_seqlens [B+1]` int32.
        window: number of last queries used, clamped per sample to `w_b = min(window, L_b)`.
        scale: softmax scale. Default: `D ** -0.5`.

    Returns:
        vertical: `[B, Hq, max_len]` fp32, `vertical[b, h, j]` = sum over the `w_b` queries of P(key j); 0 for
            `j >= L_b`. Each row sums to `w_b`.
        slash: `[B, Hq, max_len]` fp32, `slash[b, h, o]` = sum over the `w_b` queries `i` of P(key `pos_i - o`);
            0 for `o >= L_b`. Each row sums to `w_b`.
    """
    lens = check_varlen(q, k, cu_seqlens)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    num_q_heads, num_kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    group = num_q_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    max_len = max(lens)
    vertical = torch.zeros(len(lens), num_q_heads, max_len, dtype=torch.float32, device=q.device)
    slash = torch.zeros_like(vertical)
    starts = cu_seqlens.tolist()
    for b, length in enumerate(lens):
        start, w = starts[b], min(window, length)
        for kv in range(num_kv_heads):  # one GQA group at a time bounds memory to [G, w, L]
            heads = slice(kv * group, (kv + 1) * group)
            q_window = q[start + length - w: start + length, heads].transpose(0, 1)  # [G, w, D]
            probs = naive_window_probs(q_window, k[start: start + length, kv], scale)  # [G, w, L]
            vertical[b, heads, :length] = probs.sum(dim=1)
            slash[b, heads, :length] = diagonal_sums(probs)
    return vertical, slash


def naive_pooled_block_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    cu_seqlens: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """Block-Sparse estimation: dot(mean query of block m, mean key of block n) per sample and query head.

    Args:
        q: `[N, Hq, D]`, k: `[N, Hkv, D]` varlen packed; `cu_seqlens [B+1]` int32.
        chunk_size: tokens per block.

    Returns:
        `[B, Hq, nb, nb]` fp32 with `nb = ceil(max_len / chunk_size)`; no scale, no softmax, no mask (the method
        applies the block-causal mask). Pooling sums the valid tokens of a block and divides by `chunk_size`
        (tokens past the sample's end count as zeros). Blocks past a sample's end score 0.
    """
    lens = check_varlen(q, k, cu_seqlens)
    num_q_heads, num_kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    group = num_q_heads // num_kv_heads
    num_blocks = -(-max(lens) // chunk_size)
    scores = torch.zeros(len(lens), num_q_heads, num_blocks, num_blocks, dtype=torch.float32, device=q.device)
    starts = cu_seqlens.tolist()
    for b, length in enumerate(lens):
        padded = num_blocks * chunk_size
        q_pad = q.new_zeros(padded, num_q_heads, head_dim, dtype=torch.float32)
        k_pad = k.new_zeros(padded, num_kv_heads, head_dim, dtype=torch.float32)
        q_pad[:length] = q[starts[b]: starts[b] + length].float()
        k_pad[:length] = k[starts[b]: starts[b] + length].float()
        q_pool = q_pad.view(num_blocks, chunk_size, num_q_heads, head_dim).sum(1) / chunk_size  # [nb, Hq, D]
        k_pool = k_pad.view(num_blocks, chunk_size, num_kv_heads, head_dim).sum(1) / chunk_size  # [nb, Hkv, D]
        q_pool = q_pool.view(num_blocks, num_kv_heads, group, head_dim)
        scores[b] = torch.einsum("mhgd,nhd->hgmn", q_pool, k_pool).reshape(num_q_heads, num_blocks, num_blocks)
    return scores
