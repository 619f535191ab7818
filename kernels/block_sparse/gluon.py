"""Block-sparse prefill attention for Hopper in Gluon: persistent and warp-specialized (FlashAttention-3's layout).

Same contract as `naive.naive_block_sparse_attention` (chunk_size a multiple of 128, head dim 64 or 128, 16-bit
data, compute capability 9.x). `triton.triton_block_sparse_attention` runs it for path="gluon", and for
path="auto" where `triton.gluon_preferred` (head dim 128: where it was measured faster).

Why a second kernel. The Triton kernel (`triton._block_sparse_fwd_tma`) runs one 128-row query tile per program,
one 255-register program per SM. Every program pays its start (index row, Q copy, pipeline fill), its masked
diagonal tile and its epilogue (~7 us) with nothing overlapping them; rows that visit few blocks (~19 at 3.5 % of
blocks, 128K) lose ~12 % of the tensor-core time to that (benchmarks/RESULTS.md, session 9, Nsight Compute). Here:

* one program per SM loops over the work items (query tile of 128 rows, batch, query head), last query tile first
  (`_work_item`; or an explicit order, e.g. heaviest first);
* a producer warp issues every bulk tensor copy (K and V of the next key tiles, Q of the next item) into rings of
  shared-memory slots (K and V separately: a K slot is refilled once its Q K^T is done), so the next item's data
  arrive while the current item finishes;
* two consumer warpgroups (4 warps, 240 registers each) own 64 query rows each of the same item and read the same
  K/V slots. Each one issues the next tile's Q K^T (an asynchronous wgmma) before the current tile's softmax, and
  P V asynchronously after it (FlashAttention-3's intra-warpgroup overlap); the two warpgroups are scheduled
  independently, so one's softmax overlaps the other's matrix products (PINGPONG forces strict alternation; it did
  not help, session 10).

Synchronisation is by mbarriers in shared memory: q_ready / q_empty per Q buffer, k_ready / k_empty per K slot,
v_ready / v_empty per V slot (the empties count the two consumers). Every partition walks the same item sequence
and the same key tiles, so slot and phase follow from a running tile counter. Keys past a packed sample (the next
sample's rows, finite values) get probability 0; query rows past it are computed but never stored.

H200, Llama-3.1-8B heads, 128K: 10.9 ms at ~3.5 % of 128-blocks, 27.1-27.5 ms (526-535 TFLOP/s) at ~10 %, 1.26-1.28x
FlexAttention with the same mask (benchmarks/RESULTS.md, session 10), with Triton 3.6 (Triton 3.9 builds it with
register spills: path="auto" picks it only on 3.6). Not run by the CPU interpreter: the tests are on the GPU
(tests/gpu/test_block_sparse_gpu.py).
"""
from typing import Optional

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from .triton import tma_supported

# Bulk tensor copy global -> shared: `async_load` since Triton 3.7 (the old name raises there), the old name before.
_tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared

SHARED_MEMORY_BYTES = 229376  # Hopper's 227 KB per block, less 3 KB for the mbarriers and Triton's own scratch
WG_ROWS = gl.constexpr(64)   # query rows per consumer warpgroup
BLOCK_M = gl.constexpr(128)  # query rows per work item (two consumer warpgroups)
BLOCK_N = gl.constexpr(128)  # keys per K/V tile


