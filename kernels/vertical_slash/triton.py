"""Vertical-slash prefill on the GPU: the index builder and the mixed block + column attention kernel (Triton).

Same signatures as `naive.naive_build_vertical_slash_index` and `naive.naive_vertical_slash_attention`; the index
format and the rules are in docs/architecture.md ("Prefill primitives"). Rows are 64 queries; a row visits
64-wide key blocks (where the slashes cross it, merged) and individual key columns (the verticals not already
inside a block).

Attention paths (`path=`): "pointer" (plain loads, any GPU) and "tma" (Hopper, 16-bit: q and the slash blocks' K/V
through tensor descriptors, the unmasked blocks' Q K^T software-pipelined; columns gathered with pointer loads).
Both keep q unscaled (the wgmma reads it from shared memory) and fold scale*log2(e) into the exp2 argument, and
count each row's unmasked prefix in the kernel (benchmarks/results/vs_attn_s6/).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._triton_tile import (LOG2E, check_prefill_inputs, max_seqlen, softmax_pv_desc, unscaled_masked_step,
                            unscaled_step)
from ..block_sparse.triton import TensorDescriptor, _descriptor, tma_supported
from .naive import check_index_fits, index_bytes, index_fits, index_widths

BLOCK = 64  # rows per index row and width of a slash block (MInference format)
# Largest index (bytes, at its upper-bound widths) built in one pass without reading the widths back. At the
# reference budgets (512 verticals and slashes) a 128K-token sample with 32 heads needs 268 MB at the bounds, about
# what the exact widths give at that length (rows late in the sample reach ~NS blocks). FlexPrefill's adaptive
# budgets give wider bounds (~1.3 GB at 128K on the structured benchmark inputs): allocating them (slots past the
# counts are never written) costs less than the counting pass (~0.8 ms there) and its read-back. Past this size, or
# when the bound does not fit in free GPU memory (with INDEX_HEADROOM), the exact two-pass build runs instead.
SINGLE_PASS_MAX_BYTES = 2 << 30
# Entries per vector store of the one-pass build (its widths are rounded up to a multiple of 16, so that Triton's
# divisibility specialisation of the row strides proves every group of STORE_VEC slots 32-byte aligned).
STORE_VEC = 4
#: the index builder's walk stops once nothing left can matter to the program's rows (see `_build_index`)
BUILD_BOUNDED = True
#: index rows per builder program (one lane each)
BUILD_ROWS = 128


@triton.jit
def index_row_offset(b, h, row, stride_b, stride_h, stride_r):
    """Element offset of index row (b, h, row) in 64 bits: `h * stride_h` alone passes 2**31 at 128K tokens
    (32 heads x 2048 rows x 32768 slots), which wrapped around in int32 (the illegal memory access)."""
    return b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h + row.to(tl.int64) * stride_r


@triton.jit
def _four(a, b, c, d):
    """[R] x 4 -> [R, 4] (a, b, c, d side by side), built in registers (join keeps the new dim in the thread)."""
    return tl.reshape(tl.join(tl.join(a, c), tl.join(b, d)), [a.shape[0], 4])  # join stacks on a new last dim


@triton.jit
def _push4(r0, r1, r2, r3, value, emit, n_done, base, width, row_ok):
    """Put `value` into slot n_done % 4 of the rows that `emit`; a row whose group of 4 is then full writes it with
    one 16-byte store at base + (n_done - slot). Returns the four registers."""
    slot = n_done % 4
    r0 = tl.where(emit & (slot == 0), value, r0)
    r1 = tl.where(emit & (slot == 1), value, r1)
    r2 = tl.where(emit & (slot == 2), value, r2)
    r3 = tl.where(emit & (slot == 3), value, r3)
    group = tl.multiple_of(n_done - slot, 4)
    lane = tl.arange(0, 4)[None, :]
    full = emit & (slot == 3) & row_ok
    tl.store(base[:, None] + group[:, None] + lane, _four(r0, r1, r2, r3),
             mask=full[:, None] & (group[:, None] + lane < width))
    return r0, r1, r2, r3


@triton.jit
def _flush4(r0, r1, r2, r3, n_done, base, width, row_ok):
    """Write the partial last group (slots < n_done % 4) of each row."""
    slot = n_done % 4
    group = tl.multiple_of(n_done - slot, 4)
    lane = tl.arange(0, 4)[None, :]
    tl.store(base[:, None] + group[:, None] + lane, _four(r0, r1, r2, r3),
             mask=row_ok[:, None] & (lane < slot[:, None]) & (group[:, None] + lane < width))


@triton.jit
def _build_index(cu_seqlens, Vert, VertCount, Slash, SlashCount, BlockCount, BlockOffset, ColumnCount, ColumnIndex,
                 num_heads, n_rows, stride_vb, stride_vh, stride_sb, stride_sh,
                 stride_bob, stride_boh, stride_bor, stride_cib, stride_cih, stride_cir, block_width, column_width,
                 BLOCK_R: tl.constexpr, STORE: tl.constexpr, VEC: tl.constexpr = 1, BOUNDED: tl.constexpr = True,
                 BOUND_CHUNK: tl.constexpr = 256):
    """One lane per query row (MInference's one thread per row): a merge walk over the head's slashes and verticals.

    Run twice: with STORE=False it only writes the counts (so the host can size the index to the widest row), with
    STORE=True it writes the entries too (slots past `block_width` / `column_width` are never written).

    Each step, every row consumes its next vertical if that vertical lies left of its current span's end (so its
    fate is known: column, or covered by the span) or if no slash is left; otherwise its next slash, which opens a
    new span, extends the current one by 64 keys, or falls inside it.

    VEC == 4 (index rows and widths multiples of 16 slots, so every group of 4 slots is 16-byte aligned): each
    lane keeps its row's next 4 entries in registers and writes them as one 16-byte store when the group is full
    (and the partial last group at the end). One scalar store per entry, each lane in another row, was one L2
    transaction per 4 bytes: ~26M of them for a 128K-token VS index.
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

    # Only part of the walk can matter to this program's rows (ends <= max_end): slashes with offset >= max_end are
    # invalid in every row (they lead the descending list: skipped), and a row never takes a vertical at or past
    # max_end + 64 (the end of any span it can open or extend) before its last slash; after its last slash the
    # verticals left are past its end. So the walk stops after the slashes from the first valid one and the
    # verticals below max_end + 64 (rows early in a long sample skip most verticals). The same index as the whole
    # walk, entry for entry.
    if BOUNDED:
        max_end = tl.minimum(n_rows, tl.program_id(0) * BLOCK_R + BLOCK_R) * 64
        s_first = n_slash * 0
        n_near = n_vert * 0
        for c in range(0, tl.maximum(n_vert, n_slash), BOUND_CHUNK):
            offs_c = c + tl.arange(0, BOUND_CHUNK)
            o_c = tl.load(slash + offs_c, mask=offs_c < n_slash, other=0)
            v_c = tl.load(vert + offs_c, mask=offs_c < n_vert, other=0)
            s_first += tl.sum(((offs_c < n_slash) & (o_c >= max_end)).to(tl.int32), 0)
            n_near += tl.sum(((offs_c < n_vert) & (v_c < max_end + 64)).to(tl.int32), 0)
        n_steps = n_slash - s_first + n_near
    else:
        s_first = 0
        n_steps = n_vert + n_slash
    v_next = tl.zeros([BLOCK_R], dtype=tl.int32)
    s_next = tl.zeros([BLOCK_R], dtype=tl.int32) + s_first
    span_start = tl.full([BLOCK_R], -1, dtype=tl.int32)
    span_end = tl.full([BLOCK_R], -1, dtype=tl.int32)  # -1: no span yet
    n_blocks = tl.zeros([BLOCK_R], dtype=tl.int32)
    n_cols = tl.zeros([BLOCK_R], dtype=tl.int32)
    # VEC == 4: the row's pending entries, one register each (a 2-D buffer would cost a layout conversion per step)
    c0 = tl.full([BLOCK_R], -1, dtype=tl.int32)
    c1 = c0
    c2 = c0
    c3 = c0
    b0 = c0
    b1 = c0
    b2 = c0
    b3 = c0
    for _ in range(n_steps):
        v_left = v_next < n_vert
        s_left = s_next < n_slash
        v = tl.load(vert + v_next, mask=v_left, other=0)
        o = tl.load(slash + s_next, mask=s_left, other=0)
        take_v = v_left & ((v < span_end) | ~s_left)
        is_col = take_v & (v < end_m) & ~((v >= span_start) & (v < span_end))
        if STORE:
            if VEC == 1:
                tl.store(column_index + n_cols, v, mask=is_col & row_ok & (n_cols < column_width))
            else:
                c0, c1, c2, c3 = _push4(c0, c1, c2, c3, v, is_col, n_cols, column_index, column_width, row_ok)
        n_cols += is_col.to(tl.int32)
        v_next += take_v.to(tl.int32)

        take_s = s_left & ~take_v
        valid = take_s & (o < end_m)
        e = tl.maximum(end_m - o, 64)
        opens = valid & ((span_end < 0) | (e > span_end + 64))
        extends = valid & ~opens & (e > span_end)
        if STORE:
            emitted = tl.where(opens, e - 64, span_end)
            if VEC == 1:
                tl.store(block_offset + n_blocks, emitted, mask=(opens | extends) & row_ok & (n_blocks < block_width))
            else:
                b0, b1, b2, b3 = _push4(b0, b1, b2, b3, emitted, opens | extends, n_blocks, block_offset, block_width,
                                        row_ok)
        n_blocks += (opens | extends).to(tl.int32)
        span_start = tl.where(opens, e - 64, span_start)
        span_end = tl.where(opens, e, tl.where(extends, span_end + 64, span_end))
        s_next += take_s.to(tl.int32)
    if STORE and VEC > 1:  # the partial last groups
        _flush4(c0, c1, c2, c3, n_cols, column_index, column_width, row_ok)
        _flush4(b0, b1, b2, b3, n_blocks, block_offset, block_width, row_ok)
    row_ptr = bh.to(tl.int64) * n_rows + rows
    tl.store(BlockCount + row_ptr, tl.where(row_ok, n_blocks, 0), mask=rows < n_rows)
    tl.store(ColumnCount + row_ptr, tl.where(row_ok, n_cols, 0), mask=rows < n_rows)


