"""Quest page primitives: page min/max metadata, page scores, page selection, decode over the selected pages.

`naive_*` are the PyTorch references; the un-prefixed functions dispatch on `backend` ("auto", "naive", "triton").
"""
from typing import Optional

import torch

from .._dispatch import resolve_backend, triton_module
from .naive import (
    current_page,
    naive_append_token,
    naive_build_page_meta,
    naive_paged_page_scores,
    naive_paged_quest_decode,
    naive_paged_update_page_meta,
    naive_quest_decode,
    naive_quest_page_scores,
    naive_quest_select_pages,
    naive_selection_reads,
    naive_update_page_meta,
    num_pages,
    paged_gather,
    paged_physical_pages,
    selected_token_mask,
)

__all__ = [
    "build_page_meta",
    "update_page_meta",
    "append_token",
    "quest_page_scores",
    "quest_select_pages",
    "quest_decode",
    "naive_build_page_meta",
    "naive_update_page_meta",
    "naive_append_token",
    "naive_selection_reads",
    "naive_quest_page_scores",
    "naive_quest_select_pages",
    "naive_quest_decode",
    "paged_update_page_meta",
    "paged_page_scores",
    "paged_quest_decode",
    "naive_paged_update_page_meta",
    "naive_paged_page_scores",
    "naive_paged_quest_decode",
    "paged_gather",
    "paged_physical_pages",
    "current_page",
    "num_pages",
    "selected_token_mask",
]


def _implementation(name: str, tensor: torch.Tensor, backend: str):
    """`triton_<name>` from `triton.py` or the reference `naive_<name>` for this backend and device.

    "auto": Triton for CUDA tensors, the reference otherwise; "naive" / "triton" force one. Never falls back
    silently: a forced Triton backend without the kernel raises.
    """
    if resolve_backend(backend, tensor) == "naive":
        return globals()[f"naive_{name}"]
    # imports triton only when a kernel is used
    return getattr(triton_module(__name__, "the Triton Quest kernels are"), f"triton_{name}")


def build_page_meta(k, lens, page_size, backend: str = "auto"):
    """Page min / max of a prompt cache (see `naive_build_page_meta`).

    One PyTorch reduction on every backend: it runs once per prefill and is already a single bandwidth-bound pass,
    so it has no Triton kernel.
    """
    resolve_backend(backend, k)  # validates the name
    return naive_build_page_meta(k, lens, page_size)


def update_page_meta(page_min, page_max, k_new, positions, page_size, backend: str = "auto"):
    """Fold the key written at `positions [B]` into its page (in place; see `naive_update_page_meta`)."""
    return _implementation("update_page_meta", k_new, backend)(page_min, page_max, k_new, positions, page_size)


def append_token(keys, values, page_min, page_max, k_new, v_new, lens, page_size, backend: str = "auto"):
    """One decode step's append, in place: K/V at `lens[b]`, the key folded into its page, `lens += 1` (see
    `naive_append_token`; Triton: one launch)."""
    fn = _implementation("append_token", k_new, backend)
    return fn(keys, values, page_min, page_max, k_new, v_new, lens, page_size)


def quest_page_scores(q, page_min, page_max, lens, page_size, share_pages, backend: str = "auto"):
    """Upper-bound page scores `[B, Hsel, P]` (see `naive_quest_page_scores`)."""
    return _implementation("quest_page_scores", q, backend)(q, page_min, page_max, lens, page_size, share_pages)


def quest_select_pages(scores, lens, page_size, page_budget, return_reads: bool = False, backend: str = "auto"):
    """`page_index [B, Hsel, n]`: best past pages + the current one (see `naive_quest_select_pages`).

    return_reads: return `(page_index, head_tokens [B, Hsel] int32, head_sparsity [B, Hsel] fp32)`, what the
    selection reads (`naive_selection_reads`; the Triton kernel writes them itself, no extra launch).
    """
    fn = _implementation("quest_select_pages", scores, backend)
    return fn(scores, lens, page_size, page_budget, return_reads=return_reads)


def quest_decode(
    q, k, v, lens, page_index, page_size, scale: Optional[float] = None, out=None, return_lse: bool = False,
    backend: str = "auto",
):
    """Attention over the selected pages of the full cache (see `naive_quest_decode`)."""
    fn = _implementation("quest_decode", q, backend)
    return fn(q, k, v, lens, page_index, page_size, scale=scale, out=out, return_lse=return_lse)


# -- over a paged (vLLM) cache: metadata per physical page, K/V read through the block table (see naive.py) ---------
def paged_update_page_meta(page_min, page_max, key, slot_mapping, page_size, backend: str = "auto"):
    """Fold this step's keys `[N', Hkv, D]` at `slot_mapping [N]` into per-physical-page min / max (in place)."""
    fn = _implementation("paged_update_page_meta", key, backend)
    return fn(page_min, page_max, key, slot_mapping, page_size)


def paged_page_scores(q, page_min, page_max, block_tables, lens, page_size, block_size, num_pages_, share_pages,
                      backend: str = "auto"):
    """Quest page scores `[B, Hsel, num_pages_]` with metadata read through the block table."""
    fn = _implementation("paged_page_scores", q, backend)
    return fn(q, page_min, page_max, block_tables, lens, page_size, block_size, num_pages_, share_pages)


def paged_quest_decode(q, key_cache, value_cache, block_tables, lens, page_index, page_size,
                       scale: Optional[float] = None, out=None, backend: str = "auto"):
    """Attention over the selected pages of a paged cache `[num_blocks, block_size, Hkv, D]` (no gather on Triton)."""
    fn = _implementation("paged_quest_decode", q, backend)
    return fn(q, key_cache, value_cache, block_tables, lens, page_index, page_size, scale=scale, out=out)
