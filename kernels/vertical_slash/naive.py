"""Vertical-Slash (MInference) index builder and mixed block + column sparse attention: the PyTorch reference.

A head's pattern is a set of vertical key columns (`vertical_idx`, key positions) and slash diagonals
(`slash_offsets`, offsets `q_pos - k_pos`). The attention kernel does not walk diagonals; like MInference it works
on rows of BLOCK = 64 queries and, per row, a list of 64-wide key blocks (covering the slashes) plus a list of
single key columns (the verticals those blocks miss). `naive_build_vertical_slash_index` turns the pattern into that
index (MInference's `convert_vertical_slash_indexes`, same rules, checked against a brute-force mask in the tests);
`naive_vertical_slash_attention` consumes it; `vertical_slash_pair_counts` counts exactly the causal (q, k) pairs it
computes (the sparsity statistic).

Differences from the reference system (deliberate, documented):

- Sparsity counts exactly the causal pairs computed: the masked upper halves of blocks that reach past the diagonal
  and the query rows past a sample's end are not counted (the reference counted every block as 64 x 64 and every
  column as 64, an approximation; its section 6, item 7).
- Verticals `v < end_m` that no block covers are always emitted as columns and columns are causally masked, so the
  index is correct even without offset 0 (the reference dropped verticals right of its last key range and relied
  on the forced main diagonal for causality).
- Variable-length batches (B >= 1, `cu_seqlens`) instead of one sample per call.
"""
from bisect import bisect_left, bisect_right
from typing import List, Optional, Tuple

import torch

from .._varlen import check_varlen

BLOCK = 64
#: free GPU memory kept back beyond the index itself, as a fraction of its size (the attention call builds
#: temporaries of up to ~1.5 x block_offset, the sparsity count works in bounded chunks)
INDEX_HEADROOM = 0.25
#: entries per int64 temporary in `vertical_slash_pair_counts` (rows are counted in chunks of this size)
PAIR_COUNT_CHUNK = 2**24


