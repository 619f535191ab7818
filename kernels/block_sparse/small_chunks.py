"""Block-sparse attention for chunk_size 16 and 32 (the method's default is 16): gather the selected key chunks.

Tensor cores want query tiles of >= 64 rows, so a program owns 64 query rows = R sub-blocks (R = 64 // chunk_size:
4 at chunk 16, 2 at chunk 32), each with its own index row. The program walks the sorted UNION of the key chunks
its sub-blocks selected, G = 64 // chunk_size chunks (64 keys) per step: the keys of a step are gathered chunk by
chunk (each chunk is chunk_size consecutive tokens), and a per-(union entry) bit mask says which sub-blocks
selected that chunk; scores of the other sub-blocks are masked out. So the work is (64 rows) x (16 x union size)
per program instead of 64 x 64 x (distinct 64-key tiles touched), which the session-1 "tiles" path computed.

With top_chunks = 64 at chunk 16 a 64-row tile's union has at most 4 x 64 chunks (4096 keys), whatever the length;
a random 16x16 selection touches ~250 distinct 64-key tiles (16000 keys) per 64 rows, most of them for one
16-row sub-block and one 16-key chunk (benchmarks/RESULTS.md, session 11).

`chunk_index_to_union` (torch: the reference) or `triton_chunk_index_to_union` (one launch, what the kernel path
runs) builds the union; `gather_block_sparse_attention` launches the attention kernel.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

from .._triton_tile import unscaled_masked_step
from .triton import _unmasked_prefix, pad_rows_to_tiles

TILE = 64  # query rows per program and keys per step
UNION_SORT_MAX = 4096  # codes one union-builder program sorts in registers (R x top_chunks, rounded up)


def chunk_index_to_union(block_index: torch.Tensor, block_count: torch.Tensor, chunk_size: int,
                         tile: int = TILE) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per tile of `tile` query rows: the sorted union of the key chunks its sub-blocks selected, and who chose them.

    Args:
        block_index: [B, H, n_qblocks, max_k] int key-chunk ids, each row sorted ascending, -1 padded.
        block_count: [B, H, n_qblocks] int valid entries per row.
        chunk_size: tokens per chunk (a divisor of `tile`).
    Returns:
        union [B, H, n_tiles, R * max_k] int32 (sorted ascending, distinct, -1 padded; R = tile // chunk_size),
        union_count [B, H, n_tiles] int32, union_bits [B, H, n_tiles, R * max_k] int32: bit i of entry e says that
        query sub-block i of the tile (rows i * chunk_size ..) selected key chunk union[e].
    """
    r = tile // chunk_size
    batch, heads, n_rows, max_k = block_index.shape
    block_index, block_count, n_tiles = pad_rows_to_tiles(block_index, block_count, r)
    device = block_index.device
    width = r * max_k
    if n_rows * r + r >= 2 ** 31:
        raise ValueError(f"{n_rows} query chunks are too many for the int32 union codes: use a larger chunk_size")
    valid = torch.arange(max_k, device=device) < block_count.view(batch, heads, n_tiles, r, 1)
    sub = torch.arange(r, device=device, dtype=torch.int32).view(1, 1, 1, r, 1)
    big = n_rows * r + r  # sorts after every real code
    # code = chunk * r + sub-block: sorting groups the sub-blocks that chose the same chunk
    code = torch.where(valid, block_index.view(batch, heads, n_tiles, r, max_k).to(torch.int32) * r + sub, big)
    code = code.view(batch, heads, n_tiles, width).sort(dim=-1).values
    valid = code < big
    chunk = torch.div(code, r, rounding_mode="floor")
    prev = torch.nn.functional.pad(chunk, (1, 0), value=-1)[..., :-1]
    is_new = valid & (chunk != prev)
    union_count = is_new.sum(-1, dtype=torch.int32)
    slot = torch.where(valid, torch.cumsum(is_new, -1, dtype=torch.int32) - 1, width).long()
    union = torch.full((batch, heads, n_tiles, width + 1), -1, dtype=torch.int32, device=device)
    union.scatter_(-1, slot, torch.where(valid, chunk, -1))  # equal chunks write equal values to one slot
    bits = torch.zeros((batch, heads, n_tiles, width + 1), dtype=torch.int32, device=device)
    # distinct sub-blocks of one chunk have distinct bits, so the sum is a bitwise or
    bits.scatter_add_(-1, slot, torch.where(valid, torch.ones_like(code) << (code - chunk * r), 0))
    return union[..., :width].contiguous(), union_count, bits[..., :width].contiguous()


