"""Triton kernels for Quest decoding (Tang et al. 2024, arXiv:2406.10774): page scores, metadata update, attention
over the selected pages of the full cache.

Pipeline of one decode step (see `kernels/quest/__init__.py`):
1. `triton_quest_page_scores`: upper bound of q.k per page from the page's elementwise key min/max,
   `sum_d max(q_d * min_d, q_d * max_d)` = `max(q, 0) . max + min(q, 0) . min`; summed over the query heads of a KV
   group when pages are shared (then the q parts are summed first: two dot products per page). Reads the metadata
   once (1 / page_size of the KV bytes).
2. `triton_quest_select_pages`: exact top-k by a guided threshold search over the row held in registers (~5 row
   counts; one launch, 14-19 us at 128K where torch.topk + sort cost ~100 us), the current page appended,
   ascending, -1 padded.
3. `triton_quest_decode`: flash-decoding over the selected pages only (GQA-grouped when pages are shared; split
   over the selected slots so batch 1 fills the GPU), merged by the shared combine kernel of `kernels/decode`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ..decode.triton import (
    INTERPRETING,
    LOG2E,
    _combine_group,
    _dot,
    _store_split,
    _ticket_counters,
    allocate_split_buffers,
    check_decode_shapes,
    choose_num_splits,
    group_rows,
    launch_split_decode,
)
from .._order_key import order_key
from .naive import naive_selection_reads


def _check_metadata(page_min: torch.Tensor, page_max: torch.Tensor, batch: int, num_kv_heads: int, head_dim: int):
    if page_min.shape != page_max.shape or page_min.dim() != 4:
        raise ValueError(f"page_min / page_max must be [B, Hkv, P, D] of one shape, got {tuple(page_min.shape)} "
                         f"and {tuple(page_max.shape)}")
    if page_min.shape[0] != batch or page_min.shape[1] != num_kv_heads or page_min.shape[3] != head_dim:
        raise ValueError(f"page metadata {tuple(page_min.shape)} does not match B={batch}, Hkv={num_kv_heads}, "
                         f"D={head_dim}")
    if page_min.stride(-1) != 1 or page_max.stride(-1) != 1:
        raise ValueError("page metadata must be contiguous in the head dim")


#: Arguments that change as a decode goes on: the page count (one more every page_size tokens) and the row strides of
#: the `[B, H, P]` scores. Triton specializes integer arguments on divisibility by 16, so each would compile new
#: variants mid-generation (0.3-0.6 s each, seen in the Transformers decode profile, session 13); none of them
#: decides a vector width (the page axis is contiguous, its bound is masked).
GROWING_ARGS = ["stride_sb", "stride_sh", "num_pages"]


@triton.jit
def _page_bound(pmin, pmax, q_pos, q_neg):
    """Quest's upper bound of q.k per page, `[BLOCK_P]`, from the pages' key min / max `[BLOCK_P, D]` (fp32) and q
    split as `q_pos = max(q, 0)`, `q_neg = min(q, 0)` `[D]` (or their sums over a KV group): `q_pos . max + q_neg .
    min`, which equals `sum_d max(q_d min_d, q_d max_d)` (see `_page_scores_kernel`)."""
    return tl.sum(pmax * q_pos[None, :] + pmin * q_neg[None, :], 1)


@triton.jit(do_not_specialize=GROWING_ARGS)
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
        candidate = offs_p < current_page
        # only candidates' metadata is read: pages past the current one (the empty pages a growing cache reserves
        # ahead, up to 1/9 of them, and a shorter sample's tail in a batch) cost no memory traffic
        meta_off = b * stride_mb + kv_head * stride_mh + offs_p[:, None] * stride_mp + offs_d[None, :]
        pmin = tl.load(PMIN + meta_off, mask=candidate[:, None], other=0.0).to(tl.float32)  # [BLOCK_P, D]
        pmax = tl.load(PMAX + meta_off, mask=candidate[:, None], other=0.0).to(tl.float32)
        if SHARED:
            total = _page_bound(pmin, pmax, q_pos, q_neg)  # [BLOCK_P]
            tl.store(SCORES + b * stride_sb + kv_head * stride_sh + offs_p,
                     tl.where(candidate, total, float("-inf")), mask=page_ok)
        else:
            for g in tl.static_range(GROUP):
                q_head = kv_head * GROUP + g
                qg = tl.load(Q + b * stride_qb + q_head * stride_qh + offs_d).to(tl.float32)  # [D]
                bound = _page_bound(pmin, pmax, tl.maximum(qg, 0.0), tl.minimum(qg, 0.0))
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
def _row_stats(a_min, a_max, a_sum, a_sq, b_min, b_max, b_sum, b_sq):
    return tl.minimum(a_min, b_min), tl.maximum(a_max, b_max), a_sum + b_sum, a_sq + b_sq


@triton.jit(do_not_specialize=GROWING_ARGS + ["stride_ob", "stride_oh", "num_out"])  # num_out grows up to budget + 1
def _select_pages_kernel(
    SCORES, LENS, OUT, TOKENS_OUT, SPARSITY_OUT,
    stride_sb, stride_sh, stride_ob, stride_oh,
    num_sel_heads, num_pages, page_size, page_budget, num_out,
    BLOCK_P: tl.constexpr, BLOCK_OUT: tl.constexpr, WRITE_READS: tl.constexpr,
):
    """Program (b * Hsel + head): exact top-k of one score row, written in ascending page order.

    The row is held in registers as order-preserving integer keys. The k-th largest key is bracketed,
    `count(key >= lo) >= take > count(key >= hi)`, from the row's min to its max + 1, and each round counts the
    keys at one trial key inside the bracket and keeps the half where the count crosses `take`:
    * the first trial is where a normal distribution with the row's mean and standard deviation puts the
      `take`-th largest score (Quest's page bounds are sums over 128 dims, close to normal);
    * then regula falsi on the counts (the trial interpolates where the count crosses `take` between the bracket
      ends), with the Illinois correction (an end kept twice in a row has its weight halved) so that it does not
      stall on one side;
    * after three rounds in a row that did not halve the bracket, bisection; so any row, whatever its values,
      takes a bounded number of rounds (at most 4 per halving of the bracket); score rows of random 128K caches
      took a median of 4-5 and at most 14 (the k-th and (k+1)-th scores 1 ulp apart).
    The search stops once exactly `take` keys reach `lo` (no ties to break) or the bracket is one key wide (then
    the keys equal to `lo` are ties, which go to the lower page ids, like the reference's stable sort).

    Why: every count is a row reduction (three block barriers), and a decode step has only B x Hsel rows, so the
    selection is latency-bound by its number of reductions and scans: session 14's fixed 32-round bitwise search
    plus two row scans took 22-26 us at 128K (benchmarks/RESULTS.md, sessions 12, 14, 15). The compaction is one
    scan of the above and tie flags packed into one int32 (16 bits each: a row holds at most 32768 pages).

    WRITE_READS: also write what the selection reads (`naive_selection_reads`): `take` full past pages plus the
    current page's `length - current * page_size` tokens, and `1 - tokens / length`, per row, so that a decode step
    needs no torch ops to measure its sparsity.
    """
    row = tl.program_id(0)
    b = row // num_sel_heads
    head = row % num_sel_heads
    length = tl.load(LENS + b).to(tl.int32)
    current = (length - 1) // page_size
    take = tl.minimum(tl.minimum(page_budget, current), num_pages - 1)  # past pages this row selects
    num_candidates = tl.minimum(current, num_pages)

    offs = tl.arange(0, BLOCK_P)
    candidate = (offs < current) & (offs < num_pages)
    x = tl.load(SCORES + b * stride_sb + head * stride_sh + offs, mask=candidate, other=0.0)
    # non-candidates get a key below every candidate's (-inf's is -2139095041)
    key = tl.where(candidate, order_key(x.to(tl.int32, bitcast=True)), -2147483648)

    # The bracket, in int64 so that `hi = max + 1` cannot overflow; every trial lies strictly inside it, so it is
    # an int32 key. take == 0 (no past page): an empty bracket at max + 1, nothing above it, no ties.
    key_min, key_max, x_sum, x_sq = tl.reduce(
        (tl.where(candidate, key, 2147483647), key, x, x * x), 0, _row_stats)
    hi = key_max.to(tl.int64) + 1
    count_hi = take * 0
    lo = tl.where(take > 0, key_min.to(tl.int64), hi)
    count_lo = tl.where(take > 0, num_candidates, 0)

    # first trial: mean + z * std, z of the upper tail `take / n` by the logistic approximation of the probit
    n = num_candidates.to(tl.float32)
    mean = x_sum / n
    std = tl.sqrt(tl.maximum(x_sq / n - mean * mean, 0.0))
    tail = tl.minimum(tl.maximum((take.to(tl.float32) + 0.5) / n, 1e-6), 1.0 - 1e-6)
    first = (mean + std * tl.log((1.0 - tail) / tail) / 1.702).to(tl.float32)
    first_key = order_key(first.to(tl.int32, bitcast=True)).to(tl.int64)
    use_first = (first == first) & (tl.abs(first) < float("inf"))  # finite: no inf / NaN scores in the sums

    weight_lo = 1.0
    weight_hi = 1.0
    last_reached = -1  # which end the previous round moved: 1 lo, 0 hi, -1 none yet
    slow_rounds = 0
    while (count_lo > take) & (hi - lo > 1):
        span = hi - lo
        pull_lo = (count_lo - take - 0.5) * weight_lo
        pull_hi = (take + 0.5 - count_hi) * weight_hi
        trial = lo + (span.to(tl.float32) * (pull_lo / (pull_lo + pull_hi))).to(tl.int64)
        trial = tl.where(slow_rounds >= 3, lo + span // 2, trial)
        trial = tl.where(use_first, first_key, trial)
        trial = tl.minimum(tl.maximum(trial, lo + 1), hi - 1)
        use_first = False

        count = tl.sum((key >= trial.to(tl.int32)).to(tl.int32), 0)
        reached = count >= take
        lo = tl.where(reached, trial, lo)
        count_lo = tl.where(reached, count, count_lo)
        hi = tl.where(reached, hi, trial)
        count_hi = tl.where(reached, count_hi, count)
        # Illinois: the end that stayed put twice in a row pulls half as hard
        same = reached.to(tl.int32) == last_reached
        weight_hi = tl.where(same & reached, weight_hi * 0.5, tl.where(same, weight_hi, 1.0))
        weight_lo = tl.where(same & ~reached, weight_lo * 0.5, tl.where(same, weight_lo, 1.0))
        last_reached = reached.to(tl.int32)
        slow_rounds = tl.where(2 * (hi - lo) > span, slow_rounds + 1, 0)

    # exactly take keys >= lo: those; else the keys >= hi (count_hi < take) and the first ties at lo
    exact = count_lo == take
    cut = tl.where(exact, lo, hi).to(tl.int32)
    ties_needed = tl.where(exact, 0, take - count_hi)
    above = key >= cut
    tie = (key == lo.to(tl.int32)) & candidate
    # one scan: above count in the high 16 bits, tie count in the low 16 bits, inclusive prefix per page
    prefix = tl.cumsum(above.to(tl.int32) * 65536 + tie.to(tl.int32), 0)
    ties_before = prefix & 0xFFFF
    selected = above | (tie & (ties_before <= ties_needed))
    slot = (prefix >> 16) + tl.minimum(ties_before, ties_needed) - 1
    out_row = OUT + b * stride_ob + head * stride_oh
    tl.store(out_row + slot, offs, mask=selected)

    tail = tl.arange(0, BLOCK_OUT)
    tail_value = tl.where(tail == take, current, -1)
    tl.store(out_row + tail, tail_value, mask=(tail >= take) & (tail < num_out))
    if WRITE_READS:
        tokens = take * page_size + (length - current * page_size)  # past pages are full
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
        # 8 warps up to 8192 pages (128K at page 16): 14.2-14.6 us there against 14.8-14.9 with 16 warps and 26 with
        # 4 (32 keys per thread; 64 spill), H200 session 15; 16 beyond (rows past 128K, not timed)
        num_warps=num_warps or (8 if block_p <= 8192 else 16),
    )
    return (out, tokens, sparsity) if return_reads else out


def _topk_select_pages(scores: torch.Tensor, lens: torch.Tensor, page_size: int, page_budget: int):
    """torch.topk + sort version for rows too long for registers (ties may go either way)."""
    batch, rows, num_pages = scores.shape
    current = ((lens.long() - 1) // page_size)[:, None, None].expand(batch, rows, 1)
    n_past = min(page_budget, num_pages - 1)
    values, past = torch.topk(scores, n_past, dim=-1, sorted=False)
    past = past.masked_fill(values == float("-inf"), num_pages)
    chosen = torch.sort(torch.cat([past, current], dim=-1), dim=-1).values
    return chosen.masked_fill(chosen == num_pages, -1).to(torch.int32)


@triton.jit
def _paged_decode_split_kernel(
    OUT, O_PART, LSE_PART, Q, K, V, LENS, PAGE_INDEX, LSE_OUT, COUNTERS,
    stride_qb, stride_qh,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ib, stride_ih,
    stride_ob, stride_oh,
    num_sel_heads, num_q_heads, num_slots, slots_per_split, num_splits, page_size, scale_log2e,
    ROWS: tl.constexpr, GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr, PREFETCH_INDEX: tl.constexpr, SINGLE_SPLIT: tl.constexpr, WRITE_LSE: tl.constexpr,
    DOT_F32: tl.constexpr, FUSE_COMBINE: tl.constexpr = False,
):
    """Program (b * Hsel + sel_head, split): ROWS query heads (a KV group, or one head) over a chunk of the
    selected page slots. BLOCK_N tokens = BLOCK_N / page_size pages gathered per step.

    FUSE_COMBINE (several splits): the last program of each selection row to finish merges the row's partials, as
    `kernels.decode.triton._decode_split_kernel` does (ticket counter `COUNTERS[b * Hsel + sel_head]`): one launch
    per step instead of two, which matters where a decode step is host-bound (Transformers)."""
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = pid_bh // num_sel_heads
    sel_head = pid_bh % num_sel_heads
    first_q_head = sel_head * ROWS
    kv_head = first_q_head // GROUP
    length = tl.load(LENS + b).to(tl.int32)

    slot_start = split * slots_per_split
    slot_end = tl.minimum(slot_start + slots_per_split, num_slots)
    token_start = slot_start * page_size
    token_end = slot_end * page_size

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    row_ok = offs_g < ROWS
    q_heads = first_q_head + offs_g
    q = tl.load(Q + b * stride_qb + q_heads[:, None] * stride_qh + offs_d[None, :], mask=row_ok[:, None], other=0.0)

    index_base = PAGE_INDEX + b * stride_ib + sel_head * stride_ih
    k_base = K + b * stride_kb + kv_head * stride_kh
    v_base = V + b * stride_vb + kv_head * stride_vh
    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], dtype=tl.float32)
    flat = token_start + offs_n  # position in the concatenation of the selected pages
    page_ahead = tl.load(index_base + flat // page_size, mask=flat < token_end, other=-1)
    for n0 in range(token_start, token_end, BLOCK_N):
        flat = n0 + offs_n
        slot_ok = flat < token_end
        if PREFETCH_INDEX:  # page ids loaded one iteration ahead: K/V addresses need not wait on an index load
            page = page_ahead
            page_ahead = tl.load(index_base + (flat + BLOCK_N) // page_size, mask=flat + BLOCK_N < token_end,
                                 other=-1)
        else:
            page = tl.load(index_base + flat // page_size, mask=slot_ok, other=-1)
        tok = page * page_size + flat % page_size
        tok_ok = slot_ok & (page >= 0) & (tok < length)
        kt = tl.load(k_base + tok[None, :] * stride_kn + offs_d[:, None], mask=tok_ok[None, :], other=0.0)
        s = _dot(q, kt, DOT_F32) * scale_log2e
        s = tl.where(tok_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # a block can be entirely unused (-1 slots): keep the state unchanged instead of producing NaN
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        vt = tl.load(v_base + tok[:, None] * stride_vn + offs_d[None, :], mask=tok_ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(vt.dtype), vt, DOT_F32)
        m_i = m_new

    part_rows = (b * num_q_heads + q_heads) * num_splits + split
    _store_split(OUT, O_PART, LSE_PART, acc, m_i, l_i, b, q_heads, part_rows, row_ok,
                 stride_ob, stride_oh, HEAD_DIM, SINGLE_SPLIT, WRITE_LSE)
    if FUSE_COMBINE:
        tl.debug_barrier()  # every thread's partial stores precede the ticket
        ticket = tl.atomic_add(COUNTERS + pid_bh, 1, sem="acq_rel", scope="gpu")
        if ticket == num_splits - 1:
            tl.store(COUNTERS + pid_bh, 0)  # every split of this launch has drawn: reset for the next launch
            _combine_group(O_PART, LSE_PART, OUT, LSE_OUT, (b * num_q_heads + q_heads) * num_splits,
                           b * num_q_heads + q_heads, row_ok, b, q_heads, num_splits, stride_ob, stride_oh,
                           BLOCK_G, HEAD_DIM, WRITE_LSE)


#: Quest decode merges its splits in the split kernel up to this many splits (a second launch beyond: the last
#: program's serial merge of many partials costs more than the launch; see `triton_quest_decode`).
FUSE_MAX_SPLITS = 16


def _plan_page_launch(q: torch.Tensor, num_kv_heads: int, page_index: torch.Tensor, page_size: int,
                      pages_per_block: int, num_splits: Optional[int]):
    """Checks `page_index [B, Hkv or Hq, n]` and plans the split-K launch shared by the contiguous and paged decodes.

    Returns `(page_index contiguous, group, num_sel_heads, rows, num_slots, num_splits, slots_per_split)`: `rows`
    query heads share one selection row (the GQA group when pages are chosen per KV head, else 1), and each split
    covers `slots_per_split` selected pages (a multiple of `pages_per_block`).
    """
    batch, num_q_heads = q.shape[0], q.shape[1]
    if page_index.dim() != 3 or page_index.shape[0] != batch or page_index.shape[1] not in (num_kv_heads, num_q_heads):
        raise ValueError(f"page_index must be [B, Hkv or Hq, n] = [{batch}, {num_kv_heads} or {num_q_heads}, n], "
                         f"got {tuple(page_index.shape)}")
    block_n = page_size * pages_per_block
    if block_n & (block_n - 1) or block_n < 16:
        raise ValueError(f"page_size * pages_per_block = {block_n} must be a power of two >= 16 (Triton tile); "
                         f"use backend='naive' for page_size={page_size}")
    group = num_q_heads // num_kv_heads
    num_sel_heads = page_index.shape[1]
    rows = group if num_sel_heads == num_kv_heads else 1
    num_slots = max(page_index.shape[2], 1)
    if num_splits is None:
        num_splits = choose_num_splits(batch * num_sel_heads, num_slots * page_size, q.device)
    slots_per_split = triton.cdiv(triton.cdiv(num_slots, num_splits), pages_per_block) * pages_per_block
    num_splits = triton.cdiv(num_slots, slots_per_split)
    return page_index.contiguous(), group, num_sel_heads, rows, num_slots, num_splits, slots_per_split


def triton_quest_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lens: torch.Tensor,
    page_index: torch.Tensor,
    page_size: int,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    return_lse: bool = False,
    num_splits: Optional[int] = None,
    pages_per_block: int = 8,
    num_warps: int = 4,
    num_stages: int = 3,
    prefetch_index: bool = False,
    fuse_combine: Optional[bool] = None,
):
    """Attention of the current query over the selected pages of the full cache; same contract as
    `naive_quest_decode`.

    Args:
        q: `[B, Hq, D]`.
        k, v: `[B, Hkv, S, D]` full cache; positions >= lens[b] are never read.
        lens: `[B]` cache lengths including the current token.
        page_index: `[B, Hsel, n]` int32 selected pages (Hsel = Hkv: shared by the query heads of a KV group, one
            program per group reads each page once; Hsel = Hq: per query head); -1 marks an unused slot. The order
            does not change the result.
        page_size: tokens per page (`page_size * pages_per_block` must be a power of two >= 16).
        scale: softmax scale. Default: `D ** -0.5`.
        out: optional `[B, Hq, D]` output written in place.
        return_lse: also return the natural-log lse `[B, Hq]` fp32.
        num_splits, pages_per_block, num_warps, num_stages: launch parameters (default: heuristics; no sync).
        prefetch_index: load the next block's page ids one iteration ahead. Default False: measured on the H100
            it gains nothing (Triton's software pipeline already hides the index loads).
        fuse_combine: with several splits, the last program of each selection row merges the partials (one launch
            instead of two; the ticket counters are one buffer per device, so fused decodes of one device must not
            run concurrently on two streams). Default (None): fused up to `FUSE_MAX_SPLITS` splits. Measured on
            the H200 at 128K (benchmarks/RESULTS.md, session 14): with 9 splits (B = 8, 10 % budget) both take
            0.123-0.125 ms, with 52 (B = 1) the last program's merge makes it 0.040 against 0.033 ms; the
            default 1024-token budget spans 5 splits, and saving a launch matters where a step is host-bound
            (Transformers).

    Returns:
        `out [B, Hq, D]` in q's dtype (and `lse`).
    """
    batch, num_q_heads, num_kv_heads, head_dim = check_decode_shapes(q, k, v)
    lens = _batch_lens(lens, batch)
    page_index, group, num_sel_heads, rows, num_slots, num_splits, slots_per_split = _plan_page_launch(
        q, num_kv_heads, page_index, page_size, pages_per_block, num_splits)
    block_n = page_size * pages_per_block
    scale = head_dim ** -0.5 if scale is None else scale
    if out is None:
        out = torch.empty_like(q)
    if fuse_combine is None:
        fuse_combine = num_splits <= FUSE_MAX_SPLITS
    fused = fuse_combine and num_splits > 1
    lse_out = counters = lens  # unused placeholders unless fused
    if fused:
        counters = _ticket_counters(q.device, batch * num_sel_heads)
        if return_lse:
            lse_out = torch.empty(batch, num_q_heads, device=q.device, dtype=torch.float32)
    args = (
        q, k, v, lens, page_index, lse_out, counters,
        q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        page_index.stride(0), page_index.stride(1),
        out.stride(0), out.stride(1),
        num_sel_heads, num_q_heads, page_index.shape[2], slots_per_split, num_splits, page_size, scale * LOG2E,
    )
    meta = dict(ROWS=rows, GROUP=group, BLOCK_G=group_rows(rows), HEAD_DIM=head_dim, BLOCK_N=block_n,
                PREFETCH_INDEX=prefetch_index, num_warps=num_warps, num_stages=num_stages)
    if fused:
        o_part, lse_part = allocate_split_buffers(batch, num_q_heads, num_splits, head_dim, q.device)
        _paged_decode_split_kernel[(batch * num_sel_heads, num_splits)](
            out, o_part, lse_part, *args, SINGLE_SPLIT=False, WRITE_LSE=return_lse, DOT_F32=INTERPRETING,
            FUSE_COMBINE=True, **meta)
        return (out, lse_out) if return_lse else out
    return launch_split_decode(_paged_decode_split_kernel, batch * num_sel_heads, num_splits, out, return_lse, args,
                               **meta)


@triton.jit
def _update_metadata_kernel(
    K_NEW, PMIN, PMAX, POSITIONS,
    stride_kb, stride_kh,
    stride_mb, stride_mh, stride_mp,
    num_kv_heads, page_size,
    HEAD_DIM: tl.constexpr,
):
    """Program (b * Hkv + kv_head): fold the key written at positions[b] into its page's min / max (pages start
    as (+inf, -inf), so a fresh page takes the key itself)."""
    pid = tl.program_id(0)
    b = pid // num_kv_heads
    kv_head = pid % num_kv_heads
    page = tl.load(POSITIONS + b).to(tl.int64) // page_size
    offs_d = tl.arange(0, HEAD_DIM)
    key = tl.load(K_NEW + b * stride_kb + kv_head * stride_kh + offs_d).to(PMIN.dtype.element_ty)
    meta = b * stride_mb + kv_head * stride_mh + page * stride_mp + offs_d
    tl.store(PMIN + meta, tl.minimum(tl.load(PMIN + meta), key))
    tl.store(PMAX + meta, tl.maximum(tl.load(PMAX + meta), key))


def triton_update_page_meta(
    page_min: torch.Tensor, page_max: torch.Tensor, k_new: torch.Tensor, positions: torch.Tensor, page_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """In place: fold `k_new [B, Hkv, D]` (the key written at token `positions[b]`) into
    `page_min / page_max [B, Hkv, P, D]`; one launch instead of torch's gather / min / scatter chain. Positions are
    not range-checked on the device (that would sync): keep `positions // page_size < P`.

    Returns:
        `(page_min, page_max)` (the same tensors).
    """
    batch, num_kv_heads, head_dim = k_new.shape
    _check_metadata(page_min, page_max, batch, num_kv_heads, head_dim)
    if k_new.stride(-1) != 1:
        raise ValueError("k_new must be contiguous in the head dim")
    positions = _batch_lens(positions, batch)
    _update_metadata_kernel[(batch * num_kv_heads,)](
        k_new, page_min, page_max, positions,
        k_new.stride(0), k_new.stride(1),
        page_min.stride(0), page_min.stride(1), page_min.stride(2),
        num_kv_heads, page_size, HEAD_DIM=head_dim, num_warps=1,
    )
    return page_min, page_max


@triton.jit(do_not_specialize=["stride_cb", "stride_vb", "stride_mb"])  # grow with the cache and the page count
def _append_token_kernel(
    KEYS, VALUES, PMIN, PMAX, K_NEW, V_NEW, LENS,
    stride_cb, stride_ch, stride_cn,
    stride_vb, stride_vh, stride_vn,
    stride_mb, stride_mh, stride_mp,
    stride_kb, stride_kh, stride_nb, stride_nh,
    page_size,
    NUM_KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    """Program b: write sample b's new key / value of every KV head at position lens[b], fold the key into its
    page's min / max, then lens[b] += 1. One program per sample, so the length is read before it is bumped."""
    b = tl.program_id(0)
    pos = tl.load(LENS + b).to(tl.int64)
    page = pos // page_size
    offs_d = tl.arange(0, HEAD_DIM)
    for h in tl.static_range(NUM_KV_HEADS):
        key = tl.load(K_NEW + b * stride_kb + h * stride_kh + offs_d)
        value = tl.load(V_NEW + b * stride_nb + h * stride_nh + offs_d)
        tl.store(KEYS + b * stride_cb + h * stride_ch + pos * stride_cn + offs_d, key.to(KEYS.dtype.element_ty))
        tl.store(VALUES + b * stride_vb + h * stride_vh + pos * stride_vn + offs_d,
                 value.to(VALUES.dtype.element_ty))
        meta = b * stride_mb + h * stride_mh + page * stride_mp + offs_d
        # compare in fp32 (exact for 16-bit values; the Triton interpreter compares bf16 as raw integer bits)
        key = key.to(PMIN.dtype.element_ty).to(tl.float32)
        low = tl.minimum(tl.load(PMIN + meta).to(tl.float32), key)
        high = tl.maximum(tl.load(PMAX + meta).to(tl.float32), key)
        tl.store(PMIN + meta, low.to(PMIN.dtype.element_ty))
        tl.store(PMAX + meta, high.to(PMAX.dtype.element_ty))
    tl.store(LENS + b, (pos + 1).to(LENS.dtype.element_ty))


def triton_append_token(keys: torch.Tensor, values: torch.Tensor, page_min: torch.Tensor, page_max: torch.Tensor,
                        k_new: torch.Tensor, v_new: torch.Tensor, lens: torch.Tensor, page_size: int) -> None:
    """`naive_append_token` in one launch (instead of ~8: index writes of K and V, the metadata fold, `lens += 1`).

    Args:
        keys, values: `[B, Hkv, S, D]` cache, written at position `lens[b]` (not range-checked on the device, which
            would sync: keep `lens < S` and `lens // page_size < P`).
        page_min, page_max: `[B, Hkv, P, D]` page metadata, updated in place.
        k_new, v_new: `[B, Hkv, D]` (any strides with a contiguous head dim).
        lens: `[B]` int32 / int64, incremented in place.
    """
    batch, num_kv_heads, _, head_dim = keys.shape
    if values.shape != keys.shape or k_new.shape != (batch, num_kv_heads, head_dim) or v_new.shape != k_new.shape:
        raise ValueError(f"append_token expects keys, values [B, Hkv, S, D] and k_new, v_new [B, Hkv, D]; got "
                         f"{tuple(keys.shape)}, {tuple(values.shape)}, {tuple(k_new.shape)}, {tuple(v_new.shape)}")
    _check_metadata(page_min, page_max, batch, num_kv_heads, head_dim)
    lens = _batch_lens(lens, batch)
    if any(t.stride(-1) != 1 for t in (keys, values, k_new, v_new)):
        raise ValueError("keys, values, k_new and v_new must be contiguous in the head dim")
    _append_token_kernel[(batch,)](
        keys, values, page_min, page_max, k_new, v_new, lens,
        keys.stride(0), keys.stride(1), keys.stride(2),
        values.stride(0), values.stride(1), values.stride(2),
        page_min.stride(0), page_min.stride(1), page_min.stride(2),
        k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1),
        page_size, NUM_KV_HEADS=num_kv_heads, HEAD_DIM=head_dim, num_warps=1,
    )


# -- Quest over a paged (vLLM) KV cache: metadata per physical page, addresses through the block table -------------
@triton.jit
def _paged_update_kernel(
    KEY, SLOTS, PMIN, PMAX,
    stride_kn, stride_kh, stride_mp, stride_mh,
    num_tokens, num_kv_heads, page_size,
    HEAD_DIM: tl.constexpr, BLOCK_J: tl.constexpr,
):
    """Program (token i, kv head). Tokens written to one page in one step are consecutive (a request's new tokens
    are contiguous in the batch and in its pages), so the first token of each such run (its "leader") folds the
    whole run (<= page_size tokens) into the page: no two programs write one page, no atomics. The leader starts
    from (+inf, -inf) when it sits at the page's first slot (fresh or reused page), else from the stored values."""
    i = tl.program_id(0)
    kv_head = tl.program_id(1)
    slot = tl.load(SLOTS + i).to(tl.int64)
    page = tl.where(slot >= 0, slot // page_size, -1)
    prev = tl.load(SLOTS + i - 1, mask=i > 0, other=-1).to(tl.int64)
    prev_page = tl.where(prev >= 0, prev // page_size, -1)
    leader = (slot >= 0) & ((i == 0) | (prev_page != page))
    if leader:
        offs_j = i + tl.arange(0, BLOCK_J)
        slots_j = tl.load(SLOTS + offs_j, mask=offs_j < num_tokens, other=-1).to(tl.int64)
        same = (offs_j < num_tokens) & (slots_j >= 0) & (slots_j // page_size == page)
        offs_d = tl.arange(0, HEAD_DIM)
        ptrs = KEY + offs_j[:, None].to(tl.int64) * stride_kn + kv_head * stride_kh + offs_d[None, :]
        keys = tl.load(ptrs, mask=same[:, None], other=0.0).to(PMIN.dtype.element_ty).to(tl.float32)
        run_min = tl.min(tl.where(same[:, None], keys, float("inf")), 0)
        run_max = tl.max(tl.where(same[:, None], keys, float("-inf")), 0)
        meta = page * stride_mp + kv_head * stride_mh + offs_d
        fresh = (slot % page_size) == 0
        old_min = tl.load(PMIN + meta).to(tl.float32)
        old_max = tl.load(PMAX + meta).to(tl.float32)
        old_min = tl.where(fresh, float("inf"), old_min)
        old_max = tl.where(fresh, float("-inf"), old_max)
        tl.store(PMIN + meta, tl.minimum(old_min, run_min).to(PMIN.dtype.element_ty))
        tl.store(PMAX + meta, tl.maximum(old_max, run_max).to(PMAX.dtype.element_ty))


def triton_paged_update_page_meta(
    page_min: torch.Tensor, page_max: torch.Tensor, key: torch.Tensor, slot_mapping: torch.Tensor, page_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_paged_update_page_meta` (in place; `page_min, page_max [num_pages_total, Hkv, D]`,
    `key [N', Hkv, D]`, `slot_mapping [N]`, padding slots < 0 skipped); one launch, no host sync."""
    num_tokens = min(slot_mapping.shape[0], key.shape[0])
    num_kv_heads, head_dim = key.shape[1], key.shape[2]
    meta_shape = tuple(page_min.shape[1:])
    if page_min.shape != page_max.shape or page_min.dim() != 3 or meta_shape != (num_kv_heads, head_dim):
        raise ValueError(f"page metadata must be [pages, Hkv={num_kv_heads}, D={head_dim}], got "
                         f"{tuple(page_min.shape)} / {tuple(page_max.shape)}")
    if key.stride(-1) != 1 or page_min.stride(-1) != 1 or page_max.stride() != page_min.stride():
        raise ValueError("key and page metadata must be contiguous in the head dim (metadata: one layout)")
    if num_tokens == 0:
        return page_min, page_max
    slots = slot_mapping[:num_tokens]
    _paged_update_kernel[(num_tokens, num_kv_heads)](
        key, slots, page_min, page_max,
        key.stride(0), key.stride(1), page_min.stride(0), page_min.stride(1),
        num_tokens, num_kv_heads, page_size,
        HEAD_DIM=head_dim, BLOCK_J=triton.next_power_of_2(page_size), num_warps=1,
    )
    return page_min, page_max


@triton.jit(do_not_specialize=GROWING_ARGS)
def _paged_page_scores_kernel(
    Q, PMIN, PMAX, BLOCK_TABLES, LENS, SCORES,
    stride_qb, stride_qh, stride_mp, stride_mh, stride_tb, stride_sb, stride_sh,
    num_kv_heads, num_pages, page_size, pages_per_block,
    GROUP: tl.constexpr, SHARED: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Program (b * Hkv + kv_head, page chunk): like `_page_scores_kernel`, but logical page p of request b reads
    the metadata of physical page `block_tables[b, p // pages_per_block] * pages_per_block + p % pages_per_block`.
    Only candidate pages (p < current page) touch the block table."""
    pid_bh = tl.program_id(0)
    pid_p = tl.program_id(1)
    b = pid_bh // num_kv_heads
    kv_head = pid_bh % num_kv_heads
    length = tl.load(LENS + b).to(tl.int32)
    current_page = (length - 1) // page_size
    offs_d = tl.arange(0, HEAD_DIM)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    page_ok = offs_p < num_pages
    candidate = offs_p < current_page
    block = tl.load(BLOCK_TABLES + b * stride_tb + offs_p // pages_per_block, mask=candidate, other=0).to(tl.int64)
    physical = block * pages_per_block + offs_p % pages_per_block
    meta_off = physical[:, None] * stride_mp + kv_head * stride_mh + offs_d[None, :]
    pmin = tl.load(PMIN + meta_off, mask=candidate[:, None], other=0.0).to(tl.float32)  # [BLOCK_P, D]
    pmax = tl.load(PMAX + meta_off, mask=candidate[:, None], other=0.0).to(tl.float32)
    # the bound as two dot products: max(q, 0) . max + min(q, 0) . min (see `_page_scores_kernel`)
    q_pos = tl.zeros([HEAD_DIM], dtype=tl.float32)
    q_neg = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for g in tl.static_range(GROUP):
        q_head = kv_head * GROUP + g
        qg = tl.load(Q + b * stride_qb + q_head * stride_qh + offs_d).to(tl.float32)
        if SHARED:
            q_pos += tl.maximum(qg, 0.0)
            q_neg += tl.minimum(qg, 0.0)
        else:
            bound = _page_bound(pmin, pmax, tl.maximum(qg, 0.0), tl.minimum(qg, 0.0))
            tl.store(SCORES + b * stride_sb + q_head * stride_sh + offs_p,
                     tl.where(candidate, bound, float("-inf")), mask=page_ok)
    if SHARED:
        total = _page_bound(pmin, pmax, q_pos, q_neg)
        tl.store(SCORES + b * stride_sb + kv_head * stride_sh + offs_p,
                 tl.where(candidate, total, float("-inf")), mask=page_ok)


def triton_paged_page_scores(
    q: torch.Tensor,
    page_min: torch.Tensor,
    page_max: torch.Tensor,
    block_tables: torch.Tensor,
    lens: torch.Tensor,
    page_size: int,
    block_size: int,
    num_pages: int,
    share_pages: bool,
    block_p: int = 64,
) -> torch.Tensor:
    """Same contract as `naive_paged_page_scores`: `[B, Hsel, num_pages]` fp32, -inf for non-candidates."""
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads = page_min.shape[1]
    if num_q_heads % num_kv_heads or block_size % page_size:
        raise ValueError(f"need Hq ({num_q_heads}) % Hkv ({num_kv_heads}) == 0 and page_size ({page_size}) dividing "
                         f"block_size ({block_size})")
    if page_min.dim() != 3 or page_min.shape != page_max.shape or page_min.shape[2] != head_dim:
        raise ValueError(f"page metadata must be [pages, Hkv, D={head_dim}], got {tuple(page_min.shape)}")
    if q.stride(-1) != 1 or page_min.stride(-1) != 1 or page_max.stride() != page_min.stride():
        raise ValueError("q and page metadata must be contiguous in the head dim (metadata: one layout)")
    lens = _batch_lens(lens, batch)
    group = num_q_heads // num_kv_heads
    rows = num_kv_heads if share_pages else num_q_heads
    scores = torch.empty(batch, rows, num_pages, device=q.device, dtype=torch.float32)
    grid = (batch * num_kv_heads, triton.cdiv(num_pages, block_p))
    _paged_page_scores_kernel[grid](
        q, page_min, page_max, block_tables, lens, scores,
        q.stride(0), q.stride(1), page_min.stride(0), page_min.stride(1), block_tables.stride(0),
        scores.stride(0), scores.stride(1),
        num_kv_heads, num_pages, page_size, block_size // page_size,
        GROUP=group, SHARED=share_pages, HEAD_DIM=head_dim, BLOCK_P=block_p, num_warps=4,
    )
    return scores


@triton.jit
def _paged_quest_decode_split_kernel(
    OUT, O_PART, LSE_PART, Q, K, V, BLOCK_TABLES, LENS, PAGE_INDEX,
    stride_qb, stride_qh,
    stride_kblk, stride_kslot, stride_kh,
    stride_vblk, stride_vslot, stride_vh,
    stride_tb, stride_ib, stride_ih,
    stride_ob, stride_oh,
    num_sel_heads, num_q_heads, num_slots, slots_per_split, num_splits, page_size, block_size, scale_log2e,
    ROWS: tl.constexpr, GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_N: tl.constexpr, SINGLE_SPLIT: tl.constexpr, WRITE_LSE: tl.constexpr, DOT_F32: tl.constexpr,
):
    """`_paged_decode_split_kernel` over vLLM's paged cache: token `tok` of request b is read at
    `(block_tables[b, tok // block_size], tok % block_size)`; no gather copy."""
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = pid_bh // num_sel_heads
    sel_head = pid_bh % num_sel_heads
    first_q_head = sel_head * ROWS
    kv_head = first_q_head // GROUP
    length = tl.load(LENS + b).to(tl.int32)

    slot_start = split * slots_per_split
    slot_end = tl.minimum(slot_start + slots_per_split, num_slots)
    token_start = slot_start * page_size
    token_end = slot_end * page_size

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    row_ok = offs_g < ROWS
    q_heads = first_q_head + offs_g
    q = tl.load(Q + b * stride_qb + q_heads[:, None] * stride_qh + offs_d[None, :], mask=row_ok[:, None], other=0.0)

    index_base = PAGE_INDEX + b * stride_ib + sel_head * stride_ih
    table_base = BLOCK_TABLES + b * stride_tb
    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], dtype=tl.float32)
    for n0 in range(token_start, token_end, BLOCK_N):
        flat = n0 + offs_n  # position in the concatenation of the selected pages
        slot_ok = flat < token_end
        page = tl.load(index_base + flat // page_size, mask=slot_ok, other=-1)
        tok = page * page_size + flat % page_size
        tok_ok = slot_ok & (page >= 0) & (tok < length)
        block = tl.load(table_base + tok // block_size, mask=tok_ok, other=0).to(tl.int64)
        offset = (tok % block_size).to(tl.int64)
        k_addr = block * stride_kblk + offset * stride_kslot + kv_head * stride_kh
        kt = tl.load(K + k_addr[None, :] + offs_d[:, None], mask=tok_ok[None, :], other=0.0)
        s = _dot(q, kt, DOT_F32) * scale_log2e
        s = tl.where(tok_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # an all-unused block keeps the state (no NaN)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v_addr = block * stride_vblk + offset * stride_vslot + kv_head * stride_vh
        vt = tl.load(V + v_addr[:, None] + offs_d[None, :], mask=tok_ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(vt.dtype), vt, DOT_F32)
        m_i = m_new

    part_rows = (b * num_q_heads + q_heads) * num_splits + split
    _store_split(OUT, O_PART, LSE_PART, acc, m_i, l_i, b, q_heads, part_rows, row_ok,
                 stride_ob, stride_oh, HEAD_DIM, SINGLE_SPLIT, WRITE_LSE)


def triton_paged_quest_decode(
    q: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    lens: torch.Tensor,
    page_index: torch.Tensor,
    page_size: int,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    num_splits: Optional[int] = None,
    pages_per_block: int = 4,
    num_warps: int = 4,
    num_stages: int = 2,
) -> torch.Tensor:
    """Same contract as `naive_paged_quest_decode` (`key_cache, value_cache [num_blocks, block_size, Hkv, D]`,
    `block_tables [B, max_blocks]`, `page_index [B, Hsel, n]` with -1 padding); attends through the block table.

    Returns:
        `out [B, Hq, D]` in q's dtype.
    """
    batch, num_q_heads, head_dim = q.shape
    num_blocks, block_size, num_kv_heads, _ = key_cache.shape
    if value_cache.shape != key_cache.shape or key_cache.shape[3] != head_dim or num_q_heads % num_kv_heads:
        raise ValueError(f"caches {tuple(key_cache.shape)} / {tuple(value_cache.shape)} do not match q "
                         f"{tuple(q.shape)} (need [num_blocks, block_size, Hkv, D] and Hq % Hkv == 0)")
    if key_cache.stride(-1) != 1 or value_cache.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("q and the caches must be contiguous in the head dim")
    if block_size % page_size:
        raise ValueError(f"page_size={page_size} must divide block_size={block_size}")
    lens = _batch_lens(lens, batch)
    page_index, group, num_sel_heads, rows, num_slots, num_splits, slots_per_split = _plan_page_launch(
        q, num_kv_heads, page_index, page_size, pages_per_block, num_splits)
    block_n = page_size * pages_per_block
    scale = head_dim ** -0.5 if scale is None else scale
    if out is None:
        out = torch.empty_like(q)
    args = (
        q, key_cache, value_cache, block_tables, lens, page_index,
        q.stride(0), q.stride(1),
        key_cache.stride(0), key_cache.stride(1), key_cache.stride(2),
        value_cache.stride(0), value_cache.stride(1), value_cache.stride(2),
        block_tables.stride(0), page_index.stride(0), page_index.stride(1),
        out.stride(0), out.stride(1),
        num_sel_heads, num_q_heads, page_index.shape[2], slots_per_split, num_splits, page_size, block_size,
        scale * LOG2E,
    )
    return launch_split_decode(
        _paged_quest_decode_split_kernel, batch * num_sel_heads, num_splits, out, False, args,
        ROWS=rows, GROUP=group, BLOCK_G=group_rows(rows), HEAD_DIM=head_dim, BLOCK_N=block_n,
        num_warps=num_warps, num_stages=num_stages,
    )


def _batch_lens(lens: torch.Tensor, batch: int) -> torch.Tensor:
    if lens.dim() != 1 or lens.shape[0] != batch:
        raise ValueError(f"lens / positions must be [B] = [{batch}], got {tuple(lens.shape)}")
    if lens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"lens must be int32 or int64, got {lens.dtype}")
    return lens


__all__: Tuple[str, ...] = (
    "triton_quest_page_scores",
    "triton_quest_select_pages",
    "triton_quest_decode",
    "triton_update_page_meta",
    "triton_append_token",
    "triton_paged_update_page_meta",
    "triton_paged_page_scores",
    "triton_paged_quest_decode",
)
