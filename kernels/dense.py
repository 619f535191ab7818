"""Dense causal prefill attention on the varlen packed layout: the baseline every sparse method is measured against.

On CUDA it calls PyTorch SDPA per sample with the cuDNN backend first and FlashAttention second (cuDNN is the
fastest dense kernel on H100 with torch 2.11: 550-634 TFLOP/s, see benchmarks/RESULTS.md), GQA native
(`enable_gqa`, K/V never repeated), on strided views of the packed tensors. On CPU it uses SDPA's math path per
sample, in fp32.

cuDNN builds an execution plan for every new sequence length and caches it per shape: ~37 ms of host time on the
H200 (torch 2.11, cuDNN 9.19), whatever the length (benchmarks/RESULTS.md, session 13), against 0.4 ms of GPU work
at 4K and 13 ms at 32K. Evaluations and servers meet a new prompt length at almost every sample, so a sample whose
length is not a "cuDNN length" (`cudnn_length`: a multiple of 1/128 of the next power of two) is run zero-padded at
the end to that length. Causality keeps the result exact: a real query never sees a padded key (they come after it),
and the padded query rows are dropped. The padding costs a copy of q, k, v per call (H200, one layer, two runs:
1.3-5 % of the call at 16K-128K, e.g. 0.5 ms at 32K), so a length met again and again (every layer of a model, a
benchmark loop) only pads until its copies have cost about one plan build (`PAD_BYTES_PER_SHAPE`), then runs at its
own length with its own plan: the ski-rental rule, never more than twice the better choice in hindsight.
Lengths above `PAD_MAX_LENGTH` (64K) are never padded: there one plan build is under 1 % of a model's prefill (a
128K layer takes ~250 ms) while the padded copies would add ~1.6 GB to the peak memory of every layer call.
`PAD_BYTES_PER_SHAPE = 0` turns the padding off (every call at its own length, exactly SDPA's own call).
"""
from typing import Dict, Optional, Sequence

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


#: Bytes of q, k, v that padding may copy for one exact input shape before that shape runs unpadded (and builds its
#: own cuDNN plan, ~37 ms of host time). Measured on the H200 (session 13): the padding costs ~2 ms per GB copied at
#: 64K-128K, so 16 GB of copies is about one plan build.
PAD_BYTES_PER_SHAPE = 16 << 30
#: Longest sample that is padded (see the module docstring).
PAD_MAX_LENGTH = 65536
_padded_bytes: Dict[tuple, int] = {}  # exact shape key -> bytes of q, k, v copied by padding so far
_MAX_TRACKED_SHAPES = 1 << 16  # a long-running server meets ever new lengths: forget them all past this many


def cudnn_length(n: int) -> int:
    """The length a causal sample of `n` tokens runs at on cuDNN: n rounded up to a multiple of
    `max(2 ** (ceil(log2 n) - 7), 64)`: 64 distinct lengths per octave (so at most that many plans), and at
    most n / 64 padded rows (<= ~3 % more causal work); powers of two and their multiples of 1/128 stay unchanged."""
    if n < 1:
        raise ValueError(f"sequence length must be >= 1, got {n}")
    granule = max(1 << max((n - 1).bit_length() - 7, 0), 64)
    return -(-n // granule) * granule


def pad_rows(t: torch.Tensor, length: int) -> torch.Tensor:
    """`t [B, H, n, D]` -> `[B, H, length, D]` with zero rows appended, laid out `[B, length, H, D]` in memory (the
    layout SDPA's fused kernels read natively)."""
    batch, heads, n, dim = t.shape
    buf = t.new_empty(batch, length, heads, dim)
    buf[:, :n].copy_(t.transpose(1, 2))
    buf[:, n:].zero_()
    return buf.transpose(1, 2)


def padded_length(n: int, shape_key: tuple, nbytes: int) -> int:
    """The length to run a causal sample of `n` tokens at on cuDNN: `cudnn_length(n)` while the copies spent on this
    exact shape (`shape_key`; `nbytes` of q, k, v per call) stay within `PAD_BYTES_PER_SHAPE`, afterwards `n`;
    always `n` above `PAD_MAX_LENGTH`."""
    length = cudnn_length(n)
    if length == n or n > PAD_MAX_LENGTH:
        return n
    spent = _padded_bytes.get(shape_key, 0)
    if spent >= PAD_BYTES_PER_SHAPE:
        return n  # met often enough: its own plan is cheaper than more copies
    if len(_padded_bytes) >= _MAX_TRACKED_SHAPES:
        _padded_bytes.clear()
    _padded_bytes[shape_key] = spent + nbytes
    return length


def _cudnn_may_run(q: torch.Tensor) -> bool:
    """Whether SDPA would pick its cuDNN backend for this causal call (else padding only costs a copy)."""
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 128 and q.shape[-1] % 8 == 0
            and torch.backends.cuda.cudnn_sdp_enabled())


def causal_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """Causal GQA attention on the GPU, cuDNN first then Flash, at a `padded_length` (see the module docstring).

    Args:
        q: [B, Hq, n, D]; k, v: [B, Hkv, n, D] CUDA tensors (any strides), Hq a multiple of Hkv.
    Returns:
        [B, Hq, n, D] in q's dtype (a view of SDPA's output, `[B, n, Hq, D]`-contiguous).
    """
    n = q.shape[2]
    length = n
    if _cudnn_may_run(q):
        tensors = (q, k, v)
        key = (q.device, q.dtype) + tuple((tuple(t.shape), t.stride()) for t in tensors)  # what a cuDNN plan is for
        length = padded_length(n, key, sum(t.numel() * t.element_size() for t in tensors))
    if length != n:
        q, k, v = (pad_rows(t, length) for t in (q, k, v))
    with _gpu_backends():
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
    return out[:, :, :n]


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
            o = causal_sdpa(q_b, k_b, v_b, scale=scale)
        else:
            o = F.scaled_dot_product_attention(q_b.float(), k_b.float(), v_b.float(), is_causal=True, scale=scale,
                                               enable_gqa=True)
        if single:
            # One sample and no `out`: hand back SDPA's own buffer (already [L, H, D]-contiguous on the GPU).
            return o[0].transpose(0, 1).to(q.dtype).contiguous()
        out[start:end].copy_(o[0].transpose(0, 1))
    return out
