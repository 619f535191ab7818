"""Session 11's row top-k, kept here unchanged for the session-12 same-run comparison (topk_probe.py).

Block-Sparse selection on the GPU: the forced blocks, the block-causal mask and the top-k of one row per program.

`sparse_attn.methods.block_sparse.BlockSparse.select` computes the pooled block scores in row steps (query blocks
[start, stop) against key blocks [0, stop)) and, per row, keeps the `min(m + 1, top_chunks)` best key blocks after
forcing the sink (block 0), the diagonal (m) and the sub-diagonal (m - 1) and dropping the future (> m), ties to the
lower index. In torch that is two masked fills and `stable_topk` (int64 keys + `torch.topk` + a sort), or the
row-split radix select of `estimation.topk_triton`: ~70 ms per layer at 128K tokens and 16-token blocks (8192 rows of
up to 8192 scores per head, 32 heads; benchmarks/RESULTS.md, session 11), mostly launches and passes over memory;
this kernel: 17 ms, the whole selection 26.5 ms.

Here one program owns one row: it loads the row once (<= 16384 scores in registers), applies the rules on the fly,
finds the count-th largest 32-bit monotone key bit by bit (32 compare-and-count rounds over the row in registers,
no memory traffic), and writes the kept indices in index order from a prefix sum: the same indices as
`stable_topk`, entry for entry (`tests/test_block_sparse_selection.py`).
"""
import torch
import triton
import triton.language as tl

MAX_ROW = 16384  # scores one program holds in registers (64 KB of int32 keys over 8 warps)


@triton.jit
def _block_topk_kernel(Scores, Out, BlocksPerSample, start, stop, top, num_heads,
                       stride_sb, stride_sh, stride_sr, stride_ob, stride_oh, stride_or,
                       NP: tl.constexpr):
    """Grid (stop - start, B * H): row r = query block start + r of (b, h). Scores [B, H, stop - start, >= stop]
    fp32 (raw pooled scores); Out [B, H, n_blocks, width] int32, pre-filled with -1: writes the kept key blocks
    of query block m at Out[b, h, m, :count], ascending."""
    r = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_heads
    h = bh % num_heads
    m = start + r
    count = tl.where(m < tl.load(BlocksPerSample + b), tl.minimum(m + 1, top), 0)
    if count == 0:  # a query block past this sample: the row stays -1
        return
    offs = tl.arange(0, NP)
    row = Scores + b.to(tl.int64) * stride_sb + h.to(tl.int64) * stride_sh + r.to(tl.int64) * stride_sr
    valid = offs < stop  # the row's entries (stable_topk ranks all of them, the future ones as -inf)
    x = tl.load(row + offs, mask=offs <= m, other=float("-inf"))
    x = tl.where((offs == m) | (offs == m - 1) | (offs == 0), float("inf"), x)
    bits = x.to(tl.int32, bitcast=True)
    bits = tl.where((bits & 0x7FFFFFFF) == 0, 0, bits)  # -0.0 counts as 0.0, as in a float comparison
    key = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # signed int32 order == float order
    # the count-th largest key, built bit by bit from the top (unsigned order: key ^ sign bit): keep bit b when at
    # least `count` keys are >= the prefix with it set. One compare + one row sum per bit, all in registers (four
    # 256-bin tl.histogram passes, one per byte, took 60 ms at 128K against 17 ms for this; session 11).
    prefix = count * 0
    one = prefix + 1  # int32: one << 31 is the sign bit (a Python 1 << 31 would make the arithmetic int64)
    for bit in tl.static_range(31, -1, -1):
        trial = prefix | (one << bit)
        prefix = tl.where(tl.sum((valid & (key >= (trial ^ -2147483648))).to(tl.int32), 0) >= count, trial, prefix)
    kth = prefix ^ -2147483648  # the count-th largest key
    above = valid & (key > kth)
    remaining = count - tl.sum(above.to(tl.int32), 0)  # the keys equal to kth to take
    tie = valid & (key == kth)
    keep = above | (tie & (tl.cumsum(tie.to(tl.int32), 0) <= remaining))  # ties: the lowest indices
    slot = tl.cumsum(keep.to(tl.int32), 0) - 1
    out = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + m.to(tl.int64) * stride_or
    tl.store(out + slot, offs, mask=keep)


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
    np_ = max(triton.next_power_of_2(n), 256)
    _block_topk_kernel[(rows, batch * heads)](
        scores, out, blocks_per_sample, start, n, top, heads, scores.stride(0), scores.stride(1), scores.stride(2),
        out.stride(0), out.stride(1), out.stride(2), NP=np_, num_warps=8 if np_ >= 4096 else 4)
