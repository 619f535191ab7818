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
from ..kernels._dispatch import resolve_backend
from ..kernels._varlen import HostLengths
from ..kernels.block_sparse import block_sparse_attention, block_sparse_pair_counts
from ..kernels.estimation import stable_topk
from ..kernels.estimation.pooling import pooled_block_means
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
    SCORE_ELEMENTS_PER_STEP = 1 << 25  # fp32 scores per selection step (128 MiB, + 256 MiB of top-k keys)
    paper = "MInference 1.0, Jiang et al. 2024 (arXiv:2407.02490)"

    def validate(self) -> None:
        self._require_int("chunk_size", 8)
        if self.chunk_size & (self.chunk_size - 1):
            raise ConfigError(f"block_sparse.chunk_size={self.chunk_size} must be a power of two (8, 16, 32, 64...)")
        self._require_int("top_chunks", 3, "the sink, diagonal and sub-diagonal blocks are always kept")

    def select(self, q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, scale: Optional[float] = None,
               backend: str = "auto", seq_lens: Optional[HostLengths] = None) -> BlockSparseSelection:
        """Top key blocks per query block (scale is unused: block scores are unscaled, as in the reference).

        q `[N, Hq, D]`, k `[N, Hkv, D]` varlen packed, cu_seqlens `[B+1]` int32. The block scores are computed
        `rows_per_step` query blocks at a time (only their causal key blocks), so memory stays bounded by
        `SCORE_ELEMENTS_PER_STEP` whatever the length: a full `[nb, nb]` score matrix per head would take 256 MiB
        per head at 128K tokens and 16-token blocks. Pooling and the fp32 score matmul are torch; the rules and the
        top-k are torch (`stable_topk`) or, on the Triton backend, `triton_block_topk` (one program per row; the same
        indices entry for entry).
        seq_lens: optional host lengths `[B]` matching cu_seqlens (`check_inputs`): the checks and the pooling
        then never read cu_seqlens back.
        """
        lens = check_inputs(q, k, cu_seqlens, seq_lens=seq_lens)
        # Triton backend: one program per row applies the rules and selects (kernels/block_sparse/select_triton.py)
        on_triton = resolve_backend(backend, q) == "triton"
        if on_triton:
            from ..kernels.block_sparse.select_triton import MAX_ROW, triton_block_topk
        chunk, num_q_heads, num_kv_heads = self.chunk_size, q.shape[1], k.shape[1]
        batch, group = len(lens), num_q_heads // num_kv_heads
        q_pool = pooled_block_means(q, cu_seqlens, chunk, seq_lens=lens)  # [B, nb, Hq, D]
        k_pool = pooled_block_means(k, cu_seqlens, chunk, seq_lens=lens)  # [B, nb, Hkv, D]
        num_blocks = q_pool.shape[1]
        q_pool = q_pool.view(batch, num_blocks, num_kv_heads, group, -1).permute(0, 2, 3, 1, 4)  # [B,Hkv,G,nb,D]
        # [B, Hkv, D, nb], contiguous: a step's [.., :stop] slice is a strided matrix cuBLAS reads in place (a
        # broadcast [B, Hkv, 1, D, nb] operand was expanded to the G query heads: a 134 MB copy per step at 128K)
        k_pool = k_pool.permute(0, 2, 3, 1).contiguous()
        blocks = torch.arange(num_blocks, device=q.device)
        blocks_per_sample = -(-sample_lengths(cu_seqlens).to(q.device) // chunk)  # [B]
        count = torch.minimum(blocks + 1, torch.tensor(self.top_chunks, device=q.device))  # [nb]
        count = torch.where(blocks[None, :] < blocks_per_sample[:, None], count[None, :], 0)  # [B, nb]
        width = min(num_blocks, self.top_chunks)
        block_index = torch.full((batch, num_q_heads, num_blocks, width), -1, dtype=torch.int32, device=q.device)
        rows_per_step = max(1, self.SCORE_ELEMENTS_PER_STEP // max(1, batch * num_q_heads * num_blocks))
        for start in range(0, num_blocks, rows_per_step):
            stop = min(start + rows_per_step, num_blocks)  # query blocks [start, stop) see key blocks [0, stop)
            q_rows = q_pool[..., start:stop, :].reshape(batch, num_kv_heads, group * (stop - start), -1)
            scores = torch.matmul(q_rows, k_pool[..., :stop])  # [B, Hkv, G * rows, stop]
            scores = scores.view(batch, num_q_heads, stop - start, stop)
            if on_triton and stop <= MAX_ROW:
                triton_block_topk(scores, start, self.top_chunks, blocks_per_sample, block_index)
                continue
            qblock, kblock = blocks[start:stop, None], blocks[None, :stop]
            forced = (kblock == qblock) | (kblock == qblock - 1) | (kblock == 0)
            scores = scores.masked_fill_(forced, float("inf")).masked_fill_(kblock > qblock, float("-inf"))
            rows_count = count[:, None, start:stop].expand(-1, num_q_heads, -1)
            # the widest of these rows, known from the shapes: the longest sample (num_blocks blocks) has query
            # block stop - 1, which keeps min(stop, top_chunks); so the top-k reads no count back from the device
            chosen = stable_topk(scores, rows_count, kmax=min(stop, self.top_chunks))
            block_index[:, :, start:stop, :chosen.shape[-1]] = chosen
        count = count[:, None, :].expand(-1, num_q_heads, -1)
        return BlockSparseSelection(cu_seqlens, chunk, block_index, count.to(torch.int32).contiguous())

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                scale: Optional[float] = None, backend: str = "auto",
                seq_lens: Optional[HostLengths] = None) -> PrefillResult:
        """Sparse causal prefill: `select`, then block-sparse attention. `out [N, Hq, D]` in q's dtype.

        seq_lens: optional host lengths `[B]` matching cu_seqlens: no length is read back from the device.
        """
        lens = check_inputs(q, k, cu_seqlens, v, seq_lens=seq_lens)
        selection = self.select(q, k, cu_seqlens, backend=backend, seq_lens=lens)
        out = block_sparse_attention(q, k, v, cu_seqlens, selection.block_index, selection.block_count,
                                     self.chunk_size, scale=scale, backend=backend, max_seqlen=max(lens))
        return PrefillResult(out=out, sparsity=selection.sparsity(), selection=selection)
