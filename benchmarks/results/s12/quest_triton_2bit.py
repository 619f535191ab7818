"""Session 12 call 2's Quest page scores and page selection (kernels/quest/triton.py at b013187: selection two bits
per round, three counts packed in one int64 reduction, early stop), the functions quest_probe.py compares, copied
unchanged (the rest of that module is not needed here)."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl


def _check_metadata(page_min: torch.Tensor, page_max: torch.Tensor, batch: int, num_kv_heads: int, head_dim: int):
    if page_min.shape != page_max.shape or page_min.dim() != 4:
        raise ValueError(f"page_min / page_max must be [B, Hkv, P, D] of one shape, got {tuple(page_min.shape)} "
                         f"and {tuple(page_max.shape)}")
    if page_min.shape[0] != batch or page_min.shape[1] != num_kv_heads or page_min.shape[3] != head_dim:
        raise ValueError(f"page metadata {tuple(page_min.shape)} does not match B={batch}, Hkv={num_kv_heads}, "
                         f"D={head_dim}")
    if page_min.stride(-1) != 1 or page_max.stride(-1) != 1:
        raise ValueError("page metadata must be contiguous in the head dim")


@triton.jit
def _page_scores_kernel(
    Q, PMIN, PMAX, LENS, SCORES,
    stride_qb, stride_qh,
    stride_mb, stride_mh, stride_mp,
    stride_sb, stride_sh,
    num_kv_heads, num_pages, page_size,
    GROUP: tl.constexpr, SHARED: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCKS: tl.constexpr,
):
    """Program (b * Hkv + kv_head, page chunk): scores of BLOCKS x BLOCK_P pages for the GROUP query heads of one
    KV head (a loop, so the loads of the next block are in flight while one is reduced).

    Candidate pages are 0 .. cur - 1 with cur = (len - 1) // page_size (the current page is always taken); the
    others score -inf. SHARED sums the group's scores into one row per KV head, else one row per query head.

    Per dimension, max(q * min, q * max) = max(q, 0) * max + min(q, 0) * min (exact: one of the two terms is 0),
    which is linear in q: the group's summed bound is (sum_g max(q_g, 0)) . max + (sum_g min(q_g, 0)) . min, two
    dot products per page whatever the group size (the per-head form cost GROUP x (2 mul + max + add) per
    metadata element pair, as much issue time as the metadata's load time on an H200).
    """
    pid_bh = tl.program_id(0)
    pid_p = tl.program_id(1)
    b = pid_bh // num_kv_heads
    kv_head = pid_bh % num_kv_heads
    length = tl.load(LENS + b).to(tl.int32)
    current_page = (length - 1) // page_size
    offs_d = tl.arange(0, HEAD_DIM)
    if SHARED:
        q_pos = tl.zeros([HEAD_DIM], dtype=tl.float32)
        q_neg = tl.zeros([HEAD_DIM], dtype=tl.float32)
        for g in tl.static_range(GROUP):
            qg = tl.load(Q + b * stride_qb + (kv_head * GROUP + g) * stride_qh + offs_d).to(tl.float32)
            q_pos += tl.maximum(qg, 0.0)
            q_neg += tl.minimum(qg, 0.0)

    for block in range(BLOCKS):
        offs_p = (pid_p * BLOCKS + block) * BLOCK_P + tl.arange(0, BLOCK_P)
        page_ok = offs_p < num_pages
        meta_off = b * stride_mb + kv_head * stride_mh + offs_p[:, None] * stride_mp + offs_d[None, :]
        pmin = tl.load(PMIN + meta_off, mask=page_ok[:, None], other=0.0).to(tl.float32)  # [BLOCK_P, D]
        pmax = tl.load(PMAX + meta_off, mask=page_ok[:, None], other=0.0).to(tl.float32)
        candidate = offs_p < current_page
        if SHARED:
            total = tl.sum(pmax * q_pos[None, :] + pmin * q_neg[None, :], 1)  # [BLOCK_P]
            tl.store(SCORES + b * stride_sb + kv_head * stride_sh + offs_p,
                     tl.where(candidate, total, float("-inf")), mask=page_ok)
        else:
            for g in tl.static_range(GROUP):
                q_head = kv_head * GROUP + g
                qg = tl.load(Q + b * stride_qb + q_head * stride_qh + offs_d).to(tl.float32)  # [D]
                bound = tl.sum(pmax * tl.maximum(qg, 0.0)[None, :] + pmin * tl.minimum(qg, 0.0)[None, :], 1)
                tl.store(SCORES + b * stride_sb + q_head * stride_sh + offs_p,
                         tl.where(candidate, bound, float("-inf")), mask=page_ok)


def triton_quest_page_scores(
    q: torch.Tensor,
    page_min: torch.Tensor,
    page_max: torch.Tensor,
    lens: torch.Tensor,
    page_size: int = 16,
    share_pages: bool = True,
    block_p: int = 32,
    blocks_per_program: int = 1,
    num_stages: int = 2,
) -> torch.Tensor:
    """Quest upper-bound page scores.

    Args:
        q: `[B, Hq, D]` current query (unscaled; the ranking does not depend on the softmax scale).
        page_min, page_max: `[B, Hkv, P, D]` elementwise min / max of each page's keys.
        lens: `[B]` cache lengths including the current token.
        page_size: tokens per page. Default: 16.
        share_pages: one score row per KV head (sum over its query heads) instead of per query head.

    Returns:
        `[B, Hsel, P]` fp32 (Hsel = Hkv if share_pages else Hq); pages >= the current page score -inf.
    """
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads, num_pages = page_min.shape[1], page_min.shape[2]
    if num_q_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_q_heads}) must be a multiple of KV heads ({num_kv_heads})")
    _check_metadata(page_min, page_max, batch, num_kv_heads, head_dim)
    if q.stride(-1) != 1:
        raise ValueError("q must be contiguous in the head dim")
    lens = _batch_lens(lens, batch)
    group = num_q_heads // num_kv_heads
    rows = num_kv_heads if share_pages else num_q_heads
    scores = torch.empty(batch, rows, num_pages, device=q.device, dtype=torch.float32)
    grid = (batch * num_kv_heads, triton.cdiv(num_pages, block_p * blocks_per_program))
    _page_scores_kernel[grid](
        q, page_min, page_max, lens, scores,
        q.stride(0), q.stride(1),
        page_min.stride(0), page_min.stride(1), page_min.stride(2),
        scores.stride(0), scores.stride(1),
        num_kv_heads, num_pages, page_size,
        GROUP=group, SHARED=share_pages, HEAD_DIM=head_dim, BLOCK_P=block_p, BLOCKS=blocks_per_program,
        num_warps=4, num_stages=num_stages,
    )
    return scores


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


# one score row must fit in registers; longer rows (contexts past 512K at page 16) use torch.topk
MAX_PAGES_IN_REGISTERS = 32768


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


def _topk_select_pages(scores: torch.Tensor, lens: torch.Tensor, page_size: int, page_budget: int):
    """torch.topk + sort version for rows too long for registers (ties may go either way)."""
    batch, rows, num_pages = scores.shape
    current = ((lens.long() - 1) // page_size)[:, None, None].expand(batch, rows, 1)
    n_past = min(page_budget, num_pages - 1)
    values, past = torch.topk(scores, n_past, dim=-1, sorted=False)
    past = past.masked_fill(values == float("-inf"), num_pages)
    chosen = torch.sort(torch.cat([past, current], dim=-1), dim=-1).values
    return chosen.masked_fill(chosen == num_pages, -1).to(torch.int32)


def _batch_lens(lens: torch.Tensor, batch: int) -> torch.Tensor:
    if lens.dim() != 1 or lens.shape[0] != batch:
        raise ValueError(f"lens / positions must be [B] = [{batch}], got {tuple(lens.shape)}")
    if lens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"lens must be int32 or int64, got {lens.dtype}")
    return lens
