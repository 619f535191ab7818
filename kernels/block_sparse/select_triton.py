"""Block-Sparse selection on the GPU: the forced blocks, the block-causal mask and the top-k of one row per program.

`sparse_attn.methods.block_sparse.BlockSparse.select` computes the pooled block scores in row steps (query blocks
[start, stop) against key blocks [0, stop)) and, per row, keeps the `min(m + 1, top_chunks)` best key blocks after
forcing the sink (block 0), the diagonal (m) and the sub-diagonal (m - 1) and dropping the future (> m), ties to the
lower index. In torch that is two masked fills and `stable_topk` (int64 keys + `torch.topk` + a sort), or the
row-split radix select of `estimation.topk_triton`: ~70 ms per layer at 128K tokens and 16-token blocks (8192 rows of
up to 8192 scores per head, 32 heads; benchmarks/RESULTS.md, session 11), mostly launches and passes over memory;
this kernel: 10.8-11.0 ms (17.2 ms with 32 fixed rounds over power-of-two rows, session 11), the whole selection
20.3-21.7 ms (H200, session 12).

Here one program owns one row: it loads the row once (<= 16384 scores in registers, as two power-of-two segments),
applies the rules on the fly, finds the count-th largest 32-bit monotone key bit by bit (compare-and-count rounds
over the row in registers, no memory traffic, stopping as soon as the keys above the prefix are exactly the count),
and writes the kept indices in index order from a prefix sum: the same indices as `stable_topk`, entry for entry
(`tests/test_block_sparse_selection.py`).
"""
import torch
import triton
import triton.language as tl

from .._order_key import order_key

MAX_ROW = 16384  # scores one program holds in registers (64 KB of int32 keys over 8 warps)
SIGN = tl.constexpr(-2147483648)  # int32 sign bit: key ^ SIGN maps the signed key order onto the unsigned bit order


@triton.jit
def _row_keys(row, offs, m, stop):
    """The rules applied to entries `offs` of one score row, as int32 keys whose signed order is the float order.

    Forced blocks (sink 0, diagonal m, sub-diagonal m - 1) are +inf, the future (> m) -inf; entries past the row
    (>= stop, tile padding) get the smallest key, which no threshold of the search ever reaches."""
    x = tl.load(row + offs, mask=offs <= m, other=float("-inf"))
    x = tl.where((offs == m) | (offs == m - 1) | (offs == 0), float("inf"), x)
    return tl.where(offs < stop, order_key(x.to(tl.int32, bitcast=True)), SIGN)


