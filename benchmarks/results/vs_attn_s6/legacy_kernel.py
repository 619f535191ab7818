"""The vertical-slash attention kernel as it was before session 6 (commit 5036cd0), kept verbatim as the benchmark
baseline for benchmarks/results/vs_attn_s6/bench_vs_attn.py: q pre-scaled in registers, 64x64 tiles, 4 warps,
3 stages, pointer loads, the unmasked-prefix count in a torch pre-pass. Not used by the library.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from sparse_attn.kernels._triton_tile import LOG2E, check_prefill_inputs, max_seqlen, online_softmax_step
from sparse_attn.kernels.vertical_slash.triton import BLOCK, index_row_offset


@triton.jit
def _legacy_vertical_slash_fwd(
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


def legacy_vertical_slash_attention(
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
    _legacy_vertical_slash_fwd[grid](
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
