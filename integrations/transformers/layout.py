"""Masks and layouts between transformers' padded batches and our varlen kernels.

transformers hands an attention function `query [B, Hq, Sq, D]`, `key, value [B, Hkv, Skv, D]` (a left-padded batch
in generate) and whatever the mask function registered for the implementation name produced. We register
`padding_mask` below, so `attention_mask` is a 2D bool `[B, Skv]` (True = real token) or None (no padding), exactly
like FlashAttention's route: cheap at 128K tokens (no `[B, 1, S, S]` tensor), and what varlen kernels need.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import (
    causal_mask_function,
    flash_attention_mask,
    sdpa_mask,
    sliding_window_causal_mask_function,
)

from ...kernels.dense import causal_sdpa


def padding_mask(batch_size: int, q_length: int, kv_length: int, mask_function=causal_mask_function,
                 attention_mask: Optional[torch.Tensor] = None, use_vmap: bool = False, **kwargs):
    """The mask function registered for every sparse_attn name (`AttentionMaskInterface`).

    Returns the 2D padding mask `[B, kv_length]` bool (its last `kv_length` columns) or None when nothing is padded.
    Causality and sliding windows are applied by the attention function itself (bottom-right aligned), so only plain
    causal / sliding-window masks are representable: custom overlays (bidirectional image blocks, packed sequences
    built with `or_mask_function`) raise instead of being silently dropped.
    """
    qualname = getattr(mask_function, "__qualname__", "")
    if use_vmap or qualname.startswith("or_masks"):
        raise NotImplementedError(
            "sparse_attn attention implementations support causal decoder masks (with padding and sliding windows) "
            "only; this model built a custom mask (bidirectional blocks / or_mask_function). Use "
            "attn_implementation='sdpa' for this model."
        )
    return flash_attention_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length,
                                mask_function=mask_function, attention_mask=attention_mask)


def key_padding(attention_mask: Optional[torch.Tensor], batch: int, kv_length: int) -> Optional[torch.Tensor]:
    """`[B, Skv]` bool of real keys from what our mask function produced (None = every key is real)."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise NotImplementedError(
            f"sparse_attn got a {attention_mask.dim()}D attention mask; it supports the 2D padding masks transformers "
            f"builds for generate/forward. Custom 4D masks need attn_implementation='sdpa'."
        )
    mask = attention_mask[:, -kv_length:].to(torch.bool)
    if mask.shape != (batch, kv_length):
        raise ValueError(f"padding mask of shape {tuple(mask.shape)} does not fit keys [B={batch}, Skv={kv_length}]")
    return mask


def dense_sdpa(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, padding: Optional[torch.Tensor],
               scaling: float, sliding_window: Optional[int] = None, **kwargs) -> torch.Tensor:
    """Dense attention exactly as transformers' "sdpa" implementation computes it: `[B, Sq, Hq, D]`.

    The 4D mask is built with transformers' own `sdpa_mask` from the same padding, causal (bottom-right aligned:
    query i sits at key position `Skv - Sq + i`) and sliding-window rules, and passed to `sdpa_attention_forward`,
    so the dense phases of every method and the sliding-window layers of Gemma-3 equal `attn_implementation="sdpa"`
    (on the GPU a decode step runs SDPA without its cuDNN backend, and an unpadded prefill runs at a `cudnn_length`:
    the same attention, other kernels' rounding).
    """
    batch, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    mask_function = (causal_mask_function if sliding_window is None
                     else sliding_window_causal_mask_function(sliding_window))
    mask = sdpa_mask(batch_size=batch, q_length=q_len, kv_length=kv_len, q_offset=kv_len - q_len, kv_offset=0,
                     mask_function=mask_function, attention_mask=padding, local_size=sliding_window,
                     allow_is_causal_skip=True, device=query.device)
    kwargs.pop("is_causal", None)
    if (mask is None and q_len == kv_len > 1 and query.is_cuda and getattr(module, "is_causal", True)
            and kwargs.get("position_bias") is None):
        # An unpadded causal prefill: the same SDPA call as sdpa_attention_forward's (is_causal, enable_gqa), run at
        # a cuDNN length so that a new prompt length does not cost a cuDNN plan build (~37 ms of host time).
        return causal_sdpa(query, key, value, scale=scaling).transpose(1, 2).contiguous()
    if q_len == 1 and query.is_cuda:
        # A decode step: never the cuDNN backend. Over transformers' DynamicCache (the KV length grows by one every
        # step) `_cudnn_attention_forward` spent ~20 ms of host time per call at 128K on the H200 with torch 2.11,
        # for 0.13 ms of GPU work, while the same call at a fixed shape runs in 0.139 ms (flash: 0.156 ms);
        # benchmarks/RESULTS.md, session 12 (decode_profile.log). Without cuDNN: 2.29 instead of 39.5 ms per token
        # (2 layers, 128K, H200; session 13).
        backends = sdpa_kernel(DECODE_BACKENDS)
    else:
        backends = nullcontext()  # prefill (and the CPU): SDPA's own backend choice, as attn_implementation="sdpa"
    with backends:
        out, _ = sdpa_attention_forward(module, query, key, value, mask, dropout=0.0, scaling=scaling, **kwargs)
    return out


