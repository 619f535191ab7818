"""Block-sparse prefill attention in Triton (same signature as `naive.naive_block_sparse_attention`).

Each program owns one tile of query rows of one query head of one sample and visits only the key blocks its
index lists (online softmax, fp32 accumulation, causal mask on tiles that touch the diagonal). GQA: query head h
reads KV head h // G straight from the packed tensors; K/V are never repeated.

On Hopper with head dim 128 and chunk_size a multiple of 128, path="auto" runs the persistent warp-specialized
Gluon kernel instead (`gluon.py`: a producer warp and two consumer warpgroups per SM, looping over the work items;
H200, 128K: 10.9 ms at ~3.5 % of blocks, 27.1-27.5 ms at ~10 %, vs 12.1 / 29.2-29.9 ms for the TMA kernel below).

Two index paths:
* chunk_size >= 64: the method's index is used as is. A query tile of BLOCK_M rows (<= chunk_size) reads the index
  row of its chunk; every listed key chunk is swept in key tiles of BLOCK_N. The entries left of the query chunk
  (a sorted prefix, counted on the host) run in a branch-free loop with no mask at all, which lets Triton
  software-pipeline the K/V loads; only the diagonal chunk (and any block right of it) pays for the causal mask.
  That prefix is counted inside the kernel (`_unmasked_prefix`), and with `max_seqlen` given the wrapper reads
  nothing back from the device (the grid comes from block_index.shape). Opt-in launch options of the TMA kernel:
  peel_diag (the diagonal tile joins the pipelined Q K^T loop) and persistent (a grid of programs per SM looping
  over (query tile, head) items, heaviest first); `WIDTH_RULES` can pick a launch by the index width.
  On Hopper (compute capability >= 9, 16-bit data) Q/K/V are read through tensor descriptors (bulk tensor copies,
  `_block_sparse_fwd_tma`): q stays in shared memory as the wgmma operand, the softmax scale goes into the exp2
  FMA, and the next tile's Q K^T is issued before the current tile's softmax (FlashAttention-3's intra-warpgroup
  overlap). H100, 128K, ~10% of 128-blocks: ~30 ms, ~480 TFLOP/s (benchmarks/results/block_sparse_h100_s2/).
  Elsewhere (or with heads not contiguous within a token) the plain-pointer kernel `_block_sparse_fwd` runs; it
  too keeps q unscaled and folds the softmax scale into the exp2 argument (scale*log2(e) on the fp32 scores).
* chunk_size 16 or 32 (the method's default is 16): tensor cores want >= 64-row tiles, so the index is first
  converted (on the device, in torch) into 64x64 tiles: per 64-row query tile the sorted union of the 64-wide key
  tiles its sub-blocks visit, plus a bit mask saying which (query sub-block, key sub-block) pairs are selected.
  The kernel masks scores per element from those bits, so the result equals the chunk-level index exactly.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

try:  # Triton >= 3.4: host-side tensor descriptors (Hopper bulk tensor copies)
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # older Triton: only the pointer kernel
    TensorDescriptor = None

from .._triton_tile import LOG2E, check_prefill_inputs, softmax_pv_desc, unscaled_masked_step, unscaled_step
from .._triton_tile import max_seqlen as max_seqlen_of

TILE = 64  # tile size used when chunk_size < 64
# chunk_size < 64: "gather" (small_chunks.py: the union of the selected key chunks, gathered 64 keys per step) or
# "tiles" (the session-1 path: every 64x64 tile any selected chunk pair touches, with per-16-row bit masks)
SMALL_CHUNK_PATH = "gather"


@triton.jit
def _unmasked_prefix(index_row, count, row):
    """Entries of a sorted index row strictly left of query chunk `row`: they need no causal mask.

    The row is sorted ascending (distinct ids), so those entries form a prefix. The last two valid entries are
    loaded together (one memory round trip after `count`): a row with its diagonal and nothing right of it
    (the usual case) is settled by the last one, a row with one block right of the diagonal by both; only rows
    with two or more entries >= row walk further back, one load per step. Replaces a per-call torch pass over
    the whole index on the host side.
    """
    last = tl.load(index_row + count - 1, mask=count > 0, other=-1)
    prev = tl.load(index_row + count - 2, mask=count > 1, other=-1)
    # sorted: prev >= row implies last >= row
    n_full = count - (last >= row).to(tl.int32) - (prev >= row).to(tl.int32)
    probe = tl.load(index_row + n_full - 1, mask=(n_full > 0) & (prev >= row), other=-1)
    while probe >= row:
        n_full -= 1
        probe = tl.load(index_row + n_full - 1, mask=n_full > 0, other=-1)
    return n_full


@triton.jit
def _unmasked_step(acc, m_i, l_i, q, k_base, v_base, k_pos, stride_kn, stride_vn, offs_d, qk_scale):
    """`unscaled_step` over the key rows k_pos (a key tile wholly in the past of every query row: no mask)."""
    return unscaled_step(acc, m_i, l_i, q, k_base + k_pos[:, None] * stride_kn + offs_d[None, :],
                         v_base + k_pos[:, None] * stride_vn + offs_d[None, :], qk_scale)


@triton.jit
def _block_sparse_fwd(
    Q, K, V, Out, cu_seqlens, Index, Count, Mask,
    qk_scale, num_q_heads, n_tiles_m,
    stride_qn, stride_qh, stride_kn, stride_kh, stride_vn, stride_vh, stride_on, stride_oh,
    stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ROW_CHUNK: tl.constexpr, KEY_CHUNK: tl.constexpr, HAS_MASK: tl.constexpr, SUB: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    # Heavy (late) query tiles first: causal rows late in the sequence visit the most blocks.
    tile_m = n_tiles_m - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_q_heads
    h = bh % num_q_heads
    kv_h = h // GROUP
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    start = seq_start.to(tl.int64)  # 64-bit row offsets: packed batches may exceed 2**31 elements
    q_first = tile_m * BLOCK_M
    if q_first >= seq_len:
        return

    offs_m = q_first + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    row_ok = offs_m < seq_len
    q = tl.load(Q + start * stride_qn + offs_m[:, None] * stride_qn + h * stride_qh + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    k_base = K + start * stride_kn + kv_h * stride_kh
    v_base = V + start * stride_vn + kv_h * stride_vh

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    row = q_first // ROW_CHUNK
    index_row = Index + b * stride_ib + h * stride_ih + row * stride_ir
    count = tl.load(Count + b * stride_cb + h * stride_ch + row)
    SUBS: tl.constexpr = KEY_CHUNK // BLOCK_N
    if HAS_MASK:
        mask_row = Mask + b * stride_ib + h * stride_ih + row * stride_ir
        nsub: tl.constexpr = BLOCK_M // SUB
        bit = (tl.arange(0, BLOCK_M) // SUB)[:, None] * nsub + (offs_n // SUB)[None, :]
        for e in range(count):
            bits = tl.load(mask_row + e)
            k_pos = tl.load(index_row + e) * KEY_CHUNK + offs_n
            key_ok = k_pos < seq_len
            sel = ((bits >> bit.to(tl.int64)) & 1) != 0
            keep = sel & key_ok[None, :] & (k_pos[None, :] <= offs_m[:, None])
            k_ptrs = k_base + k_pos[:, None] * stride_kn + offs_d[None, :]
            v_ptrs = v_base + k_pos[:, None] * stride_vn + offs_d[None, :]
            acc, m_i, l_i = unscaled_masked_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, keep, key_ok, qk_scale)
    else:
        # 1) entries wholly left of this query tile (a sorted prefix, counted here): no mask at all, and every key
        #    exists, so the loop is branch-free and software-pipelined.
        n_full = _unmasked_prefix(index_row, count, row)
        if WARP_SPECIALIZE:  # Hopper producer/consumer warps (Triton >= 3.4); a tuning option
            for j in tl.range(0, n_full * SUBS, warp_specialize=True):
                k_pos = tl.load(index_row + j // SUBS) * KEY_CHUNK + (j % SUBS) * BLOCK_N + offs_n
                acc, m_i, l_i = _unmasked_step(acc, m_i, l_i, q, k_base, v_base, k_pos, stride_kn, stride_vn, offs_d,
                                               qk_scale)
        else:
            for j in range(n_full * SUBS):
                k_pos = tl.load(index_row + j // SUBS) * KEY_CHUNK + (j % SUBS) * BLOCK_N + offs_n
                acc, m_i, l_i = _unmasked_step(acc, m_i, l_i, q, k_base, v_base, k_pos, stride_kn, stride_vn, offs_d,
                                               qk_scale)
        # 2) the rest (the diagonal chunk, and any block right of it): causal mask.
        for j in range(n_full * SUBS, count * SUBS):
            k_pos = tl.load(index_row + j // SUBS) * KEY_CHUNK + (j % SUBS) * BLOCK_N + offs_n
            key_ok = k_pos < seq_len
            k_ptrs = k_base + k_pos[:, None] * stride_kn + offs_d[None, :]
            v_ptrs = v_base + k_pos[:, None] * stride_vn + offs_d[None, :]
            keep = key_ok[None, :] & (k_pos[None, :] <= offs_m[:, None])
            acc, m_i, l_i = unscaled_masked_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, keep, key_ok, qk_scale)

    # Rows that saw no key at all (an index without their diagonal) are written as zeros, never NaN.
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(Out + start * stride_on + offs_m[:, None] * stride_on + h * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _masked_softmax_pv_tma(acc, m_i, l_i, s, qk_scale, desc_v, seq_start, k_pos, kv_col, offs_m, offs_n, seq_len):
    """Fold a raw score tile s [M, N] of keys k_pos + offs_n with the causal mask (keys right of a query row, or
    past the sample, dropped); the values of keys past the sample are zeroed (they may be the next sample's)."""
    key_pos = k_pos + offs_n
    keep = (key_pos[None, :] < seq_len) & (key_pos[None, :] <= offs_m[:, None])
    s = tl.where(keep, s * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # no key yet: avoid (-inf) - (-inf)
    p = tl.math.exp2(s - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    v = desc_v.load([seq_start + k_pos, kv_col])
    v = tl.where((key_pos < seq_len)[:, None], v, 0.0)
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_new, l_i


@triton.jit
def _tma_tile(
    desc_q, desc_k, desc_v, Out, Index, Count, qk_scale, b, h, seq_start, seq_len, q_first, stride_on, stride_oh,
    stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, PIPELINE_QK: tl.constexpr, PEEL_DIAG: tl.constexpr,
):
    """One query tile (rows q_first .. q_first + BLOCK_M - 1 of sample b, query head h; q_first < seq_len)."""
    kv_col = (h // GROUP) * HEAD_DIM
    offs_m = q_first + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    # q stays as loaded (in shared memory): scaling it here would move it into registers (64 per thread) as the
    # register operand of every wgmma, which made ptxas serialize the wgmma k-steps; the scale goes into the
    # exponent's FMA instead.
    # the index row's bounds first: their (dependent) global loads are then in flight during the Q copy's wait
    row = q_first // CHUNK
    index_row = Index + b * stride_ib + h * stride_ih + row * stride_ir
    count = tl.load(Count + b * stride_cb + h * stride_ch + row)
    n_full = _unmasked_prefix(index_row, count, row)
    q = desc_q.load([seq_start + q_first, h * HEAD_DIM])

    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    SUBS: tl.constexpr = CHUNK // BLOCK_N
    # 1) key tiles wholly left of this query tile: no mask; the loop body is nothing but loads, two dots and the
    #    softmax update, so Triton pipelines the copies (and, with WARP_SPECIALIZE, gives them a producer warp).
    n_unmasked = n_full * SUBS
    masked_from = n_unmasked  # first key tile of the masked loop (2)
    if PIPELINE_QK:
        # Software-pipelined as in FlashAttention-3: issue the next tile's Q K^T (an asynchronous wgmma) before the
        # softmax of the current one, so the tensor cores work while the exponentials run.
        # PEEL_DIAG: the first masked tile (normally the diagonal) joins the pipelined loop as its last "next"
        # tile, so its K copy and Q K^T are issued while the last unmasked tile's softmax runs; it is then folded
        # with the causal mask after the loop.
        n_pipe = n_unmasked
        if PEEL_DIAG:
            n_pipe = tl.minimum(n_unmasked + 1, count * SUBS)
        if n_pipe > 0:
            k_pos = tl.load(index_row) * CHUNK
            s = tl.dot(q, tl.trans(desc_k.load([seq_start + k_pos, kv_col])))
            for j in range(1, n_pipe):
                next_pos = tl.load(index_row + j // SUBS) * CHUNK + (j % SUBS) * BLOCK_N
                s_next = tl.dot(q, tl.trans(desc_k.load([seq_start + next_pos, kv_col])))
                acc, m_i, l_i = softmax_pv_desc(acc, m_i, l_i, s, qk_scale, desc_v, seq_start + k_pos, kv_col)
                s = s_next
                k_pos = next_pos
            if PEEL_DIAG:
                # the last tile may be unmasked (no masked tile in this row): the mask then keeps every key
                acc, m_i, l_i = _masked_softmax_pv_tma(acc, m_i, l_i, s, qk_scale, desc_v, seq_start, k_pos, kv_col,
                                                       offs_m, offs_n, seq_len)
            else:
                acc, m_i, l_i = softmax_pv_desc(acc, m_i, l_i, s, qk_scale, desc_v, seq_start + k_pos, kv_col)
        masked_from = n_pipe
    else:
        for j in tl.range(0, n_unmasked, warp_specialize=WARP_SPECIALIZE):
            k_row = seq_start + tl.load(index_row + j // SUBS) * CHUNK + (j % SUBS) * BLOCK_N
            s = tl.dot(q, tl.trans(desc_k.load([k_row, kv_col])))
            acc, m_i, l_i = softmax_pv_desc(acc, m_i, l_i, s, qk_scale, desc_v, k_row, kv_col)
    # 2) the diagonal chunk (and anything right of it): causal mask; keys past the sample masked, their values
    #    zeroed (they may belong to the next sample).
    for j in range(masked_from, count * SUBS):
        k_pos = tl.load(index_row + j // SUBS) * CHUNK + (j % SUBS) * BLOCK_N
        s = tl.dot(q, tl.trans(desc_k.load([seq_start + k_pos, kv_col])))
        acc, m_i, l_i = _masked_softmax_pv_tma(acc, m_i, l_i, s, qk_scale, desc_v, seq_start, k_pos, kv_col,
                                               offs_m, offs_n, seq_len)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # rows that saw no key are written as zeros, never NaN
    out = acc / l_safe[:, None]
    # Plain masked store: a bulk store of the whole tile would overwrite the next sample's first rows.
    start = seq_start.to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM)
    tl.store(Out + start * stride_on + offs_m[:, None] * stride_on + h * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=(offs_m < seq_len)[:, None])


@triton.jit
def _block_sparse_fwd_tma(
    desc_q, desc_k, desc_v, Out, cu_seqlens, Index, Count,
    qk_scale, num_q_heads, n_tiles_m, stride_on, stride_oh,
    stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, PIPELINE_QK: tl.constexpr, PEEL_DIAG: tl.constexpr,
):
    """chunk_size >= 64 through Hopper tensor descriptors (bulk tensor copies) for Q, K and V; grid
    (n_tiles_m, B * Hq), one query tile per program.

    desc_q: 2-D view [N, Hq * D] with block [BLOCK_M, D]; desc_k / desc_v: [N, Hkv * D] with block [BLOCK_N, D].
    A head is a column offset (h * D), a token a row; rows past the end of the tensor come back as zeros, rows of
    the next packed sample are read but never kept (keys masked, query rows not stored).
    """
    tile_m = n_tiles_m - 1 - tl.program_id(0)  # heavy (late) query tiles first
    bh = tl.program_id(1)
    b = bh // num_q_heads
    h = bh % num_q_heads
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    q_first = tile_m * BLOCK_M
    if q_first >= seq_len:
        return
    _tma_tile(desc_q, desc_k, desc_v, Out, Index, Count, qk_scale, b, h, seq_start, seq_len, q_first,
              stride_on, stride_oh, stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
              GROUP, HEAD_DIM, BLOCK_M, BLOCK_N, CHUNK, WARP_SPECIALIZE, PIPELINE_QK, PEEL_DIAG)


@triton.jit
def _block_sparse_fwd_tma_persistent(
    desc_q, desc_k, desc_v, Out, cu_seqlens, Index, Count, Order,
    qk_scale, num_q_heads, n_bh, n_items, stride_on, stride_oh,
    stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, PIPELINE_QK: tl.constexpr, PEEL_DIAG: tl.constexpr,
):
    """Persistent grid of the TMA kernel: program p runs work items Order[p], Order[p + P], ... (P programs).

    Order [n_items] int32: work item = tile_m * (B * Hq) + b * Hq + h, sorted heaviest first (by block count of
    the tile's index row) on the device by the wrapper, so each program's next item is the next-heaviest left.
    The next item's Q copy is not overlapped with this item's epilogue (Triton 3.6 does not pipeline across the
    item loop). Local sm_90 build with Triton 3.6 (benchmarks/results/block_sparse_s6/compile_sm90.log): at
    128x128 / 8 warps this kernel needs 232-272 bytes of stack (spills; the grid kernel: none), with or without a
    branch around the tile; at 64x64 / 4 warps 8 bytes.
    """
    # num_stages=1: only the inner key loops are software-pipelined, not this loop over work items
    for it in tl.range(tl.program_id(0), n_items, tl.num_programs(0), num_stages=1):
        item = tl.load(Order + it)
        bh = item % n_bh
        tile_m = item // n_bh
        b = bh // num_q_heads
        h = bh % num_q_heads
        seq_start = tl.load(cu_seqlens + b)
        seq_len = tl.load(cu_seqlens + b + 1) - seq_start
        q_first = tile_m * BLOCK_M
        if q_first < seq_len:
            _tma_tile(desc_q, desc_k, desc_v, Out, Index, Count, qk_scale, b, h, seq_start, seq_len, q_first,
                      stride_on, stride_oh, stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
                      GROUP, HEAD_DIM, BLOCK_M, BLOCK_N, CHUNK, WARP_SPECIALIZE, PIPELINE_QK, PEEL_DIAG)


def pad_rows_to_tiles(block_index: torch.Tensor, block_count: torch.Tensor,
                      r: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Pad a chunk-level index [B, H, n_rows, max_k] / counts [B, H, n_rows] with empty rows (-1 / 0) to a multiple
    of r rows (r query chunks per tile). Returns (index, count, n_tiles)."""
    n_rows = block_index.shape[2]
    n_tiles = -(-n_rows // r)
    pad = n_tiles * r - n_rows
    if pad:
        block_index = torch.nn.functional.pad(block_index, (0, 0, 0, pad), value=-1)
        block_count = torch.nn.functional.pad(block_count, (0, pad), value=0)
    return block_index, block_count, n_tiles


def chunk_index_to_tiles(block_index: torch.Tensor, block_count: torch.Tensor, chunk_size: int,
                         tile: int = TILE) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Convert a chunk-level index (chunk_size < tile) into a tile-level index plus per-tile selection bits.

    Args:
        block_index: [B, H, n_qblocks, max_k] int32 key-chunk ids, sorted ascending, -1 padded.
        block_count: [B, H, n_qblocks] int32 valid entries per row.
    Returns:
        tile_index [B, H, n_qtiles, R*max_k] int32 (sorted ascending, -1 padded), tile_count [B, H, n_qtiles]
        int32, tile_bits [B, H, n_qtiles, R*max_k] int64 where R = tile // chunk_size and bit i*R + j says that
        query sub-block i of the tile attends to key sub-block j of that key tile.
    """
    r = tile // chunk_size
    batch, heads, n_rows, max_k = block_index.shape
    block_index, block_count, n_tiles = pad_rows_to_tiles(block_index, block_count, r)
    device = block_index.device
    idx = block_index.view(batch, heads, n_tiles, r, max_k).long()
    valid = torch.arange(max_k, device=device) < block_count.view(batch, heads, n_tiles, r, 1)
    q_sub = torch.arange(r, device=device).view(1, 1, 1, r, 1)
    bitpos = q_sub * r + idx % r
    key_tile = idx // r
    big = n_rows * r * r + r * r  # larger than any valid code
    code = torch.where(valid, key_tile * (r * r) + bitpos, big).view(batch, heads, n_tiles, r * max_k)
    code, _ = torch.sort(code, dim=-1)
    valid = code < big
    key_tile = code // (r * r)
    bit = torch.where(valid, torch.ones_like(code) << (code % (r * r)), 0)
    prev_tile = torch.nn.functional.pad(key_tile, (1, 0), value=-1)[..., :-1]
    is_new = valid & (key_tile != prev_tile)
    tile_count = is_new.sum(-1).to(torch.int32)
    slot = torch.cumsum(is_new, -1) - 1  # slot of this code's key tile in the output row
    width = r * max_k
    dump = torch.full_like(slot, width)
    slot = torch.where(valid, slot, dump)
    tile_index = torch.full((batch, heads, n_tiles, width + 1), -1, dtype=torch.int64, device=device)
    tile_index.scatter_(-1, slot, torch.where(valid, key_tile, -1))
    tile_bits = torch.zeros((batch, heads, n_tiles, width + 1), dtype=torch.int64, device=device)
    # Distinct (query sub-block, key sub-block) pairs have distinct bits, so a sum is a bitwise or.
    tile_bits.scatter_add_(-1, slot, bit)
    return tile_index[..., :width].to(torch.int32).contiguous(), tile_count, tile_bits[..., :width].contiguous()


# Launch options for the TMA path chosen by the index width (block_index.shape[-1], the most key blocks one query
# block visits: a host-known proxy for the work per row). Rows that visit few blocks pay the per-program fixed costs
# (Q copy, pipeline fill, diagonal tile, epilogue: ~1.5-2 block-times) more often. Entries:
# (chunk_size, head_dim, widest index this rule applies to, launch tuple). Empty until a tuning run shows a variant
# beating the default at small widths (benchmarks/tune_block_sparse.py prints the winner per case; results in
# benchmarks/results/block_sparse_s6/). Checked in order; the first match wins.
WIDTH_RULES = []


def _launch_config(chunk_size: int, head_dim: int, tma: bool = False, index_width: Optional[int] = None):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize, pipeline_qk, peel_diag, persistent) tuned on H100.

    benchmarks/results/block_sparse_h100_s2/tune_r2.log (128K, ~10% of blocks, best of 3 interleaved medians):
    tma path, chunk 128: (128, 128, 8, 2) + pipelined Q K^T 29.9 ms; (128, 128, 8, 2) 31.8; (128, 128, 8, 3) 32.1;
    (64, 64, 4, 3) 34.2; (64, 128, 4, 2) 39.7; pointer (128, 128, 8, 3) 32.7. chunk 64: (64, 64, 4, 3) pipelined
    33.4 ms; (64, 64, 4, 2) 34.0; (64, 64, 4, 3) 35.4; pointer (64, 64, 4, 2) 37.0. warp_specialize: no effect at
    8 warps, does not compile at 4 (tune_r1.log). `WIDTH_RULES` (by index width) take precedence on the tma path.
    """
    if tma:
        for rule_chunk, rule_dim, max_width, launch in WIDTH_RULES:
            if rule_chunk == chunk_size and rule_dim == head_dim and index_width is not None \
                    and index_width <= max_width:
                return _full_launch(launch)
        if chunk_size >= 128:
            return 128, 128, 8, 2, False, True, False, 0
        return 64, 64, 4, 3, False, True, False, 0
    if chunk_size >= 128:
        return 128, 128, 8, 3, False, False, False, 0
    return 64, 64, 4, 2, False, False, False, 0


def _full_launch(launch) -> tuple:
    """A launch tuple (BLOCK_M, BLOCK_N, num_warps, num_stages[, warp_specialize[, pipeline_qk[, peel_diag[,
    persistent]]]]) with the optional fields filled in (False / 0)."""
    launch = tuple(launch)
    if not 4 <= len(launch) <= 8:
        raise ValueError(f"launch must be (BLOCK_M, BLOCK_N, num_warps, num_stages[, warp_specialize[, pipeline_qk"
                         f"[, peel_diag[, persistent]]]]), got {launch}")
    block_m, block_n, warps, stages = (int(x) for x in launch[:4])
    flags = [bool(x) for x in launch[4:7]] + [False] * (7 - len(launch[:7]))
    persistent = int(launch[7]) if len(launch) > 7 else 0
    if flags[2] and not flags[1]:
        raise ValueError("launch: peel_diag needs pipeline_qk (the diagonal tile joins the pipelined Q K^T loop); "
                         "set pipeline_qk=True or peel_diag=False")
    if persistent < 0:
        raise ValueError(f"launch: persistent is programs per SM (0 = off), got {persistent}")
    return (block_m, block_n, warps, stages, *flags, persistent)


def _num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a cached host query, no sync); 4 for the CPU interpreter, so
    the persistent loop runs several items per program in tests."""
    if device.type != "cuda":
        return 4
    return torch.cuda.get_device_properties(device).multi_processor_count


def persistent_order(count: torch.Tensor, n_tiles_m: int, block_m: int, chunk_size: int) -> torch.Tensor:
    """Work items of the persistent kernel, heaviest first, computed on the device (no host sync).

    count [B, Hq, n_qblocks] int32 entries per index row. Item = tile_m * (B * Hq) + b * Hq + h, its weight the
    entry count of the index row that query tile reads. Returns [n_tiles_m * B * Hq] int32 (stable sort: among
    equal weights, lower item ids first).
    """
    rows = torch.arange(n_tiles_m, device=count.device) * block_m // chunk_size  # [T] index row of each tile
    weight = count[:, :, rows].permute(2, 0, 1).reshape(-1)  # [T * B * Hq]
    return torch.argsort(weight, descending=True, stable=True).to(torch.int32)


def tma_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the tensor-descriptor kernel can read these tensors: a CUDA GPU with bulk tensor copies (compute
    capability >= 9), 16-bit data, heads contiguous within a token (stride(1) == D), 16-byte aligned rows."""
    if TensorDescriptor is None or not q.is_cuda or torch.cuda.get_device_capability(q.device)[0] < 9:
        return False
    if q.dtype not in (torch.float16, torch.bfloat16):
        return False
    return all(t.stride(2) == 1 and t.stride(1) == t.shape[2] and (t.stride(0) * t.element_size()) % 16 == 0
               and t.data_ptr() % 16 == 0 for t in (q, k, v))


def _descriptor(t: torch.Tensor, rows: int) -> "TensorDescriptor":
    """[N, H, D] (heads contiguous) as a 2-D [N, H * D] descriptor with a [rows, D] block."""
    n, heads, dim = t.shape
    return TensorDescriptor(t, [n, heads * dim], [t.stride(0), 1], [rows, dim])


GLUON_TRITON = "3.6."  # the Triton version the Gluon kernel was tuned and measured with (path="auto" picks it there)


def gluon_preferred(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int) -> bool:
    """Whether path="auto" runs the Gluon kernel: where it runs (`gluon.gluon_supported`) and was measured faster
    than the TMA kernel: head dim 128 with the Triton it was measured with (3.6; H200, chunk 128, 16K-128K:
    1.07-1.35x; benchmarks/RESULTS.md, session 10). Head dim 64, and other Triton versions, run it only with
    path="gluon" (Triton 3.9 builds it with 136 bytes of register spills per thread, unmeasured)."""
    if not q.is_cuda or q.shape[2] != 128 or chunk_size % 128 or not triton.__version__.startswith(GLUON_TRITON):
        return False
    try:
        from . import gluon as gluon_kernel
    except ImportError:  # Triton without Gluon
        return False
    return gluon_kernel.gluon_supported(q, k, v, chunk_size)


def _run_gluon(q, k, v, cu_seqlens, block_index, block_count, chunk_size, scale, out, launch, forced):
    """The persistent warp-specialized kernel (kernels/block_sparse/gluon.py); launch=dict(sorted=True) runs the
    items heaviest first by index entry count (a device argsort per call) instead of last tile first. forced
    (path="gluon"): the inputs are checked here; otherwise `gluon_preferred` already checked them."""
    try:
        from . import gluon as gluon_kernel
    except ImportError as error:  # Triton without Gluon (< 3.5)
        raise RuntimeError(f"path='gluon' needs Triton >= 3.5 with triton.experimental.gluon ({error}); use "
                           "path='tma' or path='auto'") from error
    if forced and not gluon_kernel.gluon_supported(q, k, v, chunk_size):
        raise ValueError("path='gluon' needs a Hopper GPU (compute capability 9.x), fp16/bf16 q, k, v with heads "
                         f"contiguous within a token, head dim 64 or 128 and chunk_size a multiple of 128 (got "
                         f"{q.device}, {q.dtype}, head dim {q.shape[2]}, chunk_size {chunk_size}); use path='auto'")
    if launch is not None and not isinstance(launch, dict):
        raise ValueError(f"path='gluon' takes launch as a dict of gluon_block_sparse_attention options (k_stages, "
                         f"v_stages, q_bufs, programs, consumer_regs, producer_regs, pingpong) or sorted=True, got "
                         f"{launch!r}")
    index = block_index.to(torch.int32).contiguous()
    count = block_count.to(torch.int32).contiguous()
    options = dict(launch or {})
    if options.pop("sorted", False):  # heaviest-first by entry count (a device sort per call) instead of causal
        tile = gluon_kernel.BLOCK_M.value
        options["order"] = persistent_order(count, index.shape[2] * chunk_size // tile, tile, chunk_size)
    return gluon_kernel.gluon_block_sparse_attention(q, k, v, cu_seqlens, index, count, chunk_size, scale * LOG2E,
                                                     out, **options)


def triton_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    block_index: torch.Tensor,
    block_count: torch.Tensor,
    chunk_size: int,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    launch: Optional[tuple] = None,
    path: str = "auto",
    max_seqlen: Optional[int] = None,
) -> torch.Tensor:
    """Block-sparse causal attention over an explicit block index (see naive_block_sparse_attention).

    Args:
        q: [N, Hq, D]; k, v: [N, Hkv, D] packed varlen; cu_seqlens [B+1] int32.
        block_index: [B, Hq, n_qblocks, max_k] int32 key-chunk ids sorted ascending (-1 padded).
        block_count: [B, Hq, n_qblocks] int32.
        chunk_size: rows and columns per block, a power of two >= 16.
        launch: optional (BLOCK_M, BLOCK_N, num_warps, num_stages[, warp_specialize[, pipeline_qk[, peel_diag[,
            persistent]]]]) override (tuning). tma path only: pipeline_qk issues the next Q K^T before the current
            softmax; peel_diag (needs pipeline_qk) moves the first masked (diagonal) tile into that pipelined loop;
            persistent > 0 launches persistent * (number of SMs) programs that loop over the (query tile, head)
            items, heaviest first. The pointer kernel ignores these three.
        path: "gluon" (the persistent warp-specialized Hopper kernel of `gluon.py`: compute capability 9.x,
            chunk_size a multiple of 128; `launch` may then be a dict of `gluon_block_sparse_attention` options),
            "tma" (tensor descriptors, chunk_size >= 64), "pointer" (plain loads) or "auto" (gluon where
            `gluon_preferred` and launch is None or a dict, else tma where `tma_supported`, else pointer).
            chunk_size < 64 always runs the pointer kernel with selection bits.
        max_seqlen: the longest sample's length, when the caller knows it on the host. Given, the wrapper does no
            device -> host read (the grid comes from block_index.shape[2]); it must agree with the index
            (ceil(max_seqlen / chunk_size) == n_qblocks) or a ValueError is raised. None: read from cu_seqlens
            (one host sync) and checked the same way.
    Returns:
        out [N, Hq, D] in q's dtype (written in place when `out` is given).
    """
    check_prefill_inputs(q, k, v, cu_seqlens)
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"the Triton block-sparse kernel needs chunk_size a power of two >= 16, got {chunk_size}: "
                         "use chunk_size=16 or backend='naive'")
    n_tokens, num_q_heads, head_dim = q.shape
    batch = cu_seqlens.numel() - 1
    if block_index.dim() != 4 or block_count.dim() != 3:
        raise ValueError(f"block_index must be [B, Hq, n_qblocks, max_k] and block_count [B, Hq, n_qblocks]; got "
                         f"{tuple(block_index.shape)}, {tuple(block_count.shape)}")
    n_qblocks = block_index.shape[2]  # host-known: the grid needs no device read
    if tuple(block_index.shape[:3]) != (batch, num_q_heads, n_qblocks) or \
            tuple(block_count.shape) != (batch, num_q_heads, n_qblocks):
        raise ValueError(f"block_index must be [B={batch}, Hq={num_q_heads}, n_qblocks, max_k] and block_count "
                         f"[B, Hq, n_qblocks]; got {tuple(block_index.shape)}, {tuple(block_count.shape)}")
    given = max_seqlen is not None
    longest = int(max_seqlen) if given else max_seqlen_of(cu_seqlens)
    if -(-longest // chunk_size) != n_qblocks:
        fix = ("pass the longest sample's length as max_seqlen (or leave it None to read it from cu_seqlens)"
               if given else "build the index for ceil(max_len / chunk_size) query blocks")
        raise ValueError(f"block_index has n_qblocks={n_qblocks} rows but the longest sample "
                         f"({'max_seqlen=' if given else ''}{longest} tokens) needs ceil({longest} / {chunk_size}) = "
                         f"{-(-longest // chunk_size)}: {fix}")
    scale = head_dim ** -0.5 if scale is None else scale
    if out is None:
        out = torch.empty_like(q)
    cu_seqlens = cu_seqlens.to(torch.int32)

    if path not in ("auto", "gluon", "tma", "pointer"):
        raise ValueError(f"path must be 'auto', 'gluon', 'tma' or 'pointer', got {path!r}")
    if path == "gluon" or (path == "auto" and (launch is None or isinstance(launch, dict))
                           and gluon_preferred(q, k, v, chunk_size)):
        return _run_gluon(q, k, v, cu_seqlens, block_index, block_count, chunk_size, scale, out, launch,
                          forced=path == "gluon")
    if isinstance(launch, dict):
        raise ValueError(f"a launch dict ({launch!r}) configures the Gluon kernel, which path={path!r} does not run "
                         "here (it needs a Hopper GPU, head dim 128, chunk_size % 128 == 0 and Triton "
                         f"{GLUON_TRITON}x; path='gluon' forces it): pass a launch tuple or None")
    if chunk_size < TILE and SMALL_CHUNK_PATH == "gather":
        from .small_chunks import gather_block_sparse_attention  # (it imports this module)
        return gather_block_sparse_attention(q, k, v, cu_seqlens, block_index, block_count, chunk_size,
                                             scale * LOG2E, out, launch=None if launch is None else launch[2:4])
    if chunk_size < TILE:
        index, count, bits = chunk_index_to_tiles(block_index, block_count, chunk_size)
        block_m, block_n, warps, stages = TILE, TILE, 4, 3
        if launch is not None:
            warps, stages = launch[2], launch[3]
        n_tiles_m = index.shape[2]
        _block_sparse_fwd[(n_tiles_m, batch * num_q_heads)](
            q, k, v, out, cu_seqlens, index, count, bits,
            scale * LOG2E, num_q_heads, n_tiles_m,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0),
            out.stride(1), index.stride(0), index.stride(1), index.stride(2), count.stride(0), count.stride(1),
            GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
            ROW_CHUNK=TILE, KEY_CHUNK=TILE, HAS_MASK=True, SUB=chunk_size, WARP_SPECIALIZE=False,
            num_warps=warps, num_stages=stages,
        )
        return out

    index = block_index if block_index.dtype == torch.int32 else block_index.to(torch.int32)
    count = block_count if block_count.dtype == torch.int32 else block_count.to(torch.int32)
    index, count = index.contiguous(), count.contiguous()
    # The unmasked prefix of each row (entries left of the query chunk) is counted inside the kernels.
    use_tma = path == "tma" or (path == "auto" and tma_supported(q, k, v))
    if use_tma and TensorDescriptor is None:
        raise RuntimeError("path='tma' needs Triton >= 3.4 (triton.tools.tensor_descriptor); use path='pointer'")
    if use_tma and not all(t.stride(2) == 1 and t.stride(1) == t.shape[2] for t in (q, k, v)):
        raise ValueError("path='tma' needs q, k, v with heads contiguous within a token (stride(1) == head_dim): "
                         "call .contiguous() or use path='pointer'")
    cfg = _full_launch(launch) if launch is not None else \
        _launch_config(chunk_size, head_dim, use_tma, index_width=block_index.shape[-1])
    block_m, block_n, warps, stages, warp_specialize, pipeline_qk, peel_diag, persistent = cfg
    block_m, block_n = min(block_m, chunk_size), min(block_n, chunk_size)
    n_tiles_m = n_qblocks * chunk_size // block_m
    if use_tma:
        descs = (_descriptor(q, block_m), _descriptor(k, block_n), _descriptor(v, block_n))
        consts = dict(GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
                      CHUNK=chunk_size, WARP_SPECIALIZE=warp_specialize, PIPELINE_QK=pipeline_qk,
                      PEEL_DIAG=peel_diag, num_warps=warps, num_stages=stages)
        strides = (out.stride(0), out.stride(1), index.stride(0), index.stride(1), index.stride(2),
                   count.stride(0), count.stride(1))
        if persistent:
            n_items = n_tiles_m * batch * num_q_heads
            order = persistent_order(count, n_tiles_m, block_m, chunk_size)
            n_programs = min(n_items, persistent * _num_sms(q.device))
            _block_sparse_fwd_tma_persistent[(n_programs,)](
                *descs, out, cu_seqlens, index, count, order, scale * LOG2E, num_q_heads, batch * num_q_heads,
                n_items, *strides, **consts)
            return out
        _block_sparse_fwd_tma[(n_tiles_m, batch * num_q_heads)](
            *descs, out, cu_seqlens, index, count, scale * LOG2E, num_q_heads, n_tiles_m, *strides, **consts)
        return out
    _block_sparse_fwd[(n_tiles_m, batch * num_q_heads)](
        q, k, v, out, cu_seqlens, index, count, index,
        scale * LOG2E, num_q_heads, n_tiles_m,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        index.stride(0), index.stride(1), index.stride(2), count.stride(0), count.stride(1),
        GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n,
        ROW_CHUNK=chunk_size, KEY_CHUNK=chunk_size, HAS_MASK=False, SUB=min(chunk_size, TILE),
        WARP_SPECIALIZE=warp_specialize, num_warps=warps, num_stages=stages,
    )
    return out
