"""Block-Sparse prefill: each query block keeps its top-k key blocks by mean-pooled q.k.

Based on the block-sparse attention of MInference 1.0 (Jiang et al. 2024, arXiv:2407.02490) as the Sparse
Frontier study runs it.

Per sample and query head (L = sample length, nb = ceil(L / chunk_size) blocks):
1. block score = dot(mean query of block m, mean key of block n) (no scaling, no softmax; fp32);
2. the diagonal block m, the sub-diagonal block m - 1 and the sink block 0 are forced (+inf); key blocks right of
   the query block are never candidates (block-causal);
3. query block m keeps its top `min(m + 1, top_chunks)` key blocks, sorted ascending;
4. block-sparse attention with the causal mask inside the diagonal block.

Differences from the reference system (deliberate, documented):
- sparsity is measured exactly from the selected blocks (causal pairs computed / (L (L + 1) / 2)), not the
  analytic `tc (tc + 1) / 2 + (nb - tc) tc` formula over whole blocks (its section 6, item 7);
- the reference padded with a full extra block when L was a multiple of chunk_size and let zero padding into the
  last block's mean; neither changes any selection (the extra block only raised k beyond the m + 1 candidates, and
  zero padding scales the last block's scores by one positive factor), so we pad only to ceil(L / chunk_size)
  blocks and keep `min(m + 1, top_chunks)` directly;
- scores in fp32, ties go to the lower block id; batches (B >= 1, varlen) and GQA without repeats.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from ..config import ConfigError, MethodConfig
from ..kernels.block_sparse import block_sparse_attention, block_sparse_pair_counts
from ..kernels.estimation import pooled_block_scores, stable_topk
from ._prefill import PrefillResult, check_inputs, sample_lengths, sparsity_from_pairs


@dataclass
class BlockSparseSelection:
    """Selected key blocks of every query block, sample and query head (docs/architecture.md "Block index").

    block_index `[B, Hq, n_qblocks, max_k]` int32 key-block ids sorted ascending, -1 padded;
    block_count `[B, Hq, n_qblocks]` int32; blocks are `chunk_size` tokens for rows and columns.
    """

    cu_seqlens: torch.Tensor
    chunk_size: int
    block_index: torch.Tensor
    block_count: torch.Tensor

    def pair_counts(self) -> torch.Tensor:
        """`[B, Hq]` int64: causal (q, k) pairs the selection computes (exact)."""
        return block_sparse_pair_counts(self.cu_seqlens, self.block_index, self.block_count, self.chunk_size)

    def sparsity(self) -> torch.Tensor:
        """`[B, Hq]` float32: `1 - computed causal pairs / (L (L + 1) / 2)`."""
        return sparsity_from_pairs(self.pair_counts(), self.cu_seqlens).float()


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

    def select(self, q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, scale: Optional[float] = None,
               backend: str = "auto") -> BlockSparseSelection:
        """Top key blocks per query block (scale is unused: block scores are unscaled, as in the reference).

        q `[N, Hq, D]`, k `[N, Hkv, D]` varlen packed, cu_seqlens `[B+1]` int32.
        """
        lens = check_inputs(q, k, cu_seqlens)
        chunk, num_q_heads, num_kv_heads = self.chunk_size, q.shape[1], k.shape[1]
        group = num_q_heads // num_kv_heads
        num_blocks = -(-max(lens) // chunk)
        blocks = torch.arange(num_blocks, device=q.device)
        qblock, kblock = blocks[:, None], blocks[None, :]
        forced = (kblock == qblock) | (kblock == qblock - 1) | (kblock == 0)
        blocks_per_sample = -(-sample_lengths(cu_seqlens).to(q.device) // chunk)  # [B]
        count = torch.minimum(blocks + 1, torch.tensor(self.top_chunks, device=q.device))  # [nq]
        count = torch.where(blocks[None, :] < blocks_per_sample[:, None], count[None, :], 0)  # [B, nq]
        count = count[:, None, :].expand(-1, group, -1)  # [B, G, nq], the same for every head
        block_index = torch.empty(len(lens), num_q_heads, num_blocks, int(count.max()), dtype=torch.int32,
                                  device=q.device)
        for kv in range(num_kv_heads):  # one GQA group at a time bounds memory to [B, G, nb, nb]
            heads = slice(kv * group, (kv + 1) * group)
            scores = pooled_block_scores(q[:, heads], k[:, kv: kv + 1], cu_seqlens, chunk, backend=backend)
            scores = scores.masked_fill_(forced, float("inf")).masked_fill_(kblock > qblock, float("-inf"))
            block_index[:, heads] = stable_topk(scores, count)
        count = count[:, :1].expand(-1, num_q_heads, -1)
        return BlockSparseSelection(cu_seqlens, chunk, block_index, count.to(torch.int32).contiguous())

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                scale: Optional[float] = None, backend: str = "auto") -> PrefillResult:
        """Sparse causal prefill: `select`, then block-sparse attention. `out [N, Hq, D]` in q's dtype."""
        check_inputs(q, k, cu_seqlens, v)
        selection = self.select(q, k, cu_seqlens, backend=backend)
        out = block_sparse_attention(q, k, v, cu_seqlens, selection.block_index, selection.block_count,
                                     self.chunk_size, scale=scale, backend=backend)
        return PrefillResult(out=out, sparsity=selection.sparsity(), selection=selection)