@triton.jit
def _union_kernel(Index, Count, Union, Bits, UnionCount, num_heads, n_rows, width,
                  stride_ib, stride_ih, stride_ir, stride_cb, stride_ch, stride_ub, stride_uh, stride_ur,
                  R: tl.constexpr, WP: tl.constexpr):
    """`chunk_index_to_union` for one tile of R index rows of one (b, h): grid (n_tiles, B * H).

    The R rows' entries become codes chunk * R + sub-block (R * WP of them, padding sorted last), one bitonic sort
    in registers, then: an entry opens a union slot where its chunk differs from the previous entry's, the slot is
    the running count of openings (cumsum), and its bits collect the sub-blocks of the next R entries that hold
    the same chunk (equal chunks are adjacent after the sort, at most R of them)."""
    t = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    e = tl.arange(0, R * WP)
    sub = e // WP
    row = t * R + sub
    count = tl.load(Count + b * stride_cb + h * stride_ch + row, mask=row < n_rows, other=0)
    valid = (e % WP < count) & (row < n_rows)
    entry = tl.load(Index + b.to(tl.int64) * stride_ib + h.to(tl.int64) * stride_ih + row.to(tl.int64) * stride_ir
                    + e % WP, mask=valid, other=0)
    BIG: tl.constexpr = 2 ** 30
    code = tl.sort(tl.where(valid, entry * R + sub, BIG))
    chunk = code // R
    is_new = (code < BIG) & ((e == 0) | (chunk != tl.gather(chunk, tl.maximum(e - 1, 0), 0)))
    bits = tl.zeros([R * WP], dtype=tl.int32)
    for d in tl.static_range(R):
        ahead = tl.gather(code, tl.minimum(e + d, R * WP - 1), 0)
        bits |= tl.where((e + d < R * WP) & (ahead < BIG) & (ahead // R == chunk), 1 << (ahead % R), 0)
    slot = tl.cumsum(is_new.to(tl.int32), 0) - 1
    n_union = tl.sum(is_new.to(tl.int32), 0)
    out = b.to(tl.int64) * stride_ub + h.to(tl.int64) * stride_uh + t.to(tl.int64) * stride_ur
    tl.store(Union + out + slot, chunk, mask=is_new)
    tl.store(Bits + out + slot, bits, mask=is_new)
    pad = (e >= n_union) & (e < width)  # the slots past the union: -1 / 0, as the torch builder leaves them
    tl.store(Union + out + e, tl.full([R * WP], -1, tl.int32), mask=pad)
    tl.store(Bits + out + e, tl.zeros([R * WP], dtype=tl.int32), mask=pad)
    tl.store(UnionCount + bh * tl.num_programs(0) + t, n_union)


def triton_chunk_index_to_union(block_index: torch.Tensor, block_count: torch.Tensor, chunk_size: int,
                                tile: int = TILE) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`chunk_index_to_union` (same outputs, entry for entry) in one Triton launch; block_index int32."""
    r = tile // chunk_size
    batch, heads, n_rows, max_k = block_index.shape
    n_tiles = -(-n_rows // r)
    width = r * max_k
    if n_rows * r + r >= 2 ** 30:
        raise ValueError(f"{n_rows} query chunks are too many for the int32 union codes: use a larger chunk_size")
    if r * triton.next_power_of_2(max(max_k, 1)) > UNION_SORT_MAX:  # too wide to sort in registers
        return chunk_index_to_union(block_index, block_count, chunk_size, tile)
    index = block_index.to(torch.int32).contiguous()
    count = block_count.to(torch.int32).contiguous()
    union = torch.empty(batch, heads, n_tiles, width, dtype=torch.int32, device=index.device)
    bits = torch.empty_like(union)
    union_count = torch.empty(batch, heads, n_tiles, dtype=torch.int32, device=index.device)
    if union.numel() == 0:
        return union, union_count.zero_(), bits
    _union_kernel[(n_tiles, batch * heads)](
        index, count, union, bits, union_count, heads, n_rows, width, index.stride(0), index.stride(1),
        index.stride(2), count.stride(0), count.stride(1), union.stride(0), union.stride(1), union.stride(2),
        R=r, WP=triton.next_power_of_2(max(max_k, 1)), num_warps=4)
    return union, union_count, bits


@triton.jit
def _step_entries(union, bits_row, first, end, slot_of_key, G: tl.constexpr, BLOCK: tl.constexpr):
    """Union entries first .. first + G - 1 (those < end; the others 0) spread over the step's BLOCK key columns:
    (chunk id [BLOCK], sub-block bits [BLOCK]) of each column's entry.

    G scalar loads each, not one [BLOCK] vector load: Triton 3.6 software-pipelines a vector load that feeds
    other loads' addresses through a single shared-memory buffer, and the compiled kernel then read some steps'
    entries wrong (relative error ~0.1 against the reference on the H200, exact under the interpreter;
    benchmarks/results/s11/debug_gather.py). Scalar loads stay in registers, as in the other block-sparse kernels."""
    k_chunk = tl.zeros([BLOCK], dtype=tl.int32)
    k_bits = tl.zeros([BLOCK], dtype=tl.int32)
    for j in tl.static_range(G):
        ok = first + j < end
        k_chunk = tl.where(slot_of_key == j, tl.load(union + first + j, mask=ok, other=0), k_chunk)
        k_bits = tl.where(slot_of_key == j, tl.load(bits_row + first + j, mask=ok, other=0), k_bits)
    return k_chunk, k_bits


@triton.jit
def _block_sparse_fwd_gather(
    Q, K, V, Out, cu_seqlens, Union, Bits, UnionCount,
    qk_scale, num_q_heads, n_tiles_m,
    stride_qn, stride_qh, stride_kn, stride_kh, stride_vn, stride_vh, stride_on, stride_oh,
    stride_ub, stride_uh, stride_ur, stride_cb, stride_ch,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    """Grid (n_tiles_m, B * Hq): one BLOCK-row query tile of one head per program, last tiles first.

    Steps of G = BLOCK // CHUNK union entries (BLOCK keys). The entries with chunk >= the tile's first query chunk
    (the tail of the sorted union: the sub-blocks' diagonals) are the only ones that can hold keys right of a
    query row: steps before them need no causal mask, only the sub-block bits.
    """
    tile_m = n_tiles_m - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_q_heads
    h = bh % num_q_heads
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    q_first = tile_m * BLOCK
    if q_first >= seq_len:
        return
    start = seq_start.to(tl.int64)  # 64-bit row offsets: packed batches may exceed 2**31 elements
    G: tl.constexpr = BLOCK // CHUNK
    offs_m = q_first + tl.arange(0, BLOCK)
    offs_n = tl.arange(0, BLOCK)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + start * stride_qn + offs_m[:, None] * stride_qn + h * stride_qh + offs_d[None, :],
                mask=(offs_m < seq_len)[:, None], other=0.0)
    k_base = K + start * stride_kn + (h // GROUP) * stride_kh
    v_base = V + start * stride_vn + (h // GROUP) * stride_vh
    row_off = b.to(tl.int64) * stride_ub + h.to(tl.int64) * stride_uh + tile_m.to(tl.int64) * stride_ur
    union = Union + row_off
    bits_row = Bits + row_off
    n_union = tl.load(UnionCount + b * stride_cb + h * stride_ch + tile_m)
    # entries left of the tile's first query chunk: a sorted prefix (the tail holds the sub-blocks' diagonals,
    # usually R entries, and anything an index lists right of them)
    n_past = _unmasked_prefix(union, n_union, q_first // CHUNK)
    slot_of_key = offs_n // CHUNK  # which of the step's G entries a key column comes from
    key_in_chunk = offs_n % CHUNK
    sub_of_row = (tl.arange(0, BLOCK) // CHUNK)[:, None]  # query sub-block of each row

    acc = tl.zeros([BLOCK, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK], dtype=tl.float32)
    every_key = offs_n >= 0
    # 1) steps wholly before the tail: every entry exists and precedes every query row; only the bits mask
    for s in range(n_past // G):
        k_chunk, k_bits = _step_entries(union, bits_row, s * G, s * G + G, slot_of_key, G, BLOCK)
        k_pos = k_chunk * CHUNK + key_in_chunk
        keep = ((k_bits[None, :] >> sub_of_row) & 1) != 0
        acc, m_i, l_i = unscaled_masked_step(acc, m_i, l_i, q, k_base + k_pos[:, None] * stride_kn + offs_d[None, :],
                                             v_base + k_pos[:, None] * stride_vn + offs_d[None, :], keep, every_key,
                                             qk_scale)
    # 2) the rest: entries may be missing (past n_union), keys right of a query row or past the sample
    for s in range(n_past // G, tl.cdiv(n_union, G)):
        k_chunk, k_bits = _step_entries(union, bits_row, s * G, n_union, slot_of_key, G, BLOCK)
        k_pos = k_chunk * CHUNK + key_in_chunk
        key_ok = (s * G + slot_of_key < n_union) & (k_pos < seq_len)
        chosen = ((k_bits[None, :] >> sub_of_row) & 1) != 0
        keep = chosen & key_ok[None, :] & (k_pos[None, :] <= offs_m[:, None])
        acc, m_i, l_i = unscaled_masked_step(acc, m_i, l_i, q, k_base + k_pos[:, None] * stride_kn + offs_d[None, :],
                                             v_base + k_pos[:, None] * stride_vn + offs_d[None, :], keep, key_ok,
                                             qk_scale)
    # rows that saw no key at all (an index row without its diagonal) are written as zeros, never NaN
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(Out + start * stride_on + offs_m[:, None] * stride_on + h * stride_oh + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=(offs_m < seq_len)[:, None])


# (num_warps, num_stages). H200, 128K, the method's selection at the defaults (benchmarks/results/s11/logs): 2 stages
# 22.98 / 12.14 ms (random / structured inputs) vs 3 stages 23.85 / 12.55 ms; 8 warps 2.3x slower.
GATHER_LAUNCH = (4, 2)


def gather_block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                                  block_index: torch.Tensor, block_count: torch.Tensor, chunk_size: int,
                                  qk_scale: float, out: torch.Tensor, launch=None) -> torch.Tensor:
    """Run the gather kernel (inputs already checked by `triton.triton_block_sparse_attention`).

    q [N, Hq, D], k / v [N, Hkv, D], cu_seqlens [B+1] int32; block_index [B, Hq, n_qblocks, max_k] sorted, -1
    padded; block_count [B, Hq, n_qblocks]; qk_scale = softmax scale * log2(e); out [N, Hq, D] written in place.
    launch: optional (num_warps, num_stages).
    """
    if TILE % chunk_size:
        raise ValueError(f"the gather kernel needs chunk_size dividing {TILE}, got {chunk_size}")
    union, union_count, bits = triton_chunk_index_to_union(block_index, block_count, chunk_size)
    warps, stages = GATHER_LAUNCH if launch is None else launch
    batch, num_q_heads = cu_seqlens.numel() - 1, q.shape[1]
    n_tiles_m = union.shape[2]
    _block_sparse_fwd_gather[(n_tiles_m, batch * num_q_heads)](
        q, k, v, out, cu_seqlens, union, bits, union_count, qk_scale, num_q_heads, n_tiles_m,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        union.stride(0), union.stride(1), union.stride(2), union_count.stride(0), union_count.stride(1),
        GROUP=num_q_heads // k.shape[1], HEAD_DIM=q.shape[2], CHUNK=chunk_size, BLOCK=TILE,
        num_warps=warps, num_stages=stages,
    )
    return out