def _index_buffer(shape, device) -> torch.Tensor:
    """An uninitialised int32 index tensor: the builder writes each row's slots below its count and leaves the rest
    (a -1 fill of the 268 MB index at 128K cost ~0.06 ms on an H200). Tests replace it to poison the slots."""
    return torch.empty(shape, dtype=torch.int32, device=device)


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
        column_index [B, Hq, n_rows, WC] (int32), n_rows = ceil(max_len / 64),
        WB = max(1, max block_count) <= min(NS, n_rows), WC = max(1, max column_count) <= min(NV, max_len).
        Slots past each row's count are NOT written (the kernels never read them; `canonical_index` sets them
        to -1, the reference builder's padding, for comparisons).

    max_len: the longest sample's length when the caller knows it on the host (the library's select does). Then
        nothing here reads the device: if the index at its upper-bound widths (`index_widths`) takes at most
        `SINGLE_PASS_MAX_BYTES`, ONE pass counts and fills it (WB, WC = the bounds). Otherwise, and when max_len is
        None, a first pass counts, the widths are read back (one sync) and sized to the widest row, a second pass
        fills.
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
    block_r = min(BUILD_ROWS, max(16, triton.next_power_of_2(n_rows)))
    grid = (triton.cdiv(n_rows, block_r), batch * heads)

    def walk(block_offset, column_index, store, vec=1):
        _build_index[grid](
            cu_seqlens, vertical_idx, vertical_count, slash_offsets, slash_count,
            block_count, block_offset, column_count, column_index, heads, n_rows,
            vertical_idx.stride(0), vertical_idx.stride(1), slash_offsets.stride(0), slash_offsets.stride(1),
            block_offset.stride(0), block_offset.stride(1), block_offset.stride(2),
            column_index.stride(0), column_index.stride(1), column_index.stride(2),
            block_offset.shape[-1], column_index.shape[-1], BLOCK_R=block_r, STORE=store, VEC=vec,
            BOUNDED=BUILD_BOUNDED, num_warps=max(1, min(4, block_r // 32)),  # one lane per row
        )

    if max_len is not None:
        # widths rounded up to multiples of 16 slots: rows stay aligned for the vector stores (STORE_VEC)
        block_width, column_width = (-(-w // 16) * 16 for w in index_widths(longest, num_slash, num_vert))
        bound_bytes = index_bytes(batch, heads, n_rows, block_width, column_width)
        if bound_bytes <= SINGLE_PASS_MAX_BYTES and index_fits(bound_bytes, device):
            block_offset = _index_buffer((batch, heads, n_rows, block_width), device)
            column_index = _index_buffer((batch, heads, n_rows, column_width), device)
            walk(block_offset, column_index, True, STORE_VEC)
            return block_count, block_offset, column_count, column_index
    unused = torch.empty(1, 1, 1, 1, dtype=torch.int32, device=device)  # no entries are written when counting
    walk(unused, unused, False)
    block_width = max(1, int(block_count.max())) if block_count.numel() else 1
    column_width = max(1, int(column_count.max())) if column_count.numel() else 1
    check_index_fits(batch, heads, n_rows, block_width, column_width, device)
    block_offset = _index_buffer((batch, heads, n_rows, block_width), device)
    column_index = _index_buffer((batch, heads, n_rows, column_width), device)
    walk(block_offset, column_index, True)
    return block_count, block_offset, column_count, column_index


@triton.jit
def _unmasked_count(offsets, n_blocks, q_first, BLOCK_N: tl.constexpr):
    """Slash blocks of an index row that end at or before the row's first query (`start + BLOCK_N <= q_first`):
    they need no mask (every key exists and precedes every query of the row).

    Starts ascend, so those blocks are a prefix; walk back from the last block while it reaches past q_first. The
    blocks are disjoint and 64 wide, so at most two of them reach into [q_first - 63, q_first + 63]: <= 3 loads.
    Replaces the torch pre-pass over the whole index that the wrapper used to launch.
    """
    n_full = n_blocks
    last = tl.load(offsets + n_full - 1, mask=n_full > 0, other=-BLOCK_N)
    while last + BLOCK_N > q_first:
        n_full -= 1
        last = tl.load(offsets + n_full - 1, mask=n_full > 0, other=-BLOCK_N)
    return n_full


@triton.jit
def _vs_masked_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, k_pos, q_pos, key_ok, qk_scale):
    """`unscaled_masked_step` with the causal mask: key_ok [N] keys that exist and are selected, k_pos [N] /
    q_pos [M] positions within the sample; q unscaled."""
    keep = key_ok[None, :] & (k_pos[None, :] <= q_pos[:, None])
    return unscaled_masked_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, keep, key_ok, qk_scale)


@triton.jit
def _column_tile(acc, m_i, l_i, q, k_base, v_base, columns, n_cols, c, offs_m, seq_len, qk_scale, stride_kn,
                 stride_vn, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr):
    """Fold column slots c .. c + BLOCK_N - 1 of a row (gathered key rows, causal mask)."""
    offs_d = tl.arange(0, HEAD_DIM)
    slot = c + tl.arange(0, BLOCK_N)
    k_pos = tl.load(columns + slot, mask=slot < n_cols, other=0)
    key_ok = (slot < n_cols) & (k_pos >= 0) & (k_pos < seq_len)
    k_ptrs = k_base + k_pos[:, None] * stride_kn + offs_d[None, :]
    v_ptrs = v_base + k_pos[:, None] * stride_vn + offs_d[None, :]
    return _vs_masked_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, k_pos, offs_m, key_ok, qk_scale)


@triton.jit
def _columns(acc, m_i, l_i, q, k_base, v_base, ColumnCount, ColumnIndex, b, h, row, offs_m, seq_len, qk_scale,
             stride_kn, stride_vn, stride_ccb, stride_cch, stride_cib, stride_cih, stride_cir,
             HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, COL_STAGES: tl.constexpr):
    """Fold the row's vertical columns, gathered BLOCK_N at a time with pointer loads (both paths).

    COL_STAGES: 0 = a plain loop (pipelined by the kernel's num_stages, the pre-session-6 code), else this loop's
    own pipeline depth (tl.range num_stages; 1 = not pipelined). The pipelined gathers are what spill registers at
    4 warps on sm_90 (compile_sm90.log: 80-88 B of stack at 3 stages; 64 B pointer / 24 B tma with 1), so it is a
    launch option of its own.
    """
    n_cols = tl.load(ColumnCount + index_row_offset(b, h, row, stride_ccb, stride_cch, 1))
    columns = ColumnIndex + index_row_offset(b, h, row, stride_cib, stride_cih, stride_cir)
    if COL_STAGES == 0:
        for c in range(0, n_cols, BLOCK_N):
            acc, m_i, l_i = _column_tile(acc, m_i, l_i, q, k_base, v_base, columns, n_cols, c, offs_m, seq_len,
                                         qk_scale, stride_kn, stride_vn, HEAD_DIM, BLOCK_N)
    else:
        for c in tl.range(0, n_cols, BLOCK_N, num_stages=COL_STAGES):
            acc, m_i, l_i = _column_tile(acc, m_i, l_i, q, k_base, v_base, columns, n_cols, c, offs_m, seq_len,
                                         qk_scale, stride_kn, stride_vn, HEAD_DIM, BLOCK_N)
    return acc, m_i, l_i


@triton.jit
def _vertical_slash_fwd(
    Q, K, V, Out, cu_seqlens, BlockCount, BlockOffset, ColumnCount, ColumnIndex,
    qk_scale, num_q_heads, n_rows,
    stride_qn, stride_qh, stride_kn, stride_kh, stride_vn, stride_vh, stride_on, stride_oh,
    stride_bcb, stride_bch, stride_bob, stride_boh, stride_bor, stride_ccb, stride_cch,
    stride_cib, stride_cih, stride_cir,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    COL_STAGES: tl.constexpr,
):
    """Plain-pointer kernel; grid (n_rows, B * Hq), one 64-query index row per program."""
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
    # q stays unscaled (the scale goes into the exp2 argument, see _triton_tile.unscaled_step)
    q = tl.load(Q + start * stride_qn + offs_m[:, None] * stride_qn + h * stride_qh + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    k_base = K + start * stride_kn + kv_h * stride_kh
    v_base = V + start * stride_vn + kv_h * stride_vh
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # 1) slash blocks: 64 consecutive keys from each listed start (starts need not be 64-aligned). Blocks ending
    #    left of this row (a sorted prefix, counted here) need no mask: a branch-free, pipelined loop.
    n_blocks = tl.load(BlockCount + index_row_offset(b, h, row, stride_bcb, stride_bch, 1))
    offsets = BlockOffset + index_row_offset(b, h, row, stride_bob, stride_boh, stride_bor)
    n_full = _unmasked_count(offsets, n_blocks, q_first, BLOCK_N)
    for e in range(n_full):
        k_pos = tl.load(offsets + e) + offs_n
        acc, m_i, l_i = unscaled_step(acc, m_i, l_i, q, k_base + k_pos[:, None] * stride_kn + offs_d[None, :],
                                      v_base + k_pos[:, None] * stride_vn + offs_d[None, :], qk_scale)
    for e in range(n_full, n_blocks):
        k_pos = tl.load(offsets + e) + offs_n
        key_ok = (k_pos >= 0) & (k_pos < seq_len)
        k_ptrs = k_base + k_pos[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = v_base + k_pos[:, None] * stride_vn + offs_d[None, :]
        acc, m_i, l_i = _vs_masked_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, k_pos, offs_m, key_ok, qk_scale)

    # 2) vertical columns, gathered BLOCK_N at a time.
    acc, m_i, l_i = _columns(acc, m_i, l_i, q, k_base, v_base, ColumnCount, ColumnIndex, b, h, row, offs_m, seq_len,
                             qk_scale, stride_kn, stride_vn, stride_ccb, stride_cch, stride_cib, stride_cih,
                             stride_cir, HEAD_DIM, BLOCK_N, COL_STAGES)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # rows that saw no key are written as zeros, never NaN
    out = acc / l_safe[:, None]
    tl.store(Out + start * stride_on + offs_m[:, None] * stride_on + h * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _vertical_slash_fwd_tma(
    desc_q, desc_k, desc_v, K, V, Out, cu_seqlens, BlockCount, BlockOffset, ColumnCount, ColumnIndex,
    qk_scale, num_q_heads, n_rows, stride_kn, stride_kh, stride_vn, stride_vh, stride_on, stride_oh,
    stride_bcb, stride_bch, stride_bob, stride_boh, stride_bor, stride_ccb, stride_cch,
    stride_cib, stride_cih, stride_cir,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PIPELINE_QK: tl.constexpr, COL_STAGES: tl.constexpr,
):
    """Hopper kernel: q and the slash blocks' K/V through tensor descriptors (bulk tensor copies), columns gathered
    with pointer loads; grid (n_rows, B * Hq).

    desc_q: 2-D view [N, Hq * D], block [BLOCK_M, D]; desc_k / desc_v: [N, Hkv * D], block [BLOCK_N, D]. A head is a
    column offset (h * D), a token a row (seq_start + position; slash block starts need not be aligned). Rows past
    the tensor come back as zeros; rows of the next packed sample are read but never kept (keys masked, their
    values zeroed, query rows not stored).
    """
    row = n_rows - 1 - tl.program_id(0)  # heavy rows first
    bh = tl.program_id(1)
    b = bh // num_q_heads
    h = bh % num_q_heads
    kv_h = h // GROUP
    kv_col = kv_h * HEAD_DIM
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    q_first = row * BLOCK_M
    if q_first >= seq_len:
        return
    offs_m = q_first + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    # q stays as loaded (shared memory, the wgmma operand); the scale goes into the exp2 FMA.
    q = desc_q.load([seq_start + q_first, h * HEAD_DIM])
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    n_blocks = tl.load(BlockCount + index_row_offset(b, h, row, stride_bcb, stride_bch, 1))
    offsets = BlockOffset + index_row_offset(b, h, row, stride_bob, stride_boh, stride_bor)
    n_full = _unmasked_count(offsets, n_blocks, q_first, BLOCK_N)
    # 1) unmasked prefix (every key exists and precedes every query of the row).
    if PIPELINE_QK:
        # FlashAttention-3's intra-warpgroup overlap: the next block's Q K^T (an asynchronous wgmma) is issued
        # before the current block's softmax.
        if n_full > 0:
            k_row = seq_start + tl.load(offsets)
            s = tl.dot(q, tl.trans(desc_k.load([k_row, kv_col])))
            for e in range(1, n_full):
                next_row = seq_start + tl.load(offsets + e)
                s_next = tl.dot(q, tl.trans(desc_k.load([next_row, kv_col])))
                acc, m_i, l_i = softmax_pv_desc(acc, m_i, l_i, s, qk_scale, desc_v, k_row, kv_col)
                s = s_next
                k_row = next_row
            acc, m_i, l_i = softmax_pv_desc(acc, m_i, l_i, s, qk_scale, desc_v, k_row, kv_col)
    else:
        for e in range(n_full):
            k_row = seq_start + tl.load(offsets + e)
            s = tl.dot(q, tl.trans(desc_k.load([k_row, kv_col])))
            acc, m_i, l_i = softmax_pv_desc(acc, m_i, l_i, s, qk_scale, desc_v, k_row, kv_col)
    # 2) blocks reaching into the row (at most two): causal mask; keys past the sample masked and their values
    #    zeroed (those rows may belong to the next sample).
    for e in range(n_full, n_blocks):
        k_first = tl.load(offsets + e)
        k_pos = k_first + offs_n
        s = tl.dot(q, tl.trans(desc_k.load([seq_start + k_first, kv_col])))
        keep = (k_pos[None, :] < seq_len) & (k_pos[None, :] <= offs_m[:, None])
        s = tl.where(keep, s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = desc_v.load([seq_start + k_first, kv_col])
        v = tl.where((k_pos < seq_len)[:, None], v, 0.0)
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new

    # 3) vertical columns: scattered keys, gathered with pointer loads.
    start = seq_start.to(tl.int64)  # 64-bit row offsets: packed batches may exceed 2**31 elements
    k_base = K + start * stride_kn + kv_h * stride_kh
    v_base = V + start * stride_vn + kv_h * stride_vh
    acc, m_i, l_i = _columns(acc, m_i, l_i, q, k_base, v_base, ColumnCount, ColumnIndex, b, h, row, offs_m, seq_len,
                             qk_scale, stride_kn, stride_vn, stride_ccb, stride_cch, stride_cib, stride_cih,
                             stride_cir, HEAD_DIM, BLOCK_N, COL_STAGES)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # rows that saw no key are written as zeros, never NaN
    out = acc / l_safe[:, None]
    # Plain masked store: a bulk store of the whole tile would overwrite the next sample's first rows.
    offs_d = tl.arange(0, HEAD_DIM)
    tl.store(Out + start * stride_on + offs_m[:, None] * stride_on + h * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=(offs_m < seq_len)[:, None])


# Default launches (num_warps, num_stages, pipeline_qk). H200, 128K, structured inputs, real selections
# (benchmarks/results/vs_attn_s6/bench.log, do_bench medians, ms): vertical_slash legacy 33.44, pointer (4, 3) 31.99,
# tma (4, 3, pipelined) 33.00, tma (4, 3, not pipelined) 30.24; flexprefill legacy 114.0, pointer 103.8, tma
# pipelined 106.9, tma not pipelined 98.7 (best: tma (4, 2) pipelined, column gathers unpipelined, 96.4). At 32K
# tma (4, 3) not pipelined was the fastest for both methods. 8 warps: 2.2x slower.
POINTER_LAUNCH = (4, 3, False)
TMA_LAUNCH = (4, 3, False)
# The path a call without `path` takes: "auto" = tma where `tma_supported` (Hopper, 16-bit, heads contiguous), else
# the pointer kernel; both passed tests/gpu/test_vertical_slash_attention_gpu.py on the H200 (11 passed).
DEFAULT_PATH = "auto"


def _vs_launch(launch, use_tma: bool) -> Tuple[int, int, bool, int]:
    """(num_warps, num_stages, pipeline_qk, col_stages) from an optional override (see
    triton_vertical_slash_attention); col_stages 0 (default): the column loop follows num_stages."""
    if launch is None:
        warps, stages, pipeline_qk = TMA_LAUNCH if use_tma else POINTER_LAUNCH
        return warps, stages, pipeline_qk, 0
    launch = tuple(launch)
    if len(launch) in (4, 5):  # (BLOCK_N, warps, stages, pipeline_qk[, col_stages]): BLOCK_N is fixed
        if int(launch[0]) != BLOCK:
            raise ValueError(f"launch: BLOCK_N must be {BLOCK} (slash blocks are {BLOCK} keys wide), got {launch[0]}")
        launch = launch[1:]
    elif len(launch) not in (2, 3):
        raise ValueError(f"launch must be (num_warps, num_stages[, pipeline_qk]) or (BLOCK_N={BLOCK}, num_warps, "
                         f"num_stages, pipeline_qk[, col_stages]), got {launch}")
    warps, stages = int(launch[0]), int(launch[1])
    pipeline_qk = bool(launch[2]) if len(launch) > 2 else False
    col_stages = int(launch[3]) if len(launch) > 3 else 0
    if col_stages < 0:
        raise ValueError(f"launch: col_stages must be >= 0 (0 = the kernel's num_stages, 1 = column gathers not "
                         f"pipelined), got {col_stages}")
    return warps, stages, pipeline_qk, col_stages


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
    launch: Optional[tuple] = None,
    max_seqlen_hint: Optional[int] = None,
    path: Optional[str] = None,
) -> torch.Tensor:
    """Mixed block + column causal attention (see naive_vertical_slash_attention).

    Args:
        q: [N, Hq, D]; k, v: [N, Hkv, D] packed varlen; cu_seqlens [B+1] int32.
        block_count [B, Hq, n_rows], block_offset [B, Hq, n_rows, NS], column_count [B, Hq, n_rows],
        column_index [B, Hq, n_rows, NV]: the index of build_vertical_slash_index (rows of 64 queries).
        launch: optional (num_warps, num_stages[, pipeline_qk]) or (BLOCK_N, num_warps, num_stages, pipeline_qk[,
            col_stages]) override (benchmark tuning). BLOCK_M = BLOCK_N = 64 always (index rows and slash blocks
            are 64 wide). pipeline_qk (tma path only; the pointer kernel ignores it) issues the next block's Q K^T
            before the current block's softmax; col_stages (default 0: follow num_stages) is the pipeline depth
            of the column-gather loop alone (1: not pipelined, fewer register spills at 4 warps).
        max_seqlen_hint: the longest sample's length when known on the host (no device-to-host read here).
        path: "tma" (Hopper tensor descriptors for q and the slash blocks' K/V), "pointer" (plain loads) or "auto"
            (tma where block_sparse's `tma_supported`: compute capability >= 9, 16-bit data, heads contiguous).
            None: `DEFAULT_PATH`.
    Returns:
        out [N, Hq, D] in q's dtype (written in place when `out` is given).

    The wrapper launches nothing but the kernel (the unmasked-prefix count of each row is made in the kernel).
    """
    check_prefill_inputs(q, k, v, cu_seqlens)
    path = DEFAULT_PATH if path is None else path
    if path not in ("auto", "tma", "pointer"):
        raise ValueError(f"path must be 'auto', 'tma' or 'pointer', got {path!r}")
    n_tokens, num_q_heads, head_dim = q.shape
    batch = cu_seqlens.numel() - 1
    n_rows = -(-(max_seqlen(cu_seqlens) if max_seqlen_hint is None else int(max_seqlen_hint)) // BLOCK)
    for name, t in (("block_count", block_count), ("column_count", column_count)):
        if tuple(t.shape) != (batch, num_q_heads, n_rows):
            raise ValueError(f"{name} must be [B={batch}, Hq={num_q_heads}, n_rows={n_rows}], got {tuple(t.shape)}")
    for name, t in (("block_offset", block_offset), ("column_index", column_index)):
        if tuple(t.shape[:3]) != (batch, num_q_heads, n_rows) or t.stride(-1) != 1:
            raise ValueError(f"{name} must be a contiguous [B, Hq, n_rows, width] tensor, got {tuple(t.shape)}")
    use_tma = path == "tma" or (path == "auto" and tma_supported(q, k, v))
    if use_tma and TensorDescriptor is None:
        raise RuntimeError("path='tma' needs Triton >= 3.4 (triton.tools.tensor_descriptor); use path='pointer'")
    if use_tma and not all(t.stride(1) == t.shape[2] for t in (q, k, v)):
        raise ValueError("path='tma' needs q, k, v with heads contiguous within a token (stride(1) == head_dim): "
                         "call .contiguous() or use path='pointer'")
    warps, stages, pipeline_qk, col_stages = _vs_launch(launch, use_tma)
    scale = head_dim ** -0.5 if scale is None else scale
    if out is None:
        out = torch.empty_like(q)
    cu_seqlens = cu_seqlens if cu_seqlens.dtype == torch.int32 else cu_seqlens.to(torch.int32)
    block_count, column_count = block_count.contiguous(), column_count.contiguous()
    index_args = (block_count, block_offset, column_count, column_index, scale * LOG2E, num_q_heads, n_rows)
    index_strides = (block_count.stride(0), block_count.stride(1), block_offset.stride(0), block_offset.stride(1),
                     block_offset.stride(2), column_count.stride(0), column_count.stride(1),
                     column_index.stride(0), column_index.stride(1), column_index.stride(2))
    grid = (n_rows, batch * num_q_heads)
    consts = dict(GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_M=BLOCK, BLOCK_N=BLOCK,
                  COL_STAGES=col_stages, num_warps=warps, num_stages=stages)
    if use_tma:
        _vertical_slash_fwd_tma[grid](
            _descriptor(q, BLOCK), _descriptor(k, BLOCK), _descriptor(v, BLOCK), k, v, out, cu_seqlens,
            *index_args, k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
            *index_strides, PIPELINE_QK=pipeline_qk, **consts)
        return out
    _vertical_slash_fwd[grid](
        q, k, v, out, cu_seqlens, *index_args,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        *index_strides, **consts)
    return out
