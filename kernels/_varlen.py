"""Shared input checks for the varlen packed prefill layout (`q [N, Hq, D]`, `k, v [N, Hkv, D]`, `cu_seqlens [B+1]`).

Every prefill primitive (naive and Triton) validates its inputs here, so a wrong layout fails with the same clear
message everywhere instead of an index error deep inside a kernel.
"""
from typing import List, Optional, Sequence, Union

import torch

#: host-side sample lengths a caller may pass instead of letting `check_varlen` read `cu_seqlens` back
HostLengths = Union[Sequence[int], torch.Tensor]


def check_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    cu_seqlens: torch.Tensor,
    v: Optional[torch.Tensor] = None,
    seq_lens: Optional[HostLengths] = None,
) -> List[int]:
    """Validate the packed layout and return the per-sample lengths `[L_0, ..., L_{B-1}]` (Python ints).

    seq_lens: optional host lengths `[L_0, ..., L_{B-1}]` (Python ints or a CPU integer tensor). Given, they are
        validated on the host only (B = cu_seqlens.numel() - 1 entries, each >= 1, summing to N) and returned;
        cu_seqlens' VALUES are then never read (no `.tolist()`: reading a CUDA tensor back drains the GPU queue,
        ~0.5 ms of idle GPU per call at 128K tokens on an H200). The caller guarantees that they match cu_seqlens,
        as vLLM's host `query_start_loc` matches its device copy; a mismatch is not detected here.
        None: the lengths are read from cu_seqlens (one device -> host copy when it lives on the GPU).

    Raises `ValueError` naming the problem: wrong ranks, K/V shape mismatch, Hq not a multiple of Hkv (GQA),
    cu_seqlens not a 1-D non-decreasing integer tensor starting at 0 and ending at N, seq_lens not fitting.
    """
    if q.dim() != 3 or k.dim() != 3:
        raise ValueError(
            f"prefill expects the varlen packed layout q [N, Hq, D], k/v [N, Hkv, D]; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)} (flatten a padded [B, H, T, D] batch with its valid lengths first)"
        )
    if v is not None and v.shape != k.shape:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on token count N or head dim D")
    if q.shape[1] % k.shape[1]:
        raise ValueError(
            f"query heads ({q.shape[1]}) must be a multiple of KV heads ({k.shape[1]}) for GQA: query head h reads "
            f"KV head h // (Hq // Hkv)"
        )
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype.is_floating_point:
        raise ValueError(
            f"cu_seqlens must be a 1-D integer tensor [B+1], got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}"
        )
    if seq_lens is not None:
        return check_host_lengths(seq_lens, cu_seqlens.numel() - 1, q.shape[0])
    bounds = [int(x) for x in cu_seqlens.tolist()]
    if bounds[0] != 0 or bounds[-1] != q.shape[0]:
        raise ValueError(f"cu_seqlens must start at 0 and end at N={q.shape[0]}, got {bounds[0]} .. {bounds[-1]}")
    lens = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    if min(lens) < 1:
        raise ValueError(f"every sample needs at least one token; cu_seqlens gives lengths {lens}")
    return lens


def check_host_lengths(seq_lens: HostLengths, batch: int, num_tokens: int) -> List[int]:
    """`seq_lens` as a list of Python ints, checked on the host: `batch` entries, each >= 1, summing to `num_tokens`.

    Raises `ValueError` naming the problem (a CUDA tensor is refused: reading it back is the sync to avoid).
    """
    if isinstance(seq_lens, torch.Tensor):
        if seq_lens.device.type != "cpu":
            raise ValueError(f"seq_lens must be host lengths (a list of ints or a CPU tensor), got a tensor on "
                             f"{seq_lens.device}: pass None to read them from cu_seqlens instead")
        if seq_lens.dim() != 1 or seq_lens.dtype.is_floating_point:
            raise ValueError(f"seq_lens must be a 1-D integer tensor [B], got {seq_lens.dtype} "
                             f"{tuple(seq_lens.shape)}")
        seq_lens = seq_lens.tolist()
    lens = [int(x) for x in seq_lens]
    if len(lens) != batch:
        raise ValueError(f"seq_lens has {len(lens)} entries but cu_seqlens describes B={batch} samples: pass one "
                         f"length per sample")
    if lens and min(lens) < 1:
        raise ValueError(f"every sample needs at least one token; seq_lens gives lengths {lens}")
    if sum(lens) != num_tokens:
        raise ValueError(f"seq_lens sums to {sum(lens)} but q has N={num_tokens} tokens: the lengths must cover "
                         f"the packed batch exactly")
    return lens
