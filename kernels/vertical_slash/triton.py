"""Vertical-slash prefill on the GPU: the index builder (torch, vectorised) and the mixed attention kernel (Triton).

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

BLOCK = 64  # rows per index row and width of a slash block (MInference format)
# Work on this many (head, row, entry) triples at a time in the index builder, to bound its temporary memory.
_BUILD_CHUNK_ELEMENTS = 1 << 25


def _compact(flags: torch.Tensor, values: torch.Tensor, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pack `values` where `flags` is set to the front of the last dim (order kept), -1 elsewhere; and the counts."""
    slot = torch.cumsum(flags, -1, dtype=torch.int32) - 1
    slot = torch.where(flags, slot, width).long()
    packed = torch.full((*flags.shape[:-1], width + 1), -1, dtype=torch.int32, device=flags.device)
    packed.scatter_(-1, slot, torch.where(flags, values, -1).to(torch.int32))
    return packed[..., :width], flags.sum(-1, dtype=torch.int32)


def _build_rows(end_m, v_idx, v_ok, s_off, s_ok):
    """Index rows for a chunk of heads. end_m [R]; v_idx/v_ok [C, NV]; s_off/s_ok [C, NS] -> 4 tensors [C, R, .]."""
    num_slash = s_off.shape[-1]
    end = end_m.view(1, -1, 1)
    # Slash -> key range [e - 64, e). Offsets come sorted descending, so e is ascending along the last dim.
    ok = s_ok[:, None, :] & (s_off[:, None, :] < end)
    e = torch.clamp(end - s_off[:, None, :], min=BLOCK)
    e_prev = torch.nn.functional.pad(e, (1, 0))[..., :-1]
    ok_prev = torch.nn.functional.pad(ok, (1, 0))[..., :-1]
    starts_span = ok & (~ok_prev | (e - e_prev > BLOCK))
    span_start = torch.where(starts_span, e - BLOCK, -1)
    span_start = torch.cummax(span_start, dim=-1).values
    # Blocks of a span are 64 wide from its start; a range adds at most one block (ranges step by <= 64).
    n_blocks = (e - span_start + BLOCK - 1) // BLOCK
    n_blocks_prev = (e_prev - span_start + BLOCK - 1) // BLOCK
    adds_block = ok & (starts_span | (n_blocks > n_blocks_prev))
    block_start = span_start + BLOCK * (n_blocks - 1)
    block_offset, block_count = _compact(adds_block, block_start, num_slash)

    # Verticals: kept as columns when left of end_m and outside every block.
    num_vert = v_idx.shape[-1]
    vert = v_idx[:, None, :].expand(-1, end_m.numel(), -1).contiguous()
    big = torch.iinfo(torch.int32).max
    sorted_starts = torch.where(block_offset >= 0, block_offset, big).contiguous()
    before = torch.searchsorted(sorted_starts, vert, right=True) - 1
    nearest = torch.gather(sorted_starts, -1, before.clamp(min=0))
    covered = (before >= 0) & (vert < nearest + BLOCK)
    is_column = v_ok[:, None, :] & (vert < end) & ~covered
    column_index, column_count = _compact(is_column, vert, num_vert)
    return block_count, block_offset, column_count, column_index


