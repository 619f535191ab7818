"""Block-sparse causal prefill attention (Block-Sparse method).

`naive_block_sparse_attention` is the PyTorch reference; `block_sparse_attention(..., backend=...)` dispatches
("auto": the Triton kernel for CUDA tensors, the reference for CPU tensors; a CUDA tensor without Triton raises). `block_sparse_pair_counts`
counts the computed pairs (sparsity statistic).
"""
from typing import Optional

import torch

from .naive import block_sparse_pair_counts, naive_block_sparse_attention

__all__ = ["block_sparse_attention", "naive_block_sparse_attention", "block_sparse_pair_counts"]


def block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
    block_index: torch.Tensor, block_count: torch.Tensor, chunk_size: int,
    scale: Optional[float] = None, out: Optional[torch.Tensor] = None, backend: str = "auto",
) -> torch.Tensor:
    """Dispatch to `naive_block_sparse_attention` or `triton_block_sparse_attention` (same signature)."""
    if backend not in ("auto", "naive", "triton"):
        raise ValueError(f"backend must be 'auto', 'naive' or 'triton', got {backend!r}")
    if backend == "naive" or (backend == "auto" and not q.is_cuda):
        return naive_block_sparse_attention(q, k, v, cu_seqlens, block_index, block_count, chunk_size, scale, out)
    try:
        from .triton import triton_block_sparse_attention
    except ImportError as error:  # CUDA tensors never fall back to the slow reference silently
        raise ImportError(
            f"the Triton block-sparse kernel is unavailable ({error}); install Triton (pip install "
            f"'sparse-attn[triton]') or pass backend='naive' to run the PyTorch reference on purpose"
        ) from error
    return triton_block_sparse_attention(q, k, v, cu_seqlens, block_index, block_count, chunk_size, scale, out)