@gluon.jit
def _work_item(Order, cu_seqlens, it, n_bh, n_items, num_q_heads, SORTED: gl.constexpr):
    """Work item `it`: (b, h, q_first, seq_start, seq_len). SORTED: Order[it] (item ids sorted by the entry count
    of their index row, heaviest first); else the causal order, last query tile first (all (b, h) of a tile side by
    side): later tiles can list more blocks, and it needs no sort on the host side."""
    if SORTED:
        item = gl.load(Order + it)
    else:
        item = (n_items // n_bh - 1 - it // n_bh) * n_bh + it % n_bh
    bh = item % n_bh
    b = bh // num_q_heads
    seq_start = gl.load(cu_seqlens + b)
    seq_len = gl.load(cu_seqlens + b + 1) - seq_start
    return b, bh % num_q_heads, (item // n_bh) * BLOCK_M, seq_start, seq_len


@gluon.jit
def _index_row(Index, Count, b, h, row, stride_ib, stride_ih, stride_ir, stride_cb, stride_ch):
    """(pointer to index row `row` of (b, h), its entry count)."""
    count = gl.load(Count + b * stride_cb + h * stride_ch + row)
    return Index + b * stride_ib + h * stride_ih + row * stride_ir, count


@gluon.jit
def _unmasked_prefix(index_row, count, row):
    """Entries of a sorted index row strictly left of query chunk `row` (they need no causal mask).

    The row is sorted ascending, so those entries form a prefix: walk back from the end while entries are >= row
    (usually one step: the diagonal is the last entry). The Gluon twin of `triton._unmasked_prefix` (that one also
    compiles here, Triton 3.6, but was not run on the GPU inside this kernel yet).
    """
    n_full = count
    probe = gl.load(index_row + n_full - 1, mask=n_full > 0, other=-1)
    while probe >= row:
        n_full -= 1
        probe = gl.load(index_row + n_full - 1, mask=n_full > 0, other=-1)
    return n_full


@gluon.jit
def _producer(desc_q, desc_k, desc_v, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty,
              Order, cu_seqlens, Index, Count, num_q_heads, n_bh, n_items,
              stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
              GROUP: gl.constexpr, HEAD_DIM: gl.constexpr, CHUNK: gl.constexpr, K_STAGES: gl.constexpr,
              V_STAGES: gl.constexpr, Q_BUFS: gl.constexpr, SORTED: gl.constexpr):
    """One warp: all bulk tensor copies, in the order the consumers use them: K_0, Q, K_1, V_0, K_2, V_1, ...
    (the consumers issue Q K_j^T before P_{j-1} V_{j-1}; K_0 goes first because with one Q buffer the Q copy waits
    for the previous item's last Q K^T, while K_0's slot is usually free). K and V have rings of their own, so a
    K slot is refilled as soon as its Q K^T is done, without waiting for the P V of the same tile."""
    SUBS: gl.constexpr = CHUNK // BLOCK_N
    tile = 0  # running K/V tile counter: K slot tile % K_STAGES, V slot tile % V_STAGES
    local = 0  # running item counter of this program: Q buffer local % Q_BUFS
    for it in range(gl.program_id(0), n_items, gl.num_programs(0)):
        b, h, q_first, seq_start, seq_len = _work_item(Order, cu_seqlens, it, n_bh, n_items, num_q_heads, SORTED)
        if q_first < seq_len:
            index_row, count = _index_row(Index, Count, b, h, q_first // CHUNK, stride_ib, stride_ih, stride_ir,
                                          stride_cb, stride_ch)
            q_buf = (local % Q_BUFS) * 2
            q_phase = (local // Q_BUFS) & 1
            kv_col = (h // GROUP) * HEAD_DIM
            n_tiles = count * SUBS
            q_after = gl.minimum(n_tiles, 1)  # Q goes after K_0: K_0's slot is free before the Q buffer is
            prev_row = 0
            for j in range(n_tiles + 1):
                k_row = seq_start + gl.load(index_row + j // SUBS, mask=j < n_tiles, other=0) * CHUNK \
                    + (j % SUBS) * BLOCK_N
                if j < n_tiles:  # K of tile j
                    g = tile + j
                    slot = g % K_STAGES
                    mbarrier.wait(k_empty.index(slot), ((g // K_STAGES) & 1) ^ 1)
                    mbarrier.expect(k_ready.index(slot), desc_k.block_type.nbytes)
                    _tma_load(desc_k, [k_row, kv_col], k_ready.index(slot), k_smem.index(slot))
                if j == q_after:  # Q of both consumers (its buffer frees after the previous item's last Q K^T)
                    for w in gl.static_range(2):
                        mbarrier.wait(q_empty.index(q_buf + w), q_phase ^ 1)
                        mbarrier.expect(q_ready.index(q_buf + w), desc_q.block_type.nbytes)
                        _tma_load(desc_q, [seq_start + q_first + w * WG_ROWS, h * HEAD_DIM], q_ready.index(q_buf + w),
                                  q_smem.index(q_buf + w))
                if j > 0:  # V of tile j - 1
                    g = tile + j - 1
                    slot = g % V_STAGES
                    mbarrier.wait(v_empty.index(slot), ((g // V_STAGES) & 1) ^ 1)
                    mbarrier.expect(v_ready.index(slot), desc_v.block_type.nbytes)
                    _tma_load(desc_v, [prev_row, kv_col], v_ready.index(slot), v_smem.index(slot))
                prev_row = k_row
            tile += n_tiles
            local += 1


@gluon.jit
def _wait_turn(turn, ev, WG: gl.constexpr, PINGPONG: gl.constexpr):
    """PINGPONG: the two consumers issue their matrix products in strict alternation (FlashAttention-3's warpgroup
    scheduling), so one's softmax runs while the other's products occupy the tensor cores. Issue event `ev` of
    consumer 0 waits for event ev - 1 of consumer 1 (its first event waits for nothing), event ev of consumer 1 for
    event ev of consumer 0."""
    if PINGPONG:
        mbarrier.wait(turn.index(WG), (ev & 1) ^ (1 - WG))


@gluon.jit
def _pass_turn(turn, WG: gl.constexpr, PINGPONG: gl.constexpr):
    if PINGPONG:
        mbarrier.arrive(turn.index(1 - WG))


@gluon.jit
def _softmax_tile(s, m_i, l_i, qk_scale, MASKED: gl.constexpr, key_first, rows, seq_len,
                  s_layout: gl.constexpr):
    """Online-softmax update from raw scores s [64, BLOCK_N] (unscaled): returns (p, m_new, l_new, alpha).

    MASKED: keys right of a query row or past the sample get probability 0 (rows with no key yet keep m = -inf
    and subtract 0, so exp2 never sees (-inf) - (-inf)).
    """
    if MASKED:
        keys = key_first + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        keep = (keys[None, :] <= rows[:, None]) & (keys[None, :] < seq_len)
        s = gl.where(keep, s, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        m_safe = gl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        m_safe = m_new
    p = gl.exp2(s * qk_scale - m_safe[:, None])
    alpha = gl.exp2(m_i - m_safe)
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, m_new, l_i, alpha


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
              Order, cu_seqlens, Index, Count, Out, qk_scale, num_q_heads, n_bh, n_items,
              stride_on, stride_oh, stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
              HEAD_DIM: gl.constexpr, CHUNK: gl.constexpr, K_STAGES: gl.constexpr, V_STAGES: gl.constexpr,
              Q_BUFS: gl.constexpr, PINGPONG: gl.constexpr, SORTED: gl.constexpr, WG: gl.constexpr):
    """One warpgroup: rows WG * 64 .. WG * 64 + 63 of every work item of this program."""
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_row_layout: gl.constexpr = gl.SliceLayout(1, o_layout)
    SUBS: gl.constexpr = CHUNK // BLOCK_N
    dtype: gl.constexpr = k_smem.dtype
    zero_s = gl.zeros([WG_ROWS, BLOCK_N], gl.float32, s_layout)
    tile = 0
    local = 0
    ev = 0  # matrix-product issue events so far (PINGPONG turns)
    for it in range(gl.program_id(0), n_items, gl.num_programs(0)):
        b, h, q_first, seq_start, seq_len = _work_item(Order, cu_seqlens, it, n_bh, n_items, num_q_heads, SORTED)
        if q_first < seq_len:
            row = q_first // CHUNK
            index_row, count = _index_row(Index, Count, b, h, row, stride_ib, stride_ih, stride_ir, stride_cb,
                                          stride_ch)
            n_tiles = count * SUBS
            n_unmasked = _unmasked_prefix(index_row, count, row) * SUBS
            rows = q_first + WG * WG_ROWS + gl.arange(0, WG_ROWS, layout=row_layout)
            q_buf = (local % Q_BUFS) * 2 + WG
            q = q_smem.index(q_buf)
            mbarrier.wait(q_ready.index(q_buf), (local // Q_BUFS) & 1)
            m_i = gl.full([WG_ROWS], float("-inf"), gl.float32, row_layout)
            l_i = gl.zeros([WG_ROWS], gl.float32, row_layout)
            acc = gl.zeros([WG_ROWS, HEAD_DIM], gl.float32, o_layout)
            # no key tile at all (an index row without its diagonal): Q is released at once, the rows stay zero
            mbarrier.arrive(q_empty.index(q_buf), pred=n_tiles == 0)
            if n_tiles > 0:
                k_slot = tile % K_STAGES
                mbarrier.wait(k_ready.index(k_slot), (tile // K_STAGES) & 1)
                _wait_turn(turn, ev, WG, PINGPONG)
                s = warpgroup_mma(q, k_smem.index(k_slot).permute((1, 0)), zero_s, use_acc=False, is_async=True)
                _pass_turn(turn, WG, PINGPONG)
                ev += 1
                s = warpgroup_mma_wait(0, deps=(s,))
                mbarrier.arrive(k_empty.index(k_slot))
                mbarrier.arrive(q_empty.index(q_buf), pred=n_tiles == 1)
                if n_unmasked > 0:
                    p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, False, 0, rows, seq_len, s_layout)
                else:
                    key_first = gl.load(index_row) * CHUNK
                    p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, True, key_first, rows, seq_len,
                                                       s_layout)
                for j in range(1, n_tiles):
                    # issue Q K^T of tile j, then P V of tile j - 1; the softmax of j overlaps that P V
                    g = tile + j
                    k_slot = g % K_STAGES
                    v_slot = (g - 1) % V_STAGES
                    p_op = gl.convert_layout(p.to(dtype), p_layout)
                    mbarrier.wait(k_ready.index(k_slot), (g // K_STAGES) & 1)
                    mbarrier.wait(v_ready.index(v_slot), ((g - 1) // V_STAGES) & 1)
                    _wait_turn(turn, ev, WG, PINGPONG)
                    s = warpgroup_mma(q, k_smem.index(k_slot).permute((1, 0)), zero_s, use_acc=False,
                                      is_async=True)
                    acc = warpgroup_mma(p_op, v_smem.index(v_slot), acc, is_async=True)
                    _pass_turn(turn, WG, PINGPONG)
                    ev += 1
                    s = warpgroup_mma_wait(1, deps=(s,))
                    mbarrier.arrive(k_empty.index(k_slot))  # tile j's K is consumed
                    mbarrier.arrive(q_empty.index(q_buf), pred=j == n_tiles - 1)
                    if j < n_unmasked:
                        p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, False, 0, rows, seq_len,
                                                           s_layout)
                    else:
                        key_first = gl.load(index_row + j // SUBS) * CHUNK + (j % SUBS) * BLOCK_N
                        p, m_i, l_i, alpha = _softmax_tile(s, m_i, l_i, qk_scale, True, key_first, rows, seq_len,
                                                           s_layout)
                    acc = warpgroup_mma_wait(0, deps=(acc,))
                    mbarrier.arrive(v_empty.index(v_slot))  # tile j - 1's V is consumed
                    acc = acc * gl.convert_layout(alpha, o_row_layout)[:, None]
                last = tile + n_tiles - 1
                v_slot = last % V_STAGES
                p_op = gl.convert_layout(p.to(dtype), p_layout)
                mbarrier.wait(v_ready.index(v_slot), (last // V_STAGES) & 1)
                _wait_turn(turn, ev, WG, PINGPONG)
                acc = warpgroup_mma(p_op, v_smem.index(v_slot), acc, is_async=True)
                _pass_turn(turn, WG, PINGPONG)
                ev += 1
                acc = warpgroup_mma_wait(0, deps=(acc,))
                mbarrier.arrive(v_empty.index(v_slot))
                tile += n_tiles
            # epilogue: rows that saw no key are written as zeros, never NaN
            l_o = gl.convert_layout(l_i, o_row_layout)
            out = acc / gl.where(l_o == 0.0, 1.0, l_o)[:, None]
            out_rows = q_first + WG * WG_ROWS + gl.arange(0, WG_ROWS, layout=o_row_layout)
            cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
            ptrs = Out + (seq_start + out_rows).to(gl.int64)[:, None] * stride_on + h * stride_oh + cols[None, :]
            gl.store(ptrs, out.to(Out.dtype.element_ty), mask=(out_rows < seq_len)[:, None])
            local += 1


@gluon.jit
def _block_sparse_fwd_ws(
    desc_q, desc_k, desc_v, Out, cu_seqlens, Index, Count, Order,
    qk_scale, num_q_heads, n_bh, n_items, stride_on, stride_oh,
    stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
    GROUP: gl.constexpr, HEAD_DIM: gl.constexpr, CHUNK: gl.constexpr, K_STAGES: gl.constexpr,
    V_STAGES: gl.constexpr, Q_BUFS: gl.constexpr, CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr,
    PINGPONG: gl.constexpr, SORTED: gl.constexpr,
):
    """Persistent grid: program p runs items p, p + P, ... of the work order (`_work_item`); 4 (default
    partition, consumer 0) + 4 (consumer 1) + 1 (producer) warps. desc_q: [N, Hq * D] with block [64, D];
    desc_k / desc_v: [N, Hkv * D] with block [128, D]."""
    dtype: gl.constexpr = desc_k.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2 * Q_BUFS, WG_ROWS, HEAD_DIM], desc_q.layout)
    k_smem = gl.allocate_shared_memory(dtype, [K_STAGES, BLOCK_N, HEAD_DIM], desc_k.layout)
    v_smem = gl.allocate_shared_memory(dtype, [V_STAGES, BLOCK_N, HEAD_DIM], desc_v.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [2 * Q_BUFS, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2 * Q_BUFS, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2 * Q_BUFS):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=1)
    for i in gl.static_range(K_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # both consumer warpgroups release a slot
    for i in gl.static_range(V_STAGES):
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=2)
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(turn.index(i), count=1)

    # (tuples written out per partition: a constexpr inside a tuple built with `+` reaches the partition as a
    # tensor in Triton 3.6)
    gl.warp_specialize([
        (_consumer, (q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
                     Order, cu_seqlens, Index, Count, Out, qk_scale, num_q_heads, n_bh, n_items,
                     stride_on, stride_oh, stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
                     HEAD_DIM, CHUNK, K_STAGES, V_STAGES, Q_BUFS, PINGPONG, SORTED, 0)),
        (_consumer, (q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turn,
                     Order, cu_seqlens, Index, Count, Out, qk_scale, num_q_heads, n_bh, n_items,
                     stride_on, stride_oh, stride_ib, stride_ih, stride_ir, stride_cb, stride_ch,
                     HEAD_DIM, CHUNK, K_STAGES, V_STAGES, Q_BUFS, PINGPONG, SORTED, 1)),
        (_producer, (desc_q, desc_k, desc_v, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready,
                     v_empty, Order, cu_seqlens, Index, Count, num_q_heads, n_bh, n_items,
                     stride_ib, stride_ih, stride_ir, stride_cb, stride_ch, GROUP, HEAD_DIM, CHUNK, K_STAGES,
                     V_STAGES, Q_BUFS, SORTED)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


def gluon_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int) -> bool:
    """Whether `gluon_block_sparse_attention` runs these inputs: a Hopper GPU (compute capability 9.x), 16-bit
    data, head dim 64 or 128, heads contiguous within a token, 16-byte aligned rows, chunk_size a multiple of 128."""
    # the layout / alignment / 16-bit rules are the TMA kernel's (`tma_supported`); Gluon adds Hopper only (no
    # Blackwell wgmma), one dtype for q, k, v (the shared-memory buffers share it), head dims and chunk multiple
    if not tma_supported(q, k, v) or torch.cuda.get_device_capability(q.device)[0] != 9:
        return False
    return q.shape[2] in (64, 128) and chunk_size % BLOCK_N.value == 0 and k.dtype == v.dtype == q.dtype


def _descriptor(t: torch.Tensor, rows: int) -> TensorDescriptor:
    """[N, H, D] (heads contiguous) as a 2-D [N, H * D] descriptor with a [rows, D] block."""
    n, heads, dim = t.shape
    dtype = gl.bfloat16 if t.dtype == torch.bfloat16 else gl.float16
    layout = gl.NVMMASharedLayout.get_default_for([rows, dim], dtype)
    return TensorDescriptor(t, [n, heads * dim], [t.stride(0), 1], [rows, dim], layout)


def gluon_block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
    index: torch.Tensor, count: torch.Tensor, chunk_size: int, qk_scale: float, out: torch.Tensor,
    order: Optional[torch.Tensor] = None, k_stages: int = 3, v_stages: int = 3, q_bufs: int = 1,
    programs: Optional[int] = None, consumer_regs: int = 240, producer_regs: int = 24, pingpong: bool = False,
) -> torch.Tensor:
    """Launch the persistent warp-specialized kernel (inputs already checked by the Triton wrapper).

    q: [N, Hq, D]; k, v: [N, Hkv, D]; cu_seqlens [B+1] int32; index [B, Hq, n_qblocks, max_k] int32 sorted;
    count [B, Hq, n_qblocks] int32; qk_scale = softmax scale * log2(e); out [N, Hq, D];
    order: None (the causal order: last 128-row query tile first, no host-side work) or [n_items] int32 work items
    (tile_m * B * Hq + b * Hq + h) in the order to run them, e.g. `triton.persistent_order` (heaviest first);
    k_stages / v_stages: slots of the K and V rings (32 KB each at head dim 128); q_bufs: Q buffers per consumer
    (2 lets the next item's Q arrive before the current item's last Q K^T; 2 x 16 KB). 227 KB of shared memory
    bound them: (k_stages + v_stages) * 32 + q_bufs * 32 <= 224 at head dim 128.
    programs: grid size (default: the number of SMs); pingpong: the consumers issue their matrix products in
    strict alternation (`_wait_turn`).
    """
    batch = cu_seqlens.numel() - 1
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    smem = (k_stages + v_stages) * BLOCK_N.value * head_dim * 2 + q_bufs * 2 * WG_ROWS.value * head_dim * 2
    if min(k_stages, v_stages, q_bufs) < 1 or smem > SHARED_MEMORY_BYTES:
        raise ValueError(f"k_stages={k_stages}, v_stages={v_stages}, q_bufs={q_bufs} need {smem} bytes of shared "
                         f"memory at head dim {head_dim}; each must be >= 1 and the total <= {SHARED_MEMORY_BYTES} "
                         "(at head dim 128: k_stages + v_stages + q_bufs <= 7)")
    n_bh = batch * num_q_heads
    n_items = index.shape[2] * chunk_size // BLOCK_M.value * n_bh
    if order is not None and order.numel() != n_items:
        raise ValueError(f"order must list the {n_items} work items (128-row query tiles x B x Hq), got "
                         f"{order.numel()}")
    if programs is None:
        programs = torch.cuda.get_device_properties(q.device).multi_processor_count
    grid = (min(n_items, programs),)
    _block_sparse_fwd_ws[grid](
        _descriptor(q, WG_ROWS.value), _descriptor(k, BLOCK_N.value), _descriptor(v, BLOCK_N.value), out,
        cu_seqlens, index, count, count if order is None else order, qk_scale, num_q_heads, n_bh, n_items,
        out.stride(0), out.stride(1), index.stride(0), index.stride(1), index.stride(2), count.stride(0),
        count.stride(1),
        GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, CHUNK=chunk_size, K_STAGES=k_stages,
        V_STAGES=v_stages, Q_BUFS=q_bufs, CONSUMER_REGS=consumer_regs, PRODUCER_REGS=producer_regs,
        PINGPONG=bool(pingpong), SORTED=order is not None, num_warps=4, maxnreg=_maxnreg(consumer_regs, producer_regs),
    )
    return out


def _maxnreg(consumer_regs: int, producer_regs: int) -> int:
    """Launch-wide register cap: the second consumer warpgroup gets consumer_regs, the producer's warpgroup
    producer_regs, the default partition (consumer 0) what is left of 3 warpgroups x maxnreg."""
    return (2 * consumer_regs + producer_regs) // 3 // 8 * 8


_INT_ARGS = ("num_q_heads", "n_bh", "n_items", "stride_on", "stride_oh", "stride_ib", "stride_ih", "stride_ir",
             "stride_cb", "stride_ch")


def compile_for_sm90(head_dim: int = 128, chunk_size: int = 128, k_stages: int = 3, v_stages: int = 3,
                     q_bufs: int = 1, consumer_regs: int = 240, producer_regs: int = 24, pingpong: bool = False,
                     sorted: bool = False):
    """Compile the kernel for sm_90 (bf16, GQA group 4) without a GPU, with the ptxas of the Triton wheel.

    Returns Triton's CompiledKernel (`.asm["ptx"]`, `.asm["cubin"]`, `.metadata.shared`): the CPU test checks
    that the kernel builds under the installed Triton; benchmarks/results/s10/compile_gluon_sm90.py reads its
    registers and spills before a device call.
    """
    from triton import compile as triton_compile
    from triton._C.libtriton import native_specialize_impl  # the JIT's own argument typing (descriptor + layout)
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    def descriptor_type(rows):
        dummy = torch.empty(1024, 8, head_dim, dtype=torch.bfloat16)
        return native_specialize_impl(BaseBackend, _descriptor(dummy, rows), False, True, True)[0]

    fn = _block_sparse_fwd_ws
    sig = {"desc_q": descriptor_type(WG_ROWS.value), "desc_k": descriptor_type(BLOCK_N.value),
           "desc_v": descriptor_type(BLOCK_N.value), "Out": "*bf16", "cu_seqlens": "*i32", "Index": "*i32",
           "Count": "*i32", "Order": "*i32", "qk_scale": "fp32", **{name: "i32" for name in _INT_ARGS}}
    const = dict(GROUP=4, HEAD_DIM=head_dim, CHUNK=chunk_size, K_STAGES=k_stages, V_STAGES=v_stages,
                 Q_BUFS=q_bufs, CONSUMER_REGS=consumer_regs, PRODUCER_REGS=producer_regs, PINGPONG=pingpong,
                 SORTED=sorted)
    sig.update({name: "constexpr" for name in const})
    aligned = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in ("Out", "stride_on", "stride_oh")}
    src = GluonASTSource(fn=fn, signature={name: sig[name] for name in fn.arg_names},
                         constexprs={(fn.arg_names.index(k),): v for k, v in const.items()}, attrs=aligned)
    return triton_compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4, maxnreg=_maxnreg(consumer_regs, producer_regs)))
