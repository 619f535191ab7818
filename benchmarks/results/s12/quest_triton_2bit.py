"""Session 12 call 2's Quest page selection (kernels/quest/triton.py at b013187: two bits per round, three counts
packed in one int64 reduction, early stop), copied unchanged; quest_probe.py compares it with the library's. Its
page scores were the library's current ones, and its helpers are the library's."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from sparse_attn.kernels.quest.triton import MAX_PAGES_IN_REGISTERS, _batch_lens, _topk_select_pages  # unchanged


@triton.jit
def _select_pages_kernel(
    SCORES, LENS, OUT,
    stride_sb, stride_sh, stride_ob, stride_oh,
    num_sel_heads, num_pages, page_size, page_budget, num_out,
    BLOCK_P: tl.constexpr, BLOCK_OUT: tl.constexpr,
):
    """Program (b * Hsel + head): exact top-k of one score row, written in ascending page order.

    The k-th largest score is found by a bitwise search on the scores' order-preserving integer keys (the row held
    in registers) instead of a sort: two bits per round, whose three trial thresholds are counted in ONE row
    reduction (the counts packed into an int64: the search is latency-bound, a decode step has only B x Hsel
    rows), and the search stops as soon as exactly `take` keys reach the threshold (~20 of 32 bits on random
    rows of 8192 pages, so ~10 rounds instead of 32). Ties at the threshold go to the lower page ids, like the
    reference's stable sort. Then the current page, then -1 padding.
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
    key = tl.where(candidate, key, -2147483648)  # never reaches a trial threshold (all > INT_MIN)

    # The threshold is built from the top bit down in the unsigned order of key ^ INT_MIN (prefix), compared in
    # the signed order (prefix ^ INT_MIN). Invariant: count(key >= threshold) >= take; a round tries the prefix
    # with the next two bits 01, 10, 11 and keeps the highest trial that still has >= take keys at or above it.
    prefix = take * 0
    one = prefix + 1  # int32 (a Python 1 << 31 would turn the arithmetic int64)
    shift = prefix + 30  # the round's lower bit
    while shift >= 0:
        t1 = (prefix | (one << shift)) ^ -2147483648
        t2 = (prefix | (one << (shift + 1))) ^ -2147483648
        t3 = (prefix | (one << shift) | (one << (shift + 1))) ^ -2147483648
        packed = (key >= t1).to(tl.int64) + ((key >= t2).to(tl.int64) << 16) + ((key >= t3).to(tl.int64) << 32)
        counts = tl.sum(packed, 0)  # three counts of <= 32768 (MAX_PAGES_IN_REGISTERS) in 16-bit fields
        c1 = (counts & 0xFFFF).to(tl.int32)
        c2 = ((counts >> 16) & 0xFFFF).to(tl.int32)
        c3 = (counts >> 32).to(tl.int32)
        low = one << shift
        high = one << (shift + 1)
        chosen = tl.where(c3 >= take, c3, tl.where(c2 >= take, c2, tl.where(c1 >= take, c1, take + 1)))
        prefix = tl.where(c3 >= take, prefix | low | high,
                          tl.where(c2 >= take, prefix | high, tl.where(c1 >= take, prefix | low, prefix)))
        shift = tl.where(chosen == take, -1, shift - 2)  # exactly `take` keys at or above: the selection
    threshold = prefix ^ -2147483648

    above = key > threshold
    ties_needed = take - tl.sum(above.to(tl.int32), 0)
    tie = candidate & (key == threshold)
    tie_rank = tl.cumsum(tie.to(tl.int32), 0)
    selected = above | (tie & (tie_rank <= ties_needed))
    slot = tl.cumsum(selected.to(tl.int32), 0) - 1
    out_row = OUT + b * stride_ob + head * stride_oh
    tl.store(out_row + slot, offs, mask=selected)

    tail = tl.arange(0, BLOCK_OUT)
    tail_value = tl.where(tail == take, current, -1)
    tl.store(out_row + tail, tail_value, mask=(tail >= take) & (tail < num_out))


def triton_quest_select_pages(scores: torch.Tensor, lens: torch.Tensor, page_size: int, page_budget: int,
                              num_warps: Optional[int] = None):
    """The `page_budget` highest-scoring past pages plus the current page; same contract as
    `naive_quest_select_pages` (ties to the lower page id; sorted ascending; -1 padding at the end).

    Args:
        scores: `[B, Hsel, P]` fp32 from `quest_page_scores` (non-candidates are -inf).
        lens: `[B]` cache lengths including the current token.
    Returns:
        `page_index [B, Hsel, n]` int32, `n = min(page_budget + 1, P)`. One launch, no device sync.
    """
    batch, rows, num_pages = scores.shape
    lens = _batch_lens(lens, batch)
    if scores.dtype != torch.float32:
        raise ValueError(f"scores must be fp32, got {scores.dtype}")
    num_out = min(page_budget + 1, num_pages)
    if num_pages > MAX_PAGES_IN_REGISTERS:
        return _topk_select_pages(scores, lens, page_size, page_budget)
    scores = scores.contiguous()
    out = torch.empty(batch, rows, num_out, device=scores.device, dtype=torch.int32)
    block_p = triton.next_power_of_2(num_pages)
    _select_pages_kernel[(batch * rows,)](
        scores, lens, out,
        scores.stride(0), scores.stride(1), out.stride(0), out.stride(1),
        rows, num_pages, page_size, page_budget, num_out,
        BLOCK_P=block_p, BLOCK_OUT=triton.next_power_of_2(num_out),
        num_warps=num_warps or (16 if block_p >= 8192 else 8),
    )
    return out