@triton.jit
def _block_topk_kernel(Scores, Out, BlocksPerSample, start, stop, top, num_heads,
                       stride_sb, stride_sh, stride_sr, stride_ob, stride_oh, stride_or,
                       NPA: tl.constexpr, NPB: tl.constexpr):
    """Grid (stop - start, B * H): row r = query block start + r of (b, h). Scores [B, H, stop - start, >= stop]
    fp32 (raw pooled scores); Out [B, H, n_blocks, width] int32, pre-filled with -1: writes the kept key blocks
    of query block m at Out[b, h, m, :count], ascending.

    The row is held as two power-of-two segments, entries [0, NPA) and [NPA, NPA + NPB) (NPB = 0: none), so a
    row of 4200 scores takes 4096 + 128 registers' worth, not 8192."""
    r = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    m = start + r
    count = tl.where(m < tl.load(BlocksPerSample + b), tl.minimum(m + 1, top), 0)
    if count == 0:  # a query block past this sample: the row stays -1
        return
    row = Scores + b.to(tl.int64) * stride_sb + h.to(tl.int64) * stride_sh + r.to(tl.int64) * stride_sr
    offs_a = tl.arange(0, NPA)
    key_a = _row_keys(row, offs_a, m, stop)
    if NPB > 0:
        offs_b = NPA + tl.arange(0, NPB)
        key_b = _row_keys(row, offs_b, m, stop)
    # The count-th largest key, built bit by bit from the top (unsigned order: key ^ SIGN): keep bit `bit` when at
    # least `count` keys are >= the prefix with it set. One compare + one row sum per bit, in registers. The search
    # stops as soon as exactly `count` keys are >= the prefix: they are the selection, whatever the lower bits
    # (~17 of the 32 rounds on random rows of 256-8192 scores; four 256-bin tl.histogram passes took 60 ms at
    # 128K, the 32 rounds 17 ms; session 11).
    prefix = count * 0
    one = prefix + 1  # int32: one << 31 is the sign bit (a Python 1 << 31 would make the arithmetic int64)
    bit = prefix + 31
    while bit >= 0:
        trial = prefix | (one << bit)
        at_least = tl.sum((key_a >= (trial ^ SIGN)).to(tl.int32), 0)
        if NPB > 0:
            at_least += tl.sum((key_b >= (trial ^ SIGN)).to(tl.int32), 0)
        prefix = tl.where(at_least >= count, trial, prefix)
        bit = tl.where(at_least == count, -1, bit - 1)
    kth = prefix ^ SIGN  # the count-th largest key, or (early stop) a value only the selection reaches
    # keys above kth, then keys equal to it by lowest index (padding is never above kth nor, being past the row,
    # among the ties: `< stop`). Skipping the tie prefix sums when exactly `count` keys are >= kth was 5-8 % slower
    # at 128K on the H200 (169 instead of 128 registers for two 4096 segments; session 12, call 3).
    above_a = key_a > kth
    tie_a = (offs_a < stop) & (key_a == kth)
    remaining = count - tl.sum(above_a.to(tl.int32), 0)
    if NPB > 0:
        above_b = key_b > kth
        tie_b = (offs_b < stop) & (key_b == kth)
        remaining -= tl.sum(above_b.to(tl.int32), 0)
    keep_a = above_a | (tie_a & (tl.cumsum(tie_a.to(tl.int32), 0) <= remaining))
    out = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + m.to(tl.int64) * stride_or
    tl.store(out + tl.cumsum(keep_a.to(tl.int32), 0) - 1, offs_a, mask=keep_a)
    if NPB > 0:
        ties_before = tl.sum(tie_a.to(tl.int32), 0)
        keep_b = above_b | (tie_b & (tl.cumsum(tie_b.to(tl.int32), 0) + ties_before <= remaining))
        kept_before = tl.sum(keep_a.to(tl.int32), 0)
        tl.store(out + kept_before + tl.cumsum(keep_b.to(tl.int32), 0) - 1, offs_b, mask=keep_b)


def row_segments(n: int) -> tuple:
    """(NPA, NPB): power-of-two segments covering a row of n scores, NPA the largest power of two <= n (>= 256),
    NPB the next power of two of the rest (>= 128) or 0. Rows of n <= 1024 take one segment."""
    if n <= 1024:
        return max(triton.next_power_of_2(n), 256), 0
    npa = 1 << (n.bit_length() - 1)
    rest = n - npa
    return npa, (max(triton.next_power_of_2(rest), 128) if rest else 0)


def triton_block_topk(scores: torch.Tensor, start: int, top: int, blocks_per_sample: torch.Tensor,
                      out: torch.Tensor) -> None:
    """Select the key blocks of query blocks [start, start + scores.shape[2]) into `out` (see the module doc).

    Args:
        scores: [B, H, rows, n] fp32 raw pooled scores of the rows' query blocks against key blocks [0, n), n =
            start + rows (the step's causal width).
        start: the first row's query block; top: top_chunks; blocks_per_sample: [B] int32/int64 query blocks of
            each sample (rows past it keep nothing).
        out: [B, H, n_blocks, width] int32 block index, -1 filled; rows start .. start + rows - 1 are written.
    """
    batch, heads, rows, n = scores.shape
    if n != start + rows:
        raise ValueError(f"scores [.., {rows}, {n}] must span key blocks [0, start + rows = {start + rows})")
    if n > MAX_ROW:
        raise ValueError(f"rows of {n} key blocks exceed {MAX_ROW} (one program per row): use a larger chunk_size "
                         "or the torch top-k (backend='naive')")
    if scores.dtype != torch.float32 or scores.stride(-1) != 1 or out.dtype != torch.int32 or out.stride(-1) != 1:
        raise ValueError("scores must be fp32 and out int32, both contiguous in the last dim")
    npa, npb = row_segments(n)
    _block_topk_kernel[(rows, batch * heads)](
        scores, out, blocks_per_sample, start, n, top, heads, scores.stride(0), scores.stride(1), scores.stride(2),
        out.stride(0), out.stride(1), out.stride(2), NPA=npa, NPB=npb, num_warps=8 if npa + npb >= 4096 else 4)
