"""Quest page primitives: the readable PyTorch reference.

Quest (Tang et al. 2024, arXiv:2406.10774) splits the full KV cache into pages of `page_size` tokens aligned at
position 0, keeps per page and KV head the elementwise min and max of its keys, and at each decode step attends only
to the pages whose upper-bound score is highest, plus the current (last, possibly partial) page.

Layout (docs/architecture.md): `k, v [B, Hkv, S, D]` with valid tokens at `0 .. lens[b] - 1`; `lens [B]` counts the
tokens in the cache INCLUDING the token being decoded; page metadata `[B, Hkv, P, D]`, `P = ceil(S / page_size)`.
"""
from typing import Optional, Tuple, Union

import torch

from ..decode.naive import masked_gqa_decode


def num_pages(num_tokens: int, page_size: int) -> int:
    return -(-num_tokens // page_size)


def naive_build_page_meta(k: torch.Tensor, lens: torch.Tensor, page_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Elementwise min / max of the valid keys of every page.

    Args:
        k: `[B, Hkv, S, D]` keys (post-RoPE).
        lens: `[B]` int, valid tokens per sample.
        page_size: tokens per page.

    Returns:
        `(page_min, page_max)`, each `[B, Hkv, P, D]` in k's dtype; a page without valid tokens holds (+inf, -inf),
        a partial page is summarised from its valid tokens only.
    """
    batch, num_kv_heads, seq_len, head_dim = k.shape
    pages = num_pages(seq_len, page_size)
    pad = pages * page_size - seq_len
    valid = torch.arange(pages * page_size, device=k.device) < lens[:, None]  # [B, P * page_size]
    valid = valid.view(batch, 1, pages, page_size, 1)
    padded = torch.nn.functional.pad(k, (0, 0, 0, pad)).view(batch, num_kv_heads, pages, page_size, head_dim)
    page_min = torch.where(valid, padded, float("inf")).amin(dim=3)
    page_max = torch.where(valid, padded, float("-inf")).amax(dim=3)
    return page_min, page_max


def naive_update_page_meta(
    page_min: torch.Tensor, page_max: torch.Tensor, k_new: torch.Tensor, positions: torch.Tensor, page_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold one appended key per sample into its page's min / max, in place.

    Args:
        page_min, page_max: `[B, Hkv, P, D]`, updated in place.
        k_new: `[B, Hkv, D]` the key written at token position `positions[b]`.
        positions: `[B]` int, token position of the new key (page `positions // page_size` must be `< P`).
        page_size: tokens per page.

    Returns:
        `(page_min, page_max)` (the same tensors).
    """
    page = positions.long() // page_size  # [B]
    if bool((page >= page_min.shape[2]).any()) or bool((positions < 0).any()):
        raise ValueError(
            f"positions {positions.tolist()} fall outside the {page_min.shape[2]} pages of the metadata "
            f"(page_size={page_size}); grow the metadata first"
        )
    rows = torch.arange(page_min.shape[0], device=page_min.device)
    current_min = page_min[rows, :, page]  # [B, Hkv, D]
    current_max = page_max[rows, :, page]
    page_min[rows, :, page] = torch.minimum(current_min, k_new.to(page_min.dtype))
    page_max[rows, :, page] = torch.maximum(current_max, k_new.to(page_max.dtype))
    return page_min, page_max


def naive_append_token(
    keys: torch.Tensor,
    values: torch.Tensor,
    page_min: torch.Tensor,
    page_max: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    lens: torch.Tensor,
    page_size: int,
) -> None:
    """One decode step's cache append, in place: write `k_new, v_new [B, Hkv, D]` at position `lens[b]` of
    `keys, values [B, Hkv, S, D]`, fold the key into its page's min / max (`[B, Hkv, P, D]`), then `lens += 1`.

    The caller grows the buffers first (`lens[b] < S` and `lens[b] // page_size < P`).
    """
    if bool((lens >= keys.shape[2]).any()):
        raise ValueError(f"lens {lens.tolist()} leave no free slot in a cache of {keys.shape[2]} positions; grow it "
                         f"first")
    rows = torch.arange(keys.shape[0], device=keys.device)
    slot = lens.long()
    keys[rows, :, slot] = k_new.to(keys.dtype)
    values[rows, :, slot] = v_new.to(values.dtype)
    naive_update_page_meta(page_min, page_max, k_new, slot, page_size)
    lens += 1


def naive_selection_reads(page_index: torch.Tensor, lens: torch.Tensor,
                          page_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """What a page selection reads: valid tokens per selection head and the resulting sparsity.

    Args:
        page_index: `[B, Hsel, n]` selected page ids, -1 for an unused slot.
        lens: `[B]` int, tokens in the cache including the current one.

    Returns:
        `(head_tokens [B, Hsel] int32, head_sparsity [B, Hsel] fp32 = 1 - head_tokens / lens)`.
    """
    start = page_index.long() * page_size
    per_page = (lens.long()[:, None, None] - start).clamp(0, page_size)
    head_tokens = torch.where(page_index >= 0, per_page, 0).sum(dim=-1)  # [B, Hsel]
    head_sparsity = 1.0 - head_tokens.float() / lens.float()[:, None]
    return head_tokens.to(torch.int32), head_sparsity


def current_page(lens: torch.Tensor, page_size: int) -> torch.Tensor:
    """`[B]` int64 id of the page holding the token being decoded (position `lens - 1`)."""
    return (lens.long() - 1) // page_size


def naive_quest_page_scores(
    q: torch.Tensor,
    page_min: torch.Tensor,
    page_max: torch.Tensor,
    lens: torch.Tensor,
    page_size: int,
    share_pages: bool,
) -> torch.Tensor:
    """Upper bound of `q . k` over each past page: `sum_d max(q_d * min_d, q_d * max_d)`.

    Args:
        q: `[B, Hq, D]`.
        page_min, page_max: `[B, Hkv, P, D]`.
        lens: `[B]` int, tokens in the cache including the current one.
        page_size: tokens per page.
        share_pages: sum the bounds over the `G = Hq // Hkv` query heads of each KV group (one ranking per KV head).

    Returns:
        `[B, Hsel, P]` fp32, `Hsel = Hkv` if share_pages else `Hq`. Only the past pages `0 .. cur - 1` are
        candidates (`cur = (lens - 1) // page_size`); the current page, future and empty pages score -inf.
    """
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads, pages = page_min.shape[1], page_min.shape[2]
    group = num_q_heads // num_kv_heads
    q32 = q.float().view(batch, num_kv_heads, group, 1, head_dim)
    low = page_min.float()[:, :, None]  # [B, Hkv, 1, P, D]
    high = page_max.float()[:, :, None]
    candidate = torch.arange(pages, device=q.device) < current_page(lens, page_size)[:, None]  # [B, P]
    # Non-candidate pages may hold (+inf, -inf); zero them so no inf * 0 = NaN appears before masking.
    keep = candidate[:, None, None, :, None]
    low = torch.where(keep, low, 0.0)
    high = torch.where(keep, high, 0.0)
    bound = torch.maximum(q32 * low, q32 * high).sum(dim=-1)  # [B, Hkv, G, P]
    bound = bound.sum(dim=2) if share_pages else bound.reshape(batch, num_q_heads, pages)
    return bound.masked_fill(~candidate[:, None, :], float("-inf"))


def naive_quest_select_pages(
    scores: torch.Tensor, lens: torch.Tensor, page_size: int, page_budget: int, return_reads: bool = False
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The `page_budget` best past pages plus the current page, per selection head.

    Args:
        scores: `[B, Hsel, P]` from `naive_quest_page_scores` (-inf for non-candidates).
        lens: `[B]` int, tokens in the cache including the current one.
        page_size: tokens per page.
        page_budget: past pages selected per step (`token_budget // page_size`).

    Returns:
        `page_index [B, Hsel, n]` int32, `n = min(page_budget + 1, P)`, sorted ascending, unused slots -1 at the end.
        Ties go to the lower page id. When `cur <= page_budget` every past page is selected (no crash on short
        contexts: the step is dense). With return_reads, `(page_index, *naive_selection_reads(page_index, ...))`.
    """
    batch, num_sel_heads, pages = scores.shape
    n_past = min(page_budget, pages - 1)
    cur = current_page(lens, page_size)  # [B]
    if bool((cur >= pages).any()):
        raise ValueError(f"lens {lens.tolist()} exceed the {pages} pages of the metadata (page_size={page_size})")
    # A stable descending sort puts equal scores in ascending page order, so ties are deterministic.
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :n_past]  # [B, Hsel, n_past]
    n_candidates = torch.clamp(cur, max=n_past)  # [B] past pages actually available
    slot = torch.arange(n_past, device=scores.device)
    past = torch.where(slot < n_candidates[:, None, None], order, -1)
    current = cur.view(batch, 1, 1).expand(batch, num_sel_heads, 1)
    selected = torch.cat([past, current], dim=-1)
    # Sort ascending with the -1 padding pushed to the end.
    sentinel = torch.where(selected < 0, pages, selected)
    selected = torch.sort(sentinel, dim=-1).values
    page_index = torch.where(selected == pages, -1, selected).to(torch.int32)
    return (page_index, *naive_selection_reads(page_index, lens, page_size)) if return_reads else page_index


def selected_token_mask(page_index: torch.Tensor, lens: torch.Tensor, page_size: int, seq_len: int) -> torch.Tensor:
    """`[B, Hsel, S]` bool: token positions that lie in a selected page and are valid (`< lens`)."""
    batch, num_sel_heads, _ = page_index.shape
    pages = num_pages(seq_len, page_size)
    page_hit = torch.zeros(batch, num_sel_heads, pages + 1, dtype=torch.bool, device=page_index.device)
    slots = torch.where(page_index < 0, pages, page_index.long())  # -1 -> dummy column `pages`
    page_hit.scatter_(-1, slots, True)
    token_hit = page_hit[..., :pages].repeat_interleave(page_size, dim=-1)[..., :seq_len]
    valid = torch.arange(seq_len, device=page_index.device) < lens[:, None]  # [B, S]
    return token_hit & valid[:, None, :]


def naive_quest_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lens: torch.Tensor,
    page_index: torch.Tensor,
    page_size: int,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    return_lse: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One decode step attending only to the valid tokens of the selected pages (mask-materialising reference).

    Args:
        q: `[B, Hq, D]`.
        k, v: `[B, Hkv, S, D]` full cache, valid tokens at `0 .. lens[b] - 1` (others never read).
        lens: `[B]` int, tokens in the cache including the current one.
        page_index: `[B, Hsel, n]` int, `Hsel = Hkv` (one selection per KV head, shared by its query heads) or
            `Hq` (per query head); -1 marks unused slots.
        page_size: tokens per page.
        scale: softmax scale. Default: `D ** -0.5`.
        out: optional `[B, Hq, D]` output written in place.
        return_lse: also return the log-sum-exp of the scaled scores, `[B, Hq]` fp32.

    Returns:
        `out [B, Hq, D]` in q's dtype (and `lse [B, Hq]` fp32 when `return_lse`).
    """
    batch, num_q_heads, head_dim = q.shape
    num_kv_heads, seq_len = k.shape[1], k.shape[2]
    group = num_q_heads // num_kv_heads
    if page_index.shape[1] not in (num_kv_heads, num_q_heads):
        raise ValueError(f"page_index has {page_index.shape[1]} heads; expected Hkv={num_kv_heads} or Hq={num_q_heads}")
    scale = head_dim**-0.5 if scale is None else scale

    mask = selected_token_mask(page_index, lens, page_size, seq_len)  # [B, Hsel, S]
    if page_index.shape[1] == num_kv_heads:
        mask = mask[:, :, None, :].expand(batch, num_kv_heads, group, seq_len)
    else:
        mask = mask.view(batch, num_kv_heads, group, seq_len)
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("every query head must read at least one valid token (is the current page selected?)")

    return masked_gqa_decode(q, k, v, mask, scale, out, return_lse)


# -- Quest over a paged (vLLM) KV cache ------------------------------------------------------------------------------
# Paged layout: `key_cache, value_cache [num_blocks, block_size, Hkv, D]` (any strides); token position `p` of request
# `b` lives at `(block_tables[b, p // block_size], p % block_size)`. Page metadata is kept per physical page:
# `page_min, page_max [num_blocks * block_size / page_size, Hkv, D]`, global page id = flat slot // page_size
# (slot = block * block_size + offset), so a page never straddles two blocks (page_size divides block_size).


def naive_paged_update_page_meta(
    page_min: torch.Tensor, page_max: torch.Tensor, key: torch.Tensor, slot_mapping: torch.Tensor, page_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fold keys written to the paged cache into their pages' min / max, in place.

    Args:
        page_min, page_max: `[num_pages_total, Hkv, D]` per physical page, updated in place.
        key: `[N', Hkv, D]` keys of this step (N' >= N: vLLM may pad the token axis).
        slot_mapping: `[N]` int flat cache slot of each token; < 0 marks padding (skipped).
        page_size: tokens per page.

    A token at the first slot of its page (`slot % page_size == 0`) resets the page (a freed block being reused)
    before the step's keys are folded in.

    Returns:
        `(page_min, page_max)` (the same tensors).
    """
    count = min(slot_mapping.shape[0], key.shape[0])
    slots = slot_mapping[:count].long()
    keep = slots >= 0
    slots, key = slots[keep], key[:count][keep].to(page_min.dtype)
    if slots.numel() == 0:
        return page_min, page_max
    page = slots // page_size
    fresh = page[(slots % page_size) == 0]
    page_min[fresh] = float("inf")
    page_max[fresh] = float("-inf")
    index = page.view(-1, 1, 1).expand_as(key)
    page_min.scatter_reduce_(0, index, key, "amin", include_self=True)
    page_max.scatter_reduce_(0, index, key, "amax", include_self=True)
    return page_min, page_max


def paged_physical_pages(block_tables: torch.Tensor, num_pages_: int, page_size: int, block_size: int) -> torch.Tensor:
    """`[B, num_pages_]` int64 global page ids of logical pages `0 .. num_pages_ - 1` of each request (columns past a
    request's blocks read the last column of its table: never used as candidates)."""
    pages_per_block = block_size // page_size
    logical = torch.arange(num_pages_, device=block_tables.device)
    column = (logical // pages_per_block).clamp(max=block_tables.shape[1] - 1)
    blocks = block_tables.long()[:, column]  # [B, P]
    return blocks * pages_per_block + logical % pages_per_block


def paged_gather(cache: torch.Tensor, block_tables: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Contiguous copy `[B, Hkv, seq_len, D]` of positions `0 .. seq_len - 1` of each request of a paged cache
    `[num_blocks, block_size, Hkv, D]` (positions past a request's length hold whatever its table points at)."""
    block_size = cache.shape[1]
    positions = torch.arange(seq_len, device=cache.device)
    column = (positions // block_size).clamp(max=block_tables.shape[1] - 1)
    blocks = block_tables.long()[:, column]  # [B, S]
    return cache[blocks, positions % block_size].transpose(1, 2)  # [B, S, Hkv, D] -> [B, Hkv, S, D]


def naive_paged_page_scores(
    q: torch.Tensor,
    page_min: torch.Tensor,
    page_max: torch.Tensor,
    block_tables: torch.Tensor,
    lens: torch.Tensor,
    page_size: int,
    block_size: int,
    num_pages_: int,
    share_pages: bool,
) -> torch.Tensor:
    """Quest page scores read through the block table: gather each request's page metadata, then
    `naive_quest_page_scores`.

    Args:
        q: `[B, Hq, D]`; page_min, page_max: `[num_pages_total, Hkv, D]` per physical page;
        block_tables: `[B, max_blocks]` int; lens: `[B]` tokens including the current one;
        num_pages_: logical pages scored per request (>= ceil(max(lens) / page_size)).

    Returns:
        `[B, Hsel, num_pages_]` fp32 (Hsel = Hkv if share_pages else Hq), -inf for non-candidates.
    """
    flat = paged_physical_pages(block_tables, num_pages_, page_size, block_size)  # [B, P]
    gathered_min = page_min[flat].transpose(1, 2)  # [B, Hkv, P, D]
    gathered_max = page_max[flat].transpose(1, 2)
    return naive_quest_page_scores(q, gathered_min, gathered_max, lens, page_size, share_pages)


def naive_paged_quest_decode(
    q: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    lens: torch.Tensor,
    page_index: torch.Tensor,
    page_size: int,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Quest decode over a paged cache: gather the requests' tokens contiguously, then `naive_quest_decode`.

    Args:
        q: `[B, Hq, D]`; key_cache, value_cache: `[num_blocks, block_size, Hkv, D]`;
        block_tables: `[B, max_blocks]` int; lens: `[B]`; page_index: `[B, Hsel, n]` int (-1 = unused slot).

    Returns:
        `out [B, Hq, D]` in q's dtype.
    """
    seq_len = int(lens.max())
    k = paged_gather(key_cache, block_tables, seq_len)
    v = paged_gather(value_cache, block_tables, seq_len)
    return naive_quest_decode(q, k, v, lens, page_index, page_size, scale=scale, out=out)
