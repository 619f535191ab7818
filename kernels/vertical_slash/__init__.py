"""Vertical-Slash (MInference) index building and mixed block + column prefill attention.

`naive_*` are the PyTorch references; the dispatchers without prefix take `backend="auto" | "naive" | "triton"`
("auto": the Triton kernel for CUDA tensors, the reference for CPU tensors; a CUDA tensor without Triton raises).
`vertical_slash_pair_counts` counts the computed pairs (sparsity statistic). The index is as wide as its widest row
(`index_widths` bounds it; the Triton builder given a host `max_len` may size it to those bounds instead, to skip
its counting pass and the read-back) and both builders raise before allocating one that does not fit in free GPU memory
(`check_index_fits`). Slots past a row's count are -1 from the reference builder and unwritten by the Triton one
(`canonical_index` gives the -1 form of either).
"""
from typing import Optional, Tuple

import torch

from .._dispatch import triton_module_for
from .naive import (
    BLOCK,
    canonical_index,
    check_index_fits,
    index_widths,
    naive_build_vertical_slash_index,
    naive_vertical_slash_attention,
    vertical_slash_pair_counts,
)

__all__ = [
    "BLOCK", "build_vertical_slash_index", "vertical_slash_attention", "vertical_slash_pair_counts",
    "naive_build_vertical_slash_index", "naive_vertical_slash_attention", "check_index_fits", "index_widths",
    "canonical_index",
]


def _triton_module(tensor: torch.Tensor, backend: str):
    """The Triton module to use, or None for the reference."""
    return triton_module_for(__name__, "the Triton vertical-slash kernels are", tensor, backend)


def build_vertical_slash_index(
    cu_seqlens: torch.Tensor, vertical_idx: torch.Tensor, vertical_count: torch.Tensor,
    slash_offsets: torch.Tensor, slash_count: torch.Tensor, backend: str = "auto", max_len: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dispatch `naive_build_vertical_slash_index` / `triton_build_vertical_slash_index` (see the naive docstring).

    max_len: the longest sample's length when known on the host: the Triton builder then reads nothing back from
    the device (its index may be wider than the widest row, up to `index_widths`; see its docstring).
    """
    module = _triton_module(vertical_idx, backend)
    if module is None:
        return naive_build_vertical_slash_index(cu_seqlens, vertical_idx, vertical_count, slash_offsets, slash_count)
    return module.triton_build_vertical_slash_index(cu_seqlens, vertical_idx, vertical_count, slash_offsets,
                                                    slash_count, max_len=max_len)


def vertical_slash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
    block_count: torch.Tensor, block_offset: torch.Tensor, column_count: torch.Tensor, column_index: torch.Tensor,
    scale: Optional[float] = None, out: Optional[torch.Tensor] = None, backend: str = "auto",
    max_len: Optional[int] = None,
) -> torch.Tensor:
    """Dispatch `naive_vertical_slash_attention` / `triton_vertical_slash_attention` (see the naive docstring).

    max_len: the longest sample's length when known on the host (saves the Triton path a device-to-host read).
    """
    module = _triton_module(q, backend)
    if module is None:
        return naive_vertical_slash_attention(q, k, v, cu_seqlens, block_count, block_offset, column_count,
                                              column_index, scale, out)
    return module.triton_vertical_slash_attention(q, k, v, cu_seqlens, block_count, block_offset, column_count,
                                                  column_index, scale, out, max_seqlen_hint=max_len)
