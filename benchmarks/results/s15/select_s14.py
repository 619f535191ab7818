"""Session 14's Quest page selection (kernels/quest/triton.py at 1f1fc6e: a fixed 32-step bitwise threshold search,
then two row scans), copied unchanged so that session 15's probe can time it against the library's in the same run.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from sparse_attn.kernels.quest.naive import naive_selection_reads
from sparse_attn.kernels.quest.triton import GROWING_ARGS, _batch_lens, _topk_select_pages  # unchanged


@triton.jit(do_not_specialize=GROWING_ARGS + ["stride_ob", "stride_oh", "num_out"])  # num_out grows up to budget + 1
def _select_pages_kernel(
    SCORES, LENS, OUT, TOKENS_OUT, SPARSITY_OUT,
    stride_sb, stride_sh, stride_ob, stride_oh,
    num_sel_heads, num_pages, page_size, page_budget, num_out,
    BLOCK_P: tl.constexpr, BLOCK_OUT: tl.constexpr, WRITE_READS: tl.constexpr,
):
    """Program (b * Hsel + head): exact top-k of one score row, written in ascending page order.

    The k-th largest score is found by a 32-step bitwise search on the scores' order-preserving integer keys
    (each step one count over the row held in registers) instead of a sort; ties at the threshold go to the
    lower page ids, like the reference's stable sort. Then the current page, then -1 padding.

    WRITE_READS: also write what the selection reads (`naive_selection_reads`): valid tokens of the selected pages
    (every past page is full, the current one holds `length - current * page_size`) and `1 - tokens / length`,
    per row, so that a decode step needs no torch ops to measure its sparsity.

    Measured on the H200 (benchmarks/RESULTS.md, session 12): this fixed, unrolled 32-step search is as fast or
    faster than a `while` loop that stops once exactly `take` keys reach the threshold (~20 steps; 128K, B = 8:
    22.2 us here, 25.0 us early-stopping, 25.7 us with two bits per step), the step count is not what bounds it.
    """
    row = tl.program_id(0)
    b = row // num_sel_heads
    head = row % num_sel_heads
    length = tl.load(LENS + b).to(tl.int32)
    current = (length - 1) // page_size
    take = tl.minimum(tl.minimum(page_budget, current), num_pages - 1)  # past pages this row selects

    offs = tl.arange(0, BLOCK_P)
    candidate = (offs < current) & (offs < num_pages)
    x = tl.load(SCORES + b * stride_sb + head * stride_sh + offs, mask=candidate, other=0.0)
    bits = x.to(tl.int32, bitcast=True)
    bits = tl.where((bits & 0x7FFFFFFF) == 0, 0, bits)  # -0.0 ties with 0.0, as in the reference's float sort
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # signed integer order == float order
    key = tl.where(candidate, key, -2147483648)

    # invariant: count(key >= threshold) >= take. The sign bit first (its trial value 0 is the only one that
    # would overflow int32 as threshold + 2^31), then bits 30..0.
    count = tl.sum((key >= 0).to(tl.int32), 0)
    threshold = tl.where(count >= take, 0, -2147483648)
    for step in tl.static_range(1, 32):
        trial = threshold + (1 << (31 - step))
        count = tl.sum((key >= trial).to(tl.int32), 0)
        threshold = tl.where(count >= take, trial, threshold)

    above = key > threshold
    ties_needed = take - tl.sum(above.to(tl.int32), 0)
    tie = key == threshold
    tie_rank = tl.cumsum(tie.to(tl.int32), 0)
    selected = above | (tie & (tie_rank <= ties_needed))
    slot = tl.cumsum(selected.to(tl.int32), 0) - 1
    out_row = OUT + b * stride_ob + head * stride_oh
    tl.store(out_row + slot, offs, mask=selected)

    tail = tl.arange(0, BLOCK_OUT)
    tail_value = tl.where(tail == take, current, -1)
    tl.store(out_row + tail, tail_value, mask=(tail >= take) & (tail < num_out))
    if WRITE_READS:
        page_tokens = tl.minimum(length - offs * page_size, page_size)  # valid tokens of page `offs`
        tokens = tl.sum(tl.where(selected, page_tokens, 0), 0) + (length - current * page_size)
        tl.store(TOKENS_OUT + row, tokens)
        tl.store(SPARSITY_OUT + row, 1.0 - tokens.to(tl.float32) / length.to(tl.float32))


# one score row must fit in registers; longer rows (contexts past 512K at page 16) use torch.topk
MAX_PAGES_IN_REGISTERS = 32768


def triton_quest_select_pages(scores: torch.Tensor, lens: torch.Tensor, page_size: int, page_budget: int,
                              return_reads: bool = False, num_warps: Optional[int] = None):
    """The `page_budget` highest-scoring past pages plus the current page; same contract as
    `naive_quest_select_pages` (ties to the lower page id; sorted ascending; -1 padding at the end).

    Args:
        scores: `[B, Hsel, P]` fp32 from `quest_page_scores` (non-candidates are -inf).
        lens: `[B]` cache lengths including the current token.
        return_reads: also return what the selection reads, written by the same kernel (`naive_selection_reads`).
    Returns:
        `page_index [B, Hsel, n]` int32, `n = min(page_budget + 1, P)`; with return_reads
        `(page_index, head_tokens [B, Hsel] int32, head_sparsity [B, Hsel] fp32)`. One launch, no device sync.
    """
    batch, rows, num_pages = scores.shape
    lens = _batch_lens(lens, batch)
    if scores.dtype != torch.float32:
        raise ValueError(f"scores must be fp32, got {scores.dtype}")
    num_out = min(page_budget + 1, num_pages)
    if num_pages > MAX_PAGES_IN_REGISTERS:
        index = _topk_select_pages(scores, lens, page_size, page_budget)
        return (index, *naive_selection_reads(index, lens, page_size)) if return_reads else index
    scores = scores.contiguous()
    out = torch.empty(batch, rows, num_out, device=scores.device, dtype=torch.int32)
    tokens = sparsity = out  # unused pointers when the reads are not asked for
    if return_reads:
        tokens = torch.empty(batch, rows, device=scores.device, dtype=torch.int32)
        sparsity = torch.empty(batch, rows, device=scores.device, dtype=torch.float32)
    block_p = triton.next_power_of_2(num_pages)
    _select_pages_kernel[(batch * rows,)](
        scores, lens, out, tokens, sparsity,
        scores.stride(0), scores.stride(1), out.stride(0), out.stride(1),
        rows, num_pages, page_size, page_budget, num_out,
        BLOCK_P=block_p, BLOCK_OUT=triton.next_power_of_2(num_out), WRITE_READS=return_reads,
        num_warps=num_warps or (16 if block_p >= 8192 else 8),
    )
    return (out, tokens, sparsity) if return_reads else out
