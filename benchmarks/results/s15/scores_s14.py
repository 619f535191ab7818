"""Session 14's Quest page-score kernel (kernels/quest/triton.py before session 15's load mask: it reads the
metadata of every page, the empty pages past the current one too), copied unchanged so that
`reserved_pages_probe.py` can time it against the library's in the same run."""
import torch
import triton
import triton.language as tl

from sparse_attn.kernels.quest.triton import GROWING_ARGS, _batch_lens, _check_metadata  # unchanged


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
        meta_off = b * stride_mb + kv_head * stride_mh + offs_p[:, None] * stride_mp + offs_d[None, :]
        pmin = tl.load(PMIN + meta_off, mask=page_ok[:, None], other=0.0).to(tl.float32)  # [BLOCK_P, D]
        pmax = tl.load(PMAX + meta_off, mask=page_ok[:, None], other=0.0).to(tl.float32)
        candidate = offs_p < current_page
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
