"""Block-sparse causal attention over a per-query-block list of key blocks: the PyTorch reference.

Query block m (rows `m * chunk .. m * chunk + chunk - 1` of its sample) attends to the keys of the first
`block_count` key blocks listed in `block_index`, with the causal mask inside blocks; fp32 math.
`block_sparse_pair_counts` counts exactly the causal (q, k) pairs that computes (the sparsity statistic).
"""
from typing import Optional

import torch

from .._varlen import check_varlen


def naive_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    block_index: torch.Tensor,
    block_count: torch.Tensor,
    chunk_size: int,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Block-sparse attention, varlen packed.

    Args:
        q: `[N, Hq, D]`; k, v: `[N, Hkv, D]` (query head h reads KV head `h // (Hq // Hkv)`).
        cu_seqlens: `[B+1]` int32.
        block_index: `[B, Hq, n_qblocks, max_k]` int32 key-block ids (units of `chunk_size`), the first
            `block_count` valid (sorted ascending), -1 padded; `n_qblocks = ceil(max_len / chunk_size)`.
        block_count: `[B, Hq, n_qblocks]` int32.
        chunk_size: tokens per query block and per key block.
        scale: softmax scale. Default: `D ** -0.5`.
        out: optional `[N, Hq, D]` output written in place.

    Returns:
        `[N, Hq, D]` in q's dtype. Keys right of a query (inside the diagonal block, or in listed blocks right of
        it) are masked; keys past the sample's end are never read. A query with no selected key gets 0.
    """
    lens = check_varlen(q, k, cu_seqlens, v)
    num_q_heads, num_kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    kv_of_head = torch.arange(num_q_heads, device=q.device) // (num_q_heads // num_kv_heads)  # [Hq]
    if out is None:
        out = torch.empty_like(q)
    starts = cu_seqlens.tolist()
    in_block = torch.arange(chunk_size, device=q.device)
    for b, length in enumerate(lens):
        q_s, k_s, v_s = (t[starts[b]: starts[b] + length] for t in (q, k, v))
        for m in range(-(-length // chunk_size)):
            n_sel = int(block_count[b, :, m].max())
            slot_ok = torch.arange(n_sel, device=q.device) < block_count[b, :, m, None]  # [Hq, n]
            keys = (block_index[b, :, m, :n_sel, None].long() * chunk_size + in_block).flatten(1)  # [Hq, n*chunk]
            selected = slot_ok.repeat_interleave(chunk_size, dim=1) & (keys >= 0) & (keys < length)
            q_pos = torch.arange(m * chunk_size, min(m * chunk_size + chunk_size, length), device=q.device)  # [M]
            allowed = selected[:, None, :] & (keys[:, None, :] <= q_pos[None, :, None])  # [Hq, M, K]
            gather = keys.clamp(0, length - 1)
            k_sel = torch.where(selected[..., None], k_s[gather, kv_of_head[:, None]].float(), 0.0)  # [Hq, K, D]
            v_sel = torch.where(selected[..., None], v_s[gather, kv_of_head[:, None]].float(), 0.0)
            logits = torch.einsum("mhd,hkd->hmk", q_s[q_pos].float(), k_sel) * scale
            probs = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
            out[starts[b] + q_pos] = torch.einsum("hmk,hkd->mhd", probs, v_sel).to(out.dtype)
    return out


def block_sparse_pair_counts(
    cu_seqlens: torch.Tensor,
    block_index: torch.Tensor,
    block_count: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """Exact number of causal (query, key) pairs the block index computes, per sample and head: `[B, Hq]` int64.

    For query block m with valid rows `a .. e-1` and a listed key block n: `n < m` gives `(e - a) * chunk` pairs,
    `n == m` the causal triangle `r (r + 1) / 2` with `r = e - a`, `n > m` nothing. Listed blocks must be distinct.
    """
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long().to(block_index.device)  # [B]
    num_qblocks = block_count.shape[-1]
    m = torch.arange(num_qblocks, device=block_index.device)
    rows = (torch.minimum((m[None, :] + 1) * chunk_size, lens[:, None]) - m[None, :] * chunk_size).clamp(min=0)
    rows = rows[:, None, :, None]  # [B, 1, nq, 1] valid query rows per block
    # the whole index width, not cut at max(block_count): that cut was a device -> host read on the prefill path
    # (slots past a row's count are masked by `ok` below either way, so the counts are the same)
    n_sel = block_index.shape[-1]
    key_block = block_index.long()
    qblock = m[None, None, :, None]
    diagonal_pairs = torch.where(key_block == qblock, rows * (rows + 1) // 2, 0)
    pairs = torch.where(key_block < qblock, rows * chunk_size, diagonal_pairs)
    ok = (torch.arange(n_sel, device=key_block.device) < block_count[..., None]) & (key_block >= 0)
    return (pairs * ok).sum(dim=(-1, -2))
