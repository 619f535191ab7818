"""Dense causal prefill attention on the varlen packed layout: the baseline every sparse method is measured against.

On CUDA it calls PyTorch SDPA per sample with the cuDNN backend first and FlashAttention second (cuDNN is the
fastest dense kernel on H100 with torch 2.11: 550-634 TFLOP/s, see benchmarks/RESULTS.md), GQA native
(`enable_gqa`, K/V never repeated), on strided views of the packed tensors (no input copies). On CPU it uses SDPA's
math path per sample, in fp32.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ._varlen import check_varlen

GPU_BACKENDS = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION]


def _gpu_backends():
    """Context manager preferring cuDNN, then Flash (never the slow math / efficient paths on the GPU)."""
    try:
        return sdpa_kernel(GPU_BACKENDS, set_priority=True)
    except TypeError:  # torch without set_priority: the listed backends, in torch's own order
        return sdpa_kernel(GPU_BACKENDS)


def dense_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    seq_lens: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Causal attention within each sample of a packed batch.

    Args:
        q: [N, Hq, D]; k, v: [N, Hkv, D] (query head h reads KV head h // (Hq // Hkv)); cu_seqlens [B+1] int32.
        scale: softmax scale. Default D ** -0.5.
        out: optional [N, Hq, D] written in place.
        seq_lens: optional host lengths `[L_0, ..., L_{B-1}]` matching cu_seqlens (see `check_varlen`): then
            cu_seqlens is never read back (no device sync before the SDPA launches).
    Returns:
        out [N, Hq, D] in q's dtype.
    """
    if seq_lens is None and cu_seqlens.numel() == 2 and q.shape[0] == k.shape[0] == v.shape[0]:
        lens = [q.shape[0]]  # one sample spans all N rows: no device sync to read cu_seqlens
    else:
        lens = check_varlen(q, k, cu_seqlens, v, seq_lens=seq_lens)
    single = out is None and len(lens) == 1
    if out is None and not single:
        out = torch.empty_like(q)
    starts = [0]
    for length in lens:
        starts.append(starts[-1] + length)
    for start, end in zip(starts[:-1], starts[1:]):
        # [L, H, D] -> [1, H, L, D] views: the BSHD memory layout the fused kernels read natively.
        q_b, k_b, v_b = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        if q.is_cuda:
            with _gpu_backends():
                o = F.scaled_dot_product_attention(q_b, k_b, v_b, is_causal=True, scale=scale, enable_gqa=True)
        else:
            o = F.scaled_dot_product_attention(q_b.float(), k_b.float(), v_b.float(), is_causal=True, scale=scale,
                                               enable_gqa=True)
        if single:
            # One sample and no `out`: hand back SDPA's own buffer (already [L, H, D]-contiguous on the GPU).
            return o[0].transpose(0, 1).to(q.dtype).contiguous()
        out[start:end].copy_(o[0].transpose(0, 1))
    return out
