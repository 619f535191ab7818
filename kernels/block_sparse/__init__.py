"""Block-sparse causal prefill attention (Block-Sparse method).

`naive_block_sparse_attention` is the PyTorch reference; `block_sparse_attention(..., backend=...)` dispatches
(backend rules in `kernels/_dispatch.py`). `block_sparse_pair_counts`
counts the computed pairs (sparsity statistic).
"""
from typing import Optional

import torch

from .._dispatch import triton_module_for
from .naive import block_sparse_pair_counts, naive_block_sparse_attention

__all__ = ["block_sparse_attention", "naive_block_sparse_attention", "block_sparse_pair_counts"]


def block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
    block_index: torch.Tensor, block_count: torch.Tensor, chunk_size: int,
    scale: Optional[float] = None, out: Optional[torch.Tensor] = None, backend: str = "auto",
    max_seqlen: Optional[int] = None,
) -> torch.Tensor:
    """Dispatch to `naive_block_sparse_attention` or `triton_block_sparse_attention` (same signature).

    max_seqlen: the longest sample's length when the caller knows it on the host; the Triton kernel then reads
    nothing back from the device (the naive reference ignores it).
    """
    module = triton_module_for(__name__, "the Triton block-sparse kernel is", q, backend)
    if module is None:
        return naive_block_sparse_attention(q, k, v, cu_seqlens, block_index, block_count, chunk_size, scale, out)
    return module.triton_block_sparse_attention(q, k, v, cu_seqlens, block_index, block_count, chunk_size, scale, out,
                                                max_seqlen=max_seqlen)
