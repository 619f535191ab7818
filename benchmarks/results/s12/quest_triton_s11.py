"""Session 11's Quest page scores and page selection (kernels/quest/triton.py at 8002cf2), the functions
quest_probe.py compares, copied unchanged (the rest of that module is not needed here)."""
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
    """
    pid_bh = tl.program_id(0)
    pid_p = tl.program_id(1)
    b = pid_bh // num_kv_heads
    kv_head = pid_bh % num_kv_heads
    length = tl.load(LENS + b).to(tl.int32)
    current_page = (length - 1) // page_size
    offs_d = tl.arange(0, HEAD_DIM)

    for block in range(BLOCKS):
        offs_p = (pid_p * BLOCKS + block) * BLOCK_P + tl.arange(0, BLOCK_P)
        page_ok = offs_p < num_pages
        meta_off = b * stride_mb + kv_head * stride_mh + offs_p[:, None] * stride_mp + offs_d[None, :]
        pmin = tl.load(PMIN + meta_off, mask=page_ok[:, None], other=0.0).to(tl.float32)  # [BLOCK_P, D]
        pmax = tl.load(PMAX + meta_off, mask=page_ok[:, None], other=0.0).to(tl.float32)
        candidate = offs_p < current_page

        total = tl.zeros([BLOCK_P], dtype=tl.float32)
        for g in tl.static_range(GROUP):
            q_head = kv_head * GROUP + g
            qg = tl.load(Q + b * stride_qb + q_head * stride_qh + offs_d).to(tl.float32)  # [D]
            bound = tl.sum(tl.maximum(qg[None, :] * pmin, qg[None, :] * pmax), 1)  # [BLOCK_P]
            if SHARED:
                total += bound
            else:
                tl.store(SCORES + b * stride_sb + q_head * stride_sh + offs_p,
                         tl.where(candidate, bound, float("-inf")), mask=page_ok)
        if SHARED:
            tl.store(SCORES + b * stride_sb + kv_head * stride_sh + offs_p,
                     tl.where(candidate, total, float("-inf")), mask=page_ok)


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

    The k-th largest score is found by a 32-step bitwise search on the scores' order-preserving integer keys
    (each step one count over the row held in registers) instead of a sort; ties at the threshold go to the
    lower page ids, like the reference's stable sort. Then the current page, then -1 padding.
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
