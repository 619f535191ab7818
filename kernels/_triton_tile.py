"""Pieces shared by the Triton prefill kernels: one online-softmax step and input checks.

The kernels follow FlashAttention-2: a program owns a tile of BLOCK_M query rows of one query head, keeps the
running row max `m`, row sum `l` and the un-normalised output `acc` in fp32 registers, and folds in one key tile
at a time. Scores are computed in base 2 (scale * log2(e) folded into the exp2 argument) so the exponentials are
`exp2`.
"""
import math

import torch
import triton
import triton.language as tl

LOG2E = 1.0 / math.log(2.0)
SUPPORTED_HEAD_DIMS = (64, 128)


@triton.jit
def unscaled_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, qk_scale):
    """Online-softmax step over a key tile wholly in the past of every query row (no mask), q [M, D] UNSCALED.

    The softmax scale (scale*log2(e), qk_scale) goes into the exp2 argument (one FMA per score): scaling q in
    registers made q the register operand of every wgmma and ptxas serialized the wgmma k-steps (block_sparse,
    session 2). Used by the block-sparse and vertical-slash pointer kernels.
    """
    k = tl.load(k_ptrs)
    s = tl.dot(q, tl.trans(k))
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    p = tl.math.exp2(s * qk_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(v_ptrs)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def unscaled_masked_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, keep, key_ok, qk_scale):
    """`unscaled_step` with a mask: keep [M, N] (selected, causal, key exists), key_ok [N] (keys to load).

    Rows with no kept key yet keep m = -inf and subtract 0 instead, so exp2 never sees (-inf) - (-inf).
    """
    k = tl.load(k_ptrs, mask=key_ok[:, None], other=0.0)
    s = tl.dot(q, tl.trans(k))
    s = tl.where(keep, s * qk_scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s - m_safe[:, None])
    alpha = tl.math.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(v_ptrs, mask=key_ok[:, None], other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l_i


@triton.jit
def online_softmax_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, k_pos, q_pos, key_ok, APPLY_CAUSAL: tl.constexpr):
    """Fold one key tile into the running (acc [M, D], m_i [M], l_i [M]) state.

    q: [M, D] already scaled by scale*log2(e); k_ptrs / v_ptrs: [N, D] pointer tiles; k_pos [N] key positions,
    q_pos [M] query positions (both within the sample); key_ok [N] keys that exist and are selected.
    `unscaled_masked_step` with a unit scale (the library kernels now keep q unscaled; this pre-scaled form serves
    the session-6 comparison kernel in benchmarks/results/vs_attn_s6/).
    """
    keep = key_ok[None, :]
    if APPLY_CAUSAL:
        keep = keep & (k_pos[None, :] <= q_pos[:, None])
    return unscaled_masked_step(acc, m_i, l_i, q, k_ptrs, v_ptrs, keep, key_ok, 1.0)


@triton.jit
def softmax_pv_desc(acc, m_i, l_i, s, qk_scale, desc_v, k_row, kv_col):
    """Fold an unmasked raw score tile s [M, N] (Q unscaled) and the value rows at k_row of a tensor descriptor
    (column kv_col) into (acc, m, l); m in base 2. The tensor-descriptor (Hopper) kernels' unmasked step."""
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    p = tl.math.exp2(s * qk_scale - m_new[:, None])  # one FMA per score
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    v = desc_v.load([k_row, kv_col])
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_new, l_i


def check_prefill_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
    """Raise a ValueError naming the fix when the packed varlen inputs do not fit the Triton kernels."""
    if q.dim() != 3 or k.dim() != 3 or v.shape != k.shape:
        raise ValueError(f"expected q [N, Hq, D], k, v [N, Hkv, D]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on tokens or head dim")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of KV heads ({k.shape[1]})")
    if q.shape[2] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"the Triton prefill kernels support head dims {SUPPORTED_HEAD_DIMS}, got {q.shape[2]}: "
                         "pad q/k/v with zeros to the next supported size (and slice the output) or use "
                         "backend='naive'")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("q, k, v must be contiguous in the head dim (call .contiguous())")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be [B+1], got {tuple(cu_seqlens.shape)}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"unsupported dtype {q.dtype}")


def max_seqlen(cu_seqlens: torch.Tensor) -> int:
    return int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