def index_widths(max_len: int, num_slash: int, num_vert: int) -> Tuple[int, int]:
    """Upper bounds on the widths of `block_offset` and `column_index` for patterns of `num_slash` offsets and
    `num_vert` verticals over samples of at most `max_len` tokens.

    A 64-query row r can hold at most `r + 1 <= n_rows` disjoint 64-wide key blocks (they start left of
    `64 (r + 1)`) and at most one per offset; its columns are distinct verticals `< max_len`.
    """
    n_rows = -(-max_len // BLOCK)
    return max(1, min(num_slash, n_rows)), max(1, min(num_vert, max_len))


def index_bytes(batch: int, heads: int, n_rows: int, block_width: int, column_width: int) -> int:
    """Bytes of the four int32 index tensors."""
    return 4 * batch * heads * n_rows * (2 + block_width + column_width)


def index_fits(need: int, device: torch.device, free_bytes: Optional[int] = None) -> bool:
    """Whether `need` bytes (+INDEX_HEADROOM) fit in the free memory of a CUDA `device` (other devices: always).

    `free_bytes` defaults to `torch.cuda.mem_get_info`."""
    if free_bytes is None:
        if torch.device(device).type != "cuda":
            return True
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return need * (1 + INDEX_HEADROOM) <= free_bytes


def check_index_fits(batch: int, heads: int, n_rows: int, block_width: int, column_width: int,
                     device: torch.device, free_bytes: Optional[int] = None) -> None:
    """Raise a ValueError naming the fix if the index would not fit in the free memory of a CUDA `device`.

    Called by both builders BEFORE allocating (an index past the free memory used to surface as an illegal memory
    access). `free_bytes` defaults to `torch.cuda.mem_get_info` for CUDA devices; CPU devices are not checked.
    """
    need = index_bytes(batch, heads, n_rows, block_width, column_width)
    if free_bytes is None and torch.device(device).type == "cuda":
        free_bytes = torch.cuda.mem_get_info(device)[0]
    if not index_fits(need, device, free_bytes):
        raise ValueError(
            f"the vertical-slash index for {batch} sample(s) x {heads} heads x {n_rows} rows of {BLOCK} queries "
            f"({block_width} block + {column_width} column slots per row, int32) needs {need / 2**30:.1f} GiB "
            f"(+{INDEX_HEADROOM:.0%} headroom) but only {free_bytes / 2**30:.1f} GiB of GPU memory is free: keep "
            f"fewer keys per head (lower vertical_size / slash_size for vertical_slash, alpha / min_budget for "
            f"flexprefill), prefill shorter prompts or fewer samples at once, or use a prefill method without this "
            f"index (block_sparse or dense); backend='naive' builds the same index"
        )


def _row_spans(end_m: int, offsets_desc: List[int]) -> List[Tuple[int, int]]:
    """Key spans `[start, end)` (multiples of 64 wide, disjoint, ascending) covering the slashes of one query row.

    Each offset `o < end_m` needs keys `[end_m - o - 64, end_m - o)` (clamped to start at 0: `e = max(end_m - o, 64)`).
    With offsets descending the range ends `e` come ascending; a range starting at or before the current span's
    end (`e <= span_end + 64`) extends the span by one 64-block, otherwise the span is closed and a new one opens.
    """
    spans: List[Tuple[int, int]] = []
    for offset in offsets_desc:
        if offset >= end_m:  # the whole diagonal lies left of key 0 for these rows
            continue
        end = max(end_m - offset, BLOCK)
        if not spans:
            spans.append((end - BLOCK, end))
        elif end <= spans[-1][1]:
            continue
        elif end <= spans[-1][1] + BLOCK:
            spans[-1] = (spans[-1][0], spans[-1][1] + BLOCK)
        else:
            spans.append((end - BLOCK, end))
    return spans


def naive_build_vertical_slash_index(
    cu_seqlens: torch.Tensor,
    vertical_idx: torch.Tensor,
    vertical_count: torch.Tensor,
    slash_offsets: torch.Tensor,
    slash_count: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn verticals and slashes into MInference's per-row block / column index (BLOCK = 64).

    Args:
        cu_seqlens: `[B+1]` int32 sample boundaries (only the lengths are used).
        vertical_idx: `[B, Hq, NV]` int key positions, the first `vertical_count [B, Hq]` valid, sorted ascending.
        slash_offsets: `[B, Hq, NS]` int offsets `q_pos - k_pos >= 0`, the first `slash_count [B, Hq]` valid,
            sorted DESCENDING (so the key ranges come in ascending order).

    Returns:
        block_count `[B, Hq, n_rows]` int32, block_offset `[B, Hq, n_rows, WB]` int32 (start key of each 64-wide
        key block, ascending), column_count `[B, Hq, n_rows]` int32, column_index `[B, Hq, n_rows, WC]` int32
        (ascending); `n_rows = ceil(max_len / 64)`, unused slots -1. Row r covers queries `64r .. 64r + 63`.
        The widths are what the rows use: `WB = max(1, block_count.max())`, `WC = max(1, column_count.max())`;
        so `WB <= min(NS, n_rows)` (a row's blocks are disjoint and start left of `64r + 64`) and
        `WC <= min(NV, max_len)` (distinct verticals `< L_b`), see `index_widths`. Raises a ValueError naming the
        parameters to lower before allocating an index that does not fit in free GPU memory (`check_index_fits`).
        Per row (`end_m = 64r + 64`, also for a partial last row): spans from `_row_spans`, emitted as 64-wide blocks
        at `start, start + 64, ...` (at most one block per valid offset); every valid vertical `v < end_m` outside
        the spans is a column; verticals `>= end_m` are dropped (all future for this row).
    """
    batch, heads = vertical_count.shape
    if tuple(slash_count.shape) != (batch, heads) or vertical_idx.shape[:2] != (batch, heads) \
            or slash_offsets.shape[:2] != (batch, heads) or cu_seqlens.numel() != batch + 1:
        raise ValueError(
            f"shape mismatch: vertical_idx {tuple(vertical_idx.shape)}, vertical_count {tuple(vertical_count.shape)}, "
            f"slash_offsets {tuple(slash_offsets.shape)}, slash_count {tuple(slash_count.shape)}, "
            f"cu_seqlens {tuple(cu_seqlens.shape)} (expected [B, Hq, *] and [B+1])"
        )
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    num_rows = -(-max(lens) // BLOCK)
    verticals, v_counts = vertical_idx.tolist(), vertical_count.tolist()
    offsets, s_counts = slash_offsets.tolist(), slash_count.tolist()
    rows = {}  # (b, h, row) -> (block starts, columns); the tensors are sized once every row is known
    for b in range(batch):
        for h in range(heads):
            head_verticals = verticals[b][h][: v_counts[b][h]]
            head_offsets = offsets[b][h][: s_counts[b][h]]
            for row in range(-(-lens[b] // BLOCK)):
                end_m = (row + 1) * BLOCK
                spans = _row_spans(end_m, head_offsets)
                starts = [s for span_start, span_end in spans for s in range(span_start, span_end, BLOCK)]
                span_starts = [span[0] for span in spans]
                columns = []
                for v in head_verticals[: bisect_left(head_verticals, end_m)]:
                    i = bisect_right(span_starts, v) - 1
                    if i < 0 or v >= spans[i][1]:
                        columns.append(v)
                rows[b, h, row] = (starts, columns)
    block_width = max([1] + [len(starts) for starts, _ in rows.values()])
    column_width = max([1] + [len(columns) for _, columns in rows.values()])
    check_index_fits(batch, heads, num_rows, block_width, column_width, vertical_idx.device)
    block_count = torch.zeros(batch, heads, num_rows, dtype=torch.int32)
    block_offset = torch.full((batch, heads, num_rows, block_width), -1, dtype=torch.int32)
    column_count = torch.zeros(batch, heads, num_rows, dtype=torch.int32)
    column_index = torch.full((batch, heads, num_rows, column_width), -1, dtype=torch.int32)
    for (b, h, row), (starts, columns) in rows.items():
        block_count[b, h, row] = len(starts)
        block_offset[b, h, row, : len(starts)] = torch.tensor(starts, dtype=torch.int32)
        column_count[b, h, row] = len(columns)
        column_index[b, h, row, : len(columns)] = torch.tensor(columns, dtype=torch.int32)
    device = vertical_idx.device
    return block_count.to(device), block_offset.to(device), column_count.to(device), column_index.to(device)


def naive_vertical_slash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    block_count: torch.Tensor,
    block_offset: torch.Tensor,
    column_count: torch.Tensor,
    column_index: torch.Tensor,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mixed block + column sparse attention over the index of `naive_build_vertical_slash_index`.

    Args:
        q: `[N, Hq, D]`; k, v: `[N, Hkv, D]` varlen packed (query head h reads KV head `h // (Hq // Hkv)`).
        cu_seqlens: `[B+1]` int32.
        block_count, block_offset, column_count, column_index: the index (shapes in the builder's docstring).
        scale: softmax scale. Default: `D ** -0.5`.
        out: optional `[N, Hq, D]` output written in place.

    Returns:
        `[N, Hq, D]` in q's dtype. Row r of sample b attends to keys `[s, s + 64)` of each of its blocks and to its
        columns, with the causal mask everywhere (blocks may reach past the diagonal; keys past the sample's end are
        never read). fp32 math. A query with no selected key gets 0.
    """
    lens = check_varlen(q, k, cu_seqlens, v)
    num_q_heads, num_kv_heads, head_dim = q.shape[1], k.shape[1], q.shape[2]
    scale = head_dim**-0.5 if scale is None else scale
    kv_of_head = torch.arange(num_q_heads, device=q.device) // (num_q_heads // num_kv_heads)  # [Hq]
    if out is None:
        out = torch.empty_like(q)
    starts = cu_seqlens.tolist()
    in_block = torch.arange(BLOCK, device=q.device)
    for b, length in enumerate(lens):
        q_s, k_s, v_s = (t[starts[b]: starts[b] + length] for t in (q, k, v))
        for row in range(-(-length // BLOCK)):
            n_blocks = int(block_count[b, :, row].max())
            n_columns = int(column_count[b, :, row].max())
            block_keys = (block_offset[b, :, row, :n_blocks, None].long() + in_block).flatten(1)  # [Hq, nb*64]
            block_ok = (torch.arange(n_blocks, device=q.device) < block_count[b, :, row, None])
            block_ok = block_ok.repeat_interleave(BLOCK, dim=1)
            column_keys = column_index[b, :, row, :n_columns].long()  # [Hq, nc]
            column_ok = torch.arange(n_columns, device=q.device) < column_count[b, :, row, None]
            keys = torch.cat([block_keys, column_keys], dim=1)  # [Hq, K]
            selected = torch.cat([block_ok, column_ok], dim=1)
            q_pos = torch.arange(row * BLOCK, min(row * BLOCK + BLOCK, length), device=q.device)  # [M]
            allowed = selected[:, None, :] & (keys[:, None, :] <= q_pos[None, :, None])  # [Hq, M, K]
            gather = keys.clamp(0, length - 1)
            k_sel = k_s[gather, kv_of_head[:, None]].float()  # [Hq, K, D]
            v_sel = v_s[gather, kv_of_head[:, None]].float()
            k_sel = torch.where(selected[..., None], k_sel, 0.0)  # unselected slots may point at anything
            v_sel = torch.where(selected[..., None], v_sel, 0.0)
            logits = torch.einsum("mhd,hkd->hmk", q_s[q_pos].float(), k_sel) * scale
            logits = logits.masked_fill(~allowed, float("-inf"))
            probs = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # all-masked rows -> 0
            out[starts[b] + q_pos] = torch.einsum("hmk,hkd->mhd", probs, v_sel).to(out.dtype)
    return out


def canonical_index(
    block_count: torch.Tensor, block_offset: torch.Tensor, column_count: torch.Tensor, column_index: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The index with every slot past its row's count set to -1 (new tensors), as the reference builder pads it.

    The Triton builder leaves those slots unwritten (whatever the allocator held); no kernel reads them. Two
    indices of the same widths describe the same pattern exactly when their canonical forms are equal.
    """
    blocks = torch.arange(block_offset.shape[-1], device=block_offset.device) < block_count[..., None]
    columns = torch.arange(column_index.shape[-1], device=column_index.device) < column_count[..., None]
    return (block_count, torch.where(blocks, block_offset, -1), column_count,
            torch.where(columns, column_index, -1))


def _triangle_prefix(u: torch.Tensor) -> torch.Tensor:
    """`sum_{j=1}^{u} min(j, 64)` for integer tensors `u` (0 for `u <= 0`)."""
    u = u.clamp(min=0)
    return torch.where(u <= BLOCK, u * (u + 1) // 2, BLOCK * (BLOCK + 1) // 2 + BLOCK * (u - BLOCK))


def vertical_slash_pair_counts(
    cu_seqlens: torch.Tensor,
    block_count: torch.Tensor,
    block_offset: torch.Tensor,
    column_count: torch.Tensor,
    column_index: torch.Tensor,
) -> torch.Tensor:
    """Exact number of causal (query, key) pairs the index computes, per sample and head: `[B, Hq]` int64.

    For a block starting at key `s` and the valid queries `a .. e-1` of its row, the pairs are
    `sum_q clamp(q - s + 1, 0, 64)`; for a column `c`, `#{q >= c}`. Blocks of one row are disjoint and columns lie
    outside them (builder invariant), so the counts add up to the size of the union.
    """
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long().to(block_count.device)  # [B]
    num_rows = block_count.shape[-1]
    row_start = torch.arange(num_rows, device=block_count.device) * BLOCK  # [R]
    row_end = torch.minimum(row_start[None, :] + BLOCK, lens[:, None])  # [B, R] (<= row_start past the end)
    row_end = torch.maximum(row_end, row_start[None, :])[..., None]  # [B, R, 1]
    first = row_start[None, :, None]  # [1, R, 1]
    n_blocks = int(block_count.max()) if block_count.numel() else 0
    n_columns = int(column_count.max()) if column_count.numel() else 0
    slots_b = torch.arange(n_blocks, device=block_count.device)
    slots_c = torch.arange(n_columns, device=block_count.device)
    pairs = torch.zeros(block_count.shape[:2], dtype=torch.int64, device=block_count.device)
    # One head and a chunk of rows at a time: [B, rows, n] int64 temporaries of about PAIR_COUNT_CHUNK entries,
    # not [B, Hq, R, n] (at 128K tokens the column slots alone can be 2048 rows x 131072 per head).
    chunk = max(1, PAIR_COUNT_CHUNK // max(1, block_count.shape[0] * max(n_blocks, n_columns)))
    for h in range(block_count.shape[1]):
        for r0 in range(0, num_rows, chunk):
            rows = slice(r0, r0 + chunk)
            starts = block_offset[:, h, rows, :n_blocks].long()
            block_pairs = _triangle_prefix(row_end[:, rows] - starts) - _triangle_prefix(first[:, rows] - starts)
            block_ok = slots_b < block_count[:, h, rows, None]
            columns = column_index[:, h, rows, :n_columns].long()
            column_pairs = (row_end[:, rows] - torch.maximum(first[:, rows], columns)).clamp(min=0)
            column_ok = slots_c < column_count[:, h, rows, None]
            # where, not a product: slots past a count hold arbitrary values (the Triton builder leaves them)
            pairs[:, h] += (torch.where(block_ok, block_pairs, 0).sum(dim=(-1, -2))
                            + torch.where(column_ok, column_pairs, 0).sum(dim=(-1, -2)))
    return pairs
