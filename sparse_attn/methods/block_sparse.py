"""Block-Sparse prefill: each query block keeps its top-k key blocks by mean-pooled q.k.

Based on the block-sparse attention of MInference 1.0 (Jiang et al. 2024, arXiv:2407.02490) as the Sparse
Frontier study runs it.
"""
from dataclasses import dataclass

from ..config import ConfigError, MethodConfig


@dataclass
class BlockSparse(MethodConfig):
    """Per query head and query block of `chunk_size` tokens, attend to the `top_chunks` best key blocks.

    Block score = dot(mean query of the block, mean key of the block) (no scaling, no softmax). The sink block 0,
    the diagonal block and the block left of it are always kept.

    Parameters
    ----------
    chunk_size: tokens per block (>= 8, a power of two). Default: 16.
    top_chunks: key blocks kept per query block (>= 3: sink, diagonal and sub-diagonal). Default: 64.
    """

    chunk_size: int = 16
    top_chunks: int = 64

    name = "block_sparse"
    phase = "prefill"
    paper = "MInference 1.0, Jiang et al. 2024 (arXiv:2407.02490)"

    def validate(self) -> None:
        self._require_int("chunk_size", 8)
        if self.chunk_size & (self.chunk_size - 1):
            raise ConfigError(f"block_sparse.chunk_size={self.chunk_size} must be a power of two (8, 16, 32, 64...)")
        self._require_int("top_chunks", 3, "the sink, diagonal and sub-diagonal blocks are always kept")