def triton_build_vertical_slash_index(
    cu_seqlens: torch.Tensor,
    vertical_idx: torch.Tensor,
    vertical_count: torch.Tensor,
    slash_offsets: torch.Tensor,
    slash_count: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build the MInference index on the device with whole-tensor torch ops (no per-row Python loop).

    Args:
        cu_seqlens: [B+1] int32.
        vertical_idx: [B, Hq, NV] int key positions; the first vertical_count [B, Hq] valid, ascending.
        slash_offsets: [B, Hq, NS] int offsets q_pos - k_pos; the first slash_count [B, Hq] valid, descending.
    Returns:
        block_count [B, Hq, n_rows], block_offset [B, Hq, n_rows, NS], column_count [B, Hq, n_rows],
        column_index [B, Hq, n_rows, NV] (int32, -1 padded), n_rows = ceil(max_len / 64).
    """
    batch, heads, num_vert = vertical_idx.shape
    num_slash = slash_offsets.shape[-1]
    device = vertical_idx.device
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).to(device)
    n_rows = -(-int(lens.max()) // BLOCK)
    end_m = BLOCK * torch.arange(1, n_rows + 1, device=device)
    v_idx = vertical_idx.reshape(batch * heads, num_vert).long()
    s_off = slash_offsets.reshape(batch * heads, num_slash).long()
    v_ok = torch.arange(num_vert, device=device) < vertical_count.reshape(-1, 1)
    s_ok = torch.arange(num_slash, device=device) < slash_count.reshape(-1, 1)

    block_count = torch.empty(batch * heads, n_rows, dtype=torch.int32, device=device)
    column_count = torch.empty_like(block_count)
    block_offset = torch.empty(batch * heads, n_rows, num_slash, dtype=torch.int32, device=device)
    column_index = torch.empty(batch * heads, n_rows, num_vert, dtype=torch.int32, device=device)
    step = max(1, _BUILD_CHUNK_ELEMENTS // max(1, n_rows * max(num_slash, num_vert)))
    for lo in range(0, batch * heads, step):
        hi = min(lo + step, batch * heads)
        parts = _build_rows(end_m, v_idx[lo:hi], v_ok[lo:hi], s_off[lo:hi], s_ok[lo:hi])
        block_count[lo:hi], block_offset[lo:hi], column_count[lo:hi], column_index[lo:hi] = parts

    # Rows past the end of a shorter sample do not exist: empty them.
    row_exists = (BLOCK * torch.arange(n_rows, device=device)) < lens.repeat_interleave(heads).view(-1, 1)
    block_count = torch.where(row_exists, block_count, 0)
    column_count = torch.where(row_exists, column_count, 0)
    block_offset = torch.where(row_exists[..., None], block_offset, -1)
    column_index = torch.where(row_exists[..., None], column_index, -1)
    shape = (batch, heads, n_rows)
    return (block_count.view(shape), block_offset.view(*shape, num_slash),
            column_count.view(shape), column_index.view(*shape, num_vert))


@triton.jit
def _vertical_slash_fwd(
    Q, K, V, Out, cu_seqlens, BlockCount, BlockOffset, ColumnCount, ColumnIndex,
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
    q_first = row * BLOCK_M
    if q_first >= seq_len:
        return

    offs_m = q_first + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    row_ok = offs_m < seq_len
    q = tl.load(Q + (seq_start + offs_m)[:, None] * stride_qn + h * stride_qh + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    q = (q * qk_scale).to(q.dtype)
    k_base = K + seq_start * stride_kn + kv_h * stride_kh
    v_base = V + seq_start * stride_vn + kv_h * stride_vh
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # 1) slash blocks: 64 consecutive keys from each listed start (starts need not be 64-aligned).
    n_blocks = tl.load(BlockCount + b * stride_bcb + h * stride_bch + row)
    offsets = BlockOffset + b * stride_bob + h * stride_boh + row * stride_bor
    for e in range(n_blocks):
        k_first = tl.load(offsets + e)
        k_pos = k_first + offs_n
        key_ok = (k_pos >= 0) & (k_pos < seq_len)
        k_ptrs = k_base + k_pos[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = v_base + k_pos[:, None] * stride_vn + offs_d[None, :]
        if k_first + BLOCK_N - 1 > q_first:
            acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, k_pos, offs_m, key_ok, True)
        else:
            acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, k_pos, offs_m, key_ok, False)

    # 2) vertical columns, gathered BLOCK_N at a time.
    n_cols = tl.load(ColumnCount + b * stride_ccb + h * stride_cch + row)
    columns = ColumnIndex + b * stride_cib + h * stride_cih + row * stride_cir
    for c in range(0, n_cols, BLOCK_N):
        slot = c + offs_n
        k_pos = tl.load(columns + slot, mask=slot < n_cols, other=0)
        key_ok = (slot < n_cols) & (k_pos >= 0) & (k_pos < seq_len)
        k_ptrs = k_base + k_pos[:, None] * stride_kn + offs_d[None, :]
        v_ptrs = v_base + k_pos[:, None] * stride_vn + offs_d[None, :]
        acc, m_i, l_i = online_softmax_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, k_pos, offs_m, key_ok, True)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(Out + (seq_start + offs_m)[:, None] * stride_on + h * stride_oh + offs_d[None, :],
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
) -> torch.Tensor:
    """Mixed block + column causal attention (see naive_vertical_slash_attention).

    Args:
        q: [N, Hq, D]; k, v: [N, Hkv, D] packed varlen; cu_seqlens [B+1] int32.
        block_count [B, Hq, n_rows], block_offset [B, Hq, n_rows, NS], column_count [B, Hq, n_rows],
        column_index [B, Hq, n_rows, NV]: the index of build_vertical_slash_index (rows of 64 queries).
        launch: optional (num_warps, num_stages) override (benchmark tuning).
    Returns:
        out [N, Hq, D] in q's dtype (written in place when `out` is given).
    """
    check_prefill_inputs(q, k, v, cu_seqlens)
    n_tokens, num_q_heads, head_dim = q.shape
    batch = cu_seqlens.numel() - 1
    n_rows = -(-max_seqlen(cu_seqlens) // BLOCK)
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
    grid = (n_rows, batch * num_q_heads)
    _vertical_slash_fwd[grid](
        q, k, v, out, cu_seqlens.to(torch.int32), block_count, block_offset, column_count, column_index,
        scale * LOG2E, num_q_heads, n_rows,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        block_count.stride(0), block_count.stride(1), block_offset.stride(0), block_offset.stride(1),
        block_offset.stride(2), column_count.stride(0), column_count.stride(1),
        column_index.stride(0), column_index.stride(1), column_index.stride(2),
        GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_M=BLOCK, BLOCK_N=BLOCK,
        num_warps=warps, num_stages=stages,
    )
    return out
