"""Vertical-slash prefill on the GPU: the index builder and the mixed block + column attention kernel (Triton).

Same signatures as `naive.naive_build_vertical_slash_index` and `naive.naive_vertical_slash_attention`; the index
format and the rules are in docs/architecture.md ("Prefill primitives"). Rows are 64 queries; a row visits
64-wide key blocks (where the slashes cross it, merged) and individual key columns (the verticals not already
inside a block).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._triton_tile import LOG2E, check_prefill_inputs, max_seqlen, online_softmax_step
from .naive import check_index_fits, index_bytes, index_widths

BLOCK = 64  # rows per index row and width of a slash block (MInference format)
# Largest index (bytes, at its upper-bound widths) built in one pass without reading the widths back. At the
# reference budgets (512 verticals and slashes) a 128K-token sample with 32 heads needs 268 MB at the bounds, about
# what the exact widths give at that length (rows late in the sample reach ~NS blocks).
SINGLE_PASS_MAX_BYTES = 1 << 30


@triton.jit
def index_row_offset(b, h, row, stride_b, stride_h, stride_r):
    """Element offset of index row (b, h, row) in 64 bits: `h * stride_h` alone passes 2**31 at 128K tokens
    (32 heads x 2048 rows x 32768 slots), which wrapped around in int32 (the illegal memory access)."""
    return b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h + row.to(tl.int64) * stride_r


@triton.jit
def _build_index(cu_seqlens, Vert, VertCount, Slash, SlashCount, BlockCount, BlockOffset, ColumnCount, ColumnIndex,
                 num_heads, n_rows, stride_vb, stride_vh, stride_sb, stride_sh,
                 stride_bob, stride_boh, stride_bor, stride_cib, stride_cih, stride_cir, block_width, column_width,
                 BLOCK_R: tl.constexpr, STORE: tl.constexpr):
    """One lane per query row (MInference's one thread per row): a merge walk over the head's slashes and verticals.

    Run twice: with STORE=False it only writes the counts (so the host can size the index to the widest row), with
    STORE=True it writes the entries too (slots past `block_width` / `column_width` are never written).

    Each step, every row consumes its next vertical if that vertical lies left of its current span's end (so its
    fate is known: column, or covered by the span) or if no slash is left; otherwise its next slash, which opens a
    new span, extends the current one by 64 keys, or falls inside it.
    """
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    seq_len = tl.load(cu_seqlens + b + 1) - tl.load(cu_seqlens + b)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = (rows < n_rows) & (rows * 64 < seq_len)
    end_m = (rows + 1) * 64
    n_vert = tl.load(VertCount + bh)
    n_slash = tl.load(SlashCount + bh)
    vert = Vert + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    slash = Slash + b.to(tl.int64) * stride_sb + h.to(tl.int64) * stride_sh
    block_offset = BlockOffset + index_row_offset(b, h, rows, stride_bob, stride_boh, stride_bor)
    column_index = ColumnIndex + index_row_offset(b, h, rows, stride_cib, stride_cih, stride_cir)

    v_next = tl.zeros([BLOCK_R], dtype=tl.int32)
    s_next = tl.zeros([BLOCK_R], dtype=tl.int32)
    span_start = tl.full([BLOCK_R], -1, dtype=tl.int32)
    span_end = tl.full([BLOCK_R], -1, dtype=tl.int32)  # -1: no span yet
    n_blocks = tl.zeros([BLOCK_R], dtype=tl.int32)
    n_cols = tl.zeros([BLOCK_R], dtype=tl.int32)
    for _ in range(n_vert + n_slash):
        v_left = v_next < n_vert
        s_left = s_next < n_slash
        v = tl.load(vert + v_next, mask=v_left, other=0)
        o = tl.load(slash + s_next, mask=s_left, other=0)
        take_v = v_left & ((v < span_end) | ~s_left)
        is_col = take_v & (v < end_m) & ~((v >= span_start) & (v < span_end))
        if STORE:
            tl.store(column_index + n_cols, v, mask=is_col & row_ok & (n_cols < column_width))
        n_cols += is_col.to(tl.int32)
        v_next += take_v.to(tl.int32)

        take_s = s_left & ~take_v
        valid = take_s & (o < end_m)
        e = tl.maximum(end_m - o, 64)
        opens = valid & ((span_end < 0) | (e > span_end + 64))
        extends = valid & ~opens & (e > span_end)
        if STORE:
            tl.store(block_offset + n_blocks, tl.where(opens, e - 64, span_end),
                     mask=(opens | extends) & row_ok & (n_blocks < block_width))
        n_blocks += (opens | extends).to(tl.int32)
        span_start = tl.where(opens, e - 64, span_start)
        span_end = tl.where(opens, e, tl.where(extends, span_end + 64, span_end))
        s_next += take_s.to(tl.int32)
    row_ptr = bh.to(tl.int64) * n_rows + rows
    tl.store(BlockCount + row_ptr, tl.where(row_ok, n_blocks, 0), mask=rows < n_rows)
    tl.store(ColumnCount + row_ptr, tl.where(row_ok, n_cols, 0), mask=rows < n_rows)


def triton_build_vertical_slash_index(
    cu_seqlens: torch.Tensor,
    vertical_idx: torch.Tensor,
    vertical_count: torch.Tensor,
    slash_offsets: torch.Tensor,
    slash_count: torch.Tensor,
    max_len: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build MInference's per-row index on the device (same rules and outputs as naive_build_vertical_slash_index).

    Args:
        cu_seqlens: [B+1] int32.
        vertical_idx: [B, Hq, NV] int key positions; the first vertical_count [B, Hq] valid, ascending.
        slash_offsets: [B, Hq, NS] int offsets q_pos - k_pos; the first slash_count [B, Hq] valid, descending.
    Returns:
        block_count [B, Hq, n_rows], block_offset [B, Hq, n_rows, WB], column_count [B, Hq, n_rows],
        column_index [B, Hq, n_rows, WC] (int32, -1 padded), n_rows = ceil(max_len / 64),
        WB = max(1, max block_count) <= min(NS, n_rows), WC = max(1, max column_count) <= min(NV, max_len).

    max_len: the longest sample's length when the caller knows it on the host (the library's select does). Then
        nothing here reads the device: if the index at its upper-bound widths (`index_widths`) takes at most
        `SINGLE_PASS_MAX_BYTES`, ONE pass counts and fills it (WB, WC = the bounds; rows are -1 padded past their
        counts, as always). Otherwise, and when max_len is None, a first pass counts, the widths are read back
        (one sync) and sized to the widest row, a second pass fills.
    `check_index_fits` raises before an index that would not fit in free GPU memory is allocated.
    """
    batch, heads, num_vert = vertical_idx.shape
    num_slash = slash_offsets.shape[-1]
    device = vertical_idx.device
    cu_seqlens = cu_seqlens.to(device=device, dtype=torch.int32)
    longest = max_seqlen(cu_seqlens) if max_len is None else int(max_len)
    n_rows = -(-longest // BLOCK)
    vertical_idx = vertical_idx.to(torch.int32).contiguous()
    slash_offsets = slash_offsets.to(torch.int32).contiguous()
    vertical_count = vertical_count.to(torch.int32).contiguous()
    slash_count = slash_count.to(torch.int32).contiguous()
    block_count = torch.empty(batch, heads, n_rows, dtype=torch.int32, device=device)
    column_count = torch.empty_like(block_count)
    block_r = 128 if n_rows >= 128 else max(16, triton.next_power_of_2(n_rows))
    grid = (triton.cdiv(n_rows, block_r), batch * heads)

    def walk(block_offset, column_index, store):
        _build_index[grid](
            cu_seqlens, vertical_idx, vertical_count, slash_offsets, slash_count,
            block_count, block_offset, column_count, column_index, heads, n_rows,
            vertical_idx.stride(0), vertical_idx.stride(1), slash_offsets.stride(0), slash_offsets.stride(1),
            block_offset.stride(0), block_offset.stride(1), block_offset.stride(2),
            column_index.stride(0), column_index.stride(1), column_index.stride(2),
            block_offset.shape[-1], column_index.shape[-1], BLOCK_R=block_r, STORE=store, num_warps=4,
        )

    if max_len is not None:
        block_width, column_width = index_widths(longest, num_slash, num_vert)
        if index_bytes(batch, heads, n_rows, block_width, column_width) <= SINGLE_PASS_MAX_BYTES:
            check_index_fits(batch, heads, n_rows, block_width, column_width, device)
            block_offset = torch.full((batch, heads, n_rows, block_width), -1, dtype=torch.int32, device=device)
            column_index = torch.full((batch, heads, n_rows, column_width), -1, dtype=torch.int32, device=device)
            walk(block_offset, column_index, True)
            return block_count, block_offset, column_count, column_index
    unused = torch.empty(1, 1, 1, 1, dtype=torch.int32, device=device)  # no entries are written when counting
    walk(unused, unused, False)
    block_width = max(1, int(block_count.max())) if block_count.numel() else 1
    column_width = max(1, int(column_count.max())) if column_count.numel() else 1
    check_index_fits(batch, heads, n_rows, block_width, column_width, device)
    block_offset = torch.full((batch, heads, n_rows, block_width), -1, dtype=torch.int32, device=device)
    column_index = torch.full((batch, heads, n_rows, column_width), -1, dtype=torch.int32, device=device)
    walk(block_offset, column_index, True)
    return block_count, block_offset, column_count, column_index


@triton.jit
def _vertical_slash_fwd(
    Q, K, V, Out, cu_seqlens, BlockCount, FullCount, BlockOffset, ColumnCount, ColumnIndex,
    qk_scale, num_q_heads, n_rows,
    stride_qn, stride_qh, stride_kn, stride_kh, stride_vn, stride_vh, stride_on, stride_oh,
    stride_bcb, stride_bch, stride_bob, stride_boh, stride_bor, stride_ccb, stride_cch,
    stride_cib, stride_cih, stride_cir,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row = n_rows - 1 - tl.program_id(0)  # heavy rows first
    bh = tl.program_id(1)
    b = bh // num_q_heads
    h = bh % num_q_heads
    kv_h = h // GROUP
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    start = seq_start.to(tl.int64)  # 64-bit row offsets: packed batches may exceed 2**31 elements
    q_first = row * BLOCK_M
    if q_first >= seq_len:
        return

    offs_m = q_first + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    row_ok = offs_m < seq_len
    q = tl.load(Q + start * stride_qn + offs_m[:, None] * stride_qn + h * stride_qh + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    q = (q * qk_scale).to(q.dtype)
    k_base = K + start * stride_kn + kv_h * stride_kh
    v_base = V + start * stride_vn + kv_h * stride_vh
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # 1) slash blocks: 64 consecutive keys from each listed start (starts need not be 64-aligned). Blocks ending
    #    left of this row (a sorted prefix, counted on the host) need no mask: a branch-free, pipelined loop.
    n_blocks = tl.load(BlockCount + index_row_offset(b, h, row, stride_bcb, stride_bch, 1))
    n_full = tl.load(FullCount + index_row_offset(b, h, row, stride_bcb, stride_bch, 1))
    offsets = BlockOffset + index_row_offset(b, h, row, stride_bob, stride_boh, stride_bor)
    for e in range(n_full):
        k_pos = tl.load(offsets + e) + offs_n
        k = tl.load(k_base + k_pos[:, None] * stride_kn + offs_d[None, :])
        s = tl.dot(q, tl.trans(k))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + k_pos[:, None] * stride_vn + offs_d[None, :])
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    for e in range(n_full, n_blocks):
        k_pos = tl.load(offsets + e) + offs_n
        key_ok = (k_pos >= 0) & (k_pos < seq_len)
        k_ptrs = k_base + k_pos[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = v_base + k_pos[:, None] * stride_vn + offs_d[None, :]
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, k_pos, offs_m, key_ok, True)

    # 2) vertical columns, gathered BLOCK_N at a time.
    n_cols = tl.load(ColumnCount + index_row_offset(b, h, row, stride_ccb, stride_cch, 1))
    columns = ColumnIndex + index_row_offset(b, h, row, stride_cib, stride_cih, stride_cir)
    for c in range(0, n_cols, BLOCK_N):
        slot = c + offs_n
        k_pos = tl.load(columns + slot, mask=slot < n_cols, other=0)
        key_ok = (slot < n_cols) & (k_pos >= 0) & (k_pos < seq_len)
        k_ptrs = k_base + k_pos[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = v_base + k_pos[:, None] * stride_vn + offs_d[None, :]
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, k_pos, offs_m, key_ok, True)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(Out + start * stride_on + offs_m[:, None] * stride_on + h * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=row_ok[:, None])


def triton_vertical_slash_attention(
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
    launch: Optional[Tuple[int, int]] = None,
    max_seqlen_hint: Optional[int] = None,
) -> torch.Tensor:
    """Mixed block + column causal attention (see naive_vertical_slash_attention).

    Args:
        q: [N, Hq, D]; k, v: [N, Hkv, D] packed varlen; cu_seqlens [B+1] int32.
        block_count [B, Hq, n_rows], block_offset [B, Hq, n_rows, NS], column_count [B, Hq, n_rows],
        column_index [B, Hq, n_rows, NV]: the index of build_vertical_slash_index (rows of 64 queries).
        launch: optional (num_warps, num_stages) override (benchmark tuning).
        max_seqlen_hint: the longest sample's length when known on the host (no device-to-host read here).
    Returns:
        out [N, Hq, D] in q's dtype (written in place when `out` is given).
    """
    check_prefill_inputs(q, k, v, cu_seqlens)
    n_tokens, num_q_heads, head_dim = q.shape
    batch = cu_seqlens.numel() - 1
    n_rows = -(-(max_seqlen(cu_seqlens) if max_seqlen_hint is None else int(max_seqlen_hint)) // BLOCK)
    for name, t in (("block_count", block_count), ("column_count", column_count)):
        if tuple(t.shape) != (batch, num_q_heads, n_rows):
            raise ValueError(f"{name} must be [B={batch}, Hq={num_q_heads}, n_rows={n_rows}], got {tuple(t.shape)}")
    for name, t in (("block_offset", block_offset), ("column_index", column_index)):
        if tuple(t.shape[:3]) != (batch, num_q_heads, n_rows) or t.stride(-1) != 1:
            raise ValueError(f"{name} must be a contiguous [B, Hq, n_rows, width] tensor, got {tuple(t.shape)}")
    scale = head_dim ** -0.5 if scale is None else scale
    if out is None:
        out = torch.empty_like(q)
    warps, stages = launch or (4, 3)
    # Blocks ending at or before their row's first query (a prefix: starts ascend) run without a mask.
    row_first = BLOCK * torch.arange(n_rows, device=q.device, dtype=torch.int32).view(1, 1, -1, 1)
    in_count = torch.arange(block_offset.shape[-1], device=q.device) < block_count[..., None]
    full_count = ((block_offset + BLOCK <= row_first) & in_count).sum(-1, dtype=torch.int32)
    block_count, column_count = block_count.contiguous(), column_count.contiguous()
    grid = (n_rows, batch * num_q_heads)
    _vertical_slash_fwd[grid](
        q, k, v, out, cu_seqlens.to(torch.int32), block_count, full_count, block_offset, column_count,
        column_index,
        scale * LOG2E, num_q_heads, n_rows,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        block_count.stride(0), block_count.stride(1), block_offset.stride(0), block_offset.stride(1),
        block_offset.stride(2), column_count.stride(0), column_count.stride(1),
        column_index.stride(0), column_index.stride(1), column_index.stride(2),
        GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_M=BLOCK, BLOCK_N=BLOCK,
        num_warps=warps, num_stages=stages,
    )
    return out
