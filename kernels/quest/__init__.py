"""Quest page primitives: page min/max metadata, page scores, page selection, decode over the selected pages.

`naive_*` are the PyTorch references; the un-prefixed functions dispatch on `backend` ("auto", "naive", "triton").
"""
from typing import Optional

import torch

from .naive import (
    current_page,
    naive_build_page_meta,
    naive_quest_decode,
    naive_quest_page_scores,
    naive_quest_select_pages,
    naive_update_page_meta,
    num_pages,
    selected_token_mask,
)

__all__ = [
    "build_page_meta",
    "update_page_meta",
    "quest_page_scores",
    "quest_select_pages",
    "quest_decode",
    "naive_build_page_meta",
    "naive_update_page_meta",
    "naive_quest_page_scores",
    "naive_quest_select_pages",
    "naive_quest_decode",
    "current_page",
    "num_pages",
    "selected_token_mask",
]


def _triton_or_naive(name: str, tensor: torch.Tensor, backend: str):
    """The `triton_<name>` kernel or `naive_<name>` reference for this backend and device."""
    if backend not in ("auto", "naive", "triton"):
        raise ValueError(f"backend must be 'auto', 'naive' or 'triton', got {backend!r}")
    naive = globals()[f"naive_{name}"]
    if backend == "naive" or (backend == "auto" and not tensor.is_cuda):
        return naive
    try:
        from . import triton as triton_module
    except ImportError as error:
        if backend == "triton":
            raise ImportError(f"backend='triton' requested but the Triton Quest kernels are unavailable: {error}")
        return naive
    kernel = getattr(triton_module, f"triton_{name}", None)
    if kernel is None:
        if backend == "triton":
            raise ImportError(f"backend='triton' requested but kernels/quest/triton.py has no triton_{name}")
        return naive
    return kernel


def build_page_meta(k, lens, page_size, backend: str = "auto"):
    return _triton_or_naive("build_page_meta", k, backend)(k, lens, page_size)


def update_page_meta(page_min, page_max, k_new, positions, page_size, backend: str = "auto"):
    return _triton_or_naive("update_page_meta", k_new, backend)(page_min, page_max, k_new, positions, page_size)


def quest_page_scores(q, page_min, page_max, lens, page_size, share_pages, backend: str = "auto"):
    return _triton_or_naive("quest_page_scores", q, backend)(q, page_min, page_max, lens, page_size, share_pages)


def quest_select_pages(scores, lens, page_size, page_budget, backend: str = "auto"):
    return _triton_or_naive("quest_select_pages", scores, backend)(scores, lens, page_size, page_budget)


def quest_decode(
    q, k, v, lens, page_index, page_size, scale: Optional[float] = None, out=None, return_lse: bool = False,
    backend: str = "auto",
):
    fn = _triton_or_naive("quest_decode", q, backend)
    return fn(q, k, v, lens, page_index, page_size, scale=scale, out=out, return_lse=return_lse)