#: SDPA backends of a dense decode step on the GPU (every backend but cuDNN, see `dense_sdpa`)
DECODE_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class Varlen:
    """A padded batch packed the FlashAttention way (docs/architecture.md "Tensor conventions").

    cu_seqlens: `[B + 1]` int32, sample b owns packed rows `cu_seqlens[b] : cu_seqlens[b + 1]`.
    rows: `[N]` int64 flat indices `b * S + s` of the real tokens in the `[B, S]` batch (None: no padding).
    lengths: `[B]` int64 real tokens per sample.
    host_lengths: the same lengths as Python ints (read back ONCE in `from_padding`, or known without a read when
        nothing is padded): the methods take them as `seq_lens`, so they never read `cu_seqlens` back themselves.
    """

    cu_seqlens: torch.Tensor
    rows: Optional[torch.Tensor]
    lengths: torch.Tensor
    batch: int
    seq_len: int
    host_lengths: Optional[List[int]] = None

    @classmethod
    def from_padding(cls, padding: Optional[torch.Tensor], batch: int, seq_len: int, device) -> "Varlen":
        """Pack layout of a `[B, S]` batch from its padding mask `[B, S]` bool (None: no padding, no device read).

        With padding, the lengths are read back once (`host_lengths`; the packing's `nonzero` syncs anyway) and an
        all-padding sample raises a ValueError naming it.
        """
        if padding is None:
            lengths = torch.full((batch,), seq_len, dtype=torch.int64, device=device)
            rows = None
            host_lengths = [seq_len] * batch
        else:
            lengths = padding.sum(dim=1)
            host_lengths = lengths.tolist()  # the one read-back of the lengths, reused by prefill and compress
            empty = [b for b, length in enumerate(host_lengths) if length == 0]
            if empty:
                raise ValueError(f"samples {empty} of the batch have no real token (all padding); remove them")
            rows = padding.reshape(-1).nonzero().squeeze(1)
        cu_seqlens = torch.zeros(batch + 1, dtype=torch.int32, device=device)
        cu_seqlens[1:] = lengths.cumsum(0)
        return cls(cu_seqlens=cu_seqlens, rows=rows, lengths=lengths, batch=batch, seq_len=seq_len,
                   host_lengths=host_lengths)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, H, S, D]` -> `[N, H, D]` (real tokens only, in order)."""
        batch, heads, seq_len, dim = x.shape
        flat = x.transpose(1, 2).reshape(batch * seq_len, heads, dim)
        return flat if self.rows is None else flat.index_select(0, self.rows)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """`[N, H, D]` -> `[B, S, H, D]` (transformers' attention output layout); padded rows are zeros."""
        heads, dim = packed.shape[1:]
        if self.rows is None:
            return packed.view(self.batch, self.seq_len, heads, dim)
        out = packed.new_zeros(self.batch * self.seq_len, heads, dim)
        out.index_copy_(0, self.rows, packed)
        return out.view(self.batch, self.seq_len, heads, dim)

    def right_aligned(self, x: torch.Tensor, padding: Optional[torch.Tensor]) -> torch.Tensor:
        """`[B, H, S, D]` with real tokens anywhere -> the same with each sample's real tokens first (`0..len-1`),
        zeros after: the per-sample layout of our caches."""
        if padding is None:
            return x
        order = torch.sort((~padding).to(torch.int8), dim=1, stable=True).indices  # real tokens first, in order
        gathered = x.gather(2, order[:, None, :, None].expand_as(x))
        keep = torch.arange(x.shape[2], device=x.device)[None, :] < self.lengths[:, None]
        return torch.where(keep[:, None, :, None], gathered, torch.zeros((), dtype=x.dtype, device=x.device))
