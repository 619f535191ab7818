"""Dense causal attention: the baseline every sparse method is measured against.

`Dense.prefill` runs causal attention per sample with torch SDPA (GQA through `enable_gqa`, K/V never repeated);
its selection keeps every causal pair, so the reported sparsity is 0.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from ..config import MethodConfig
from ..kernels.dense import dense_attention
from ..kernels._varlen import HostLengths
from ._prefill import DenseSelection, PrefillResult, check_inputs, dense_causal_attention


@dataclass
class Dense(MethodConfig):
    """Dense causal attention (no parameters). Achieved sparsity is 0 by definition."""

    name = "dense"
    phase = "dense"
    paper = "Vaswani et al. 2017, Attention Is All You Need (arXiv:1706.03762)"

    def select(self, q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor,
               scale: Optional[float] = None, backend: str = "auto",
               seq_lens: Optional[HostLengths] = None) -> DenseSelection:
        """Every causal pair of every sample and query head (q `[N, Hq, D]`, k `[N, Hkv, D]`, cu_seqlens `[B+1]`).

        seq_lens: optional host lengths matching cu_seqlens (`check_inputs`): cu_seqlens is then not read back.
        """
        check_inputs(q, k, cu_seqlens, seq_lens=seq_lens)
        return DenseSelection(cu_seqlens, q.shape[1])

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                scale: Optional[float] = None, backend: str = "auto",
                seq_lens: Optional[HostLengths] = None) -> PrefillResult:
        """Causal attention per sample with torch SDPA: `out [N, Hq, D]` in q's dtype, sparsity `[B, Hq]` zeros.

        backend: "naive" computes SDPA in fp32 (the reference); "auto" / "triton" use `sparse_attn.kernels.dense`
        (on CUDA: SDPA with cuDNN first, then FlashAttention, in the input dtype; on CPU: fp32).
        seq_lens: optional host lengths matching cu_seqlens: the sample bounds come from them, no device read.
        """
        if backend not in ("auto", "naive", "triton"):
            raise ValueError(f"backend must be 'auto', 'naive' or 'triton', got {backend!r}")
        selection = self.select(q, k, cu_seqlens, seq_lens=seq_lens)
        if backend == "naive":
            out = dense_causal_attention(q, k, v, cu_seqlens, scale=scale, upcast=True, seq_lens=seq_lens)
        else:
            out = dense_attention(q, k, v, cu_seqlens, scale=scale, seq_lens=seq_lens)
        return PrefillResult(out=out, sparsity=selection.sparsity(), selection=selection)
