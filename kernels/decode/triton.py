"""Triton decode attention over a per-head variable-length (compressed) KV cache: snapkv / ada_snapkv decoding.

One query token per sample attends to the valid prefix of its KV head's cache. Flash-decoding (split-K): the cache
is cut into `num_splits` chunks of the token axis so that even batch 1 puts several programs on every SM; each
program handles all query heads of one KV group (GQA without repeating K/V: K/V are read once per group), keeps an
online softmax in fp32 and writes a partial output plus its log-sum-exp; `_combine_splits_kernel` merges them.

The same split/combine machinery serves Quest's attention over selected pages (`kernels/quest/triton.py`).
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
# Programs per SM the split heuristic aims for: enough loads in flight to saturate HBM.
PROGRAMS_PER_SM = 4
# Tokens a split covers at least: below this the partial-output traffic and the combine cost outweigh the gain.
MIN_TOKENS_PER_SPLIT = 256
SUPPORTED_HEAD_DIMS = (64, 128)
# The Triton interpreter (CPU tests) mis-computes tl.dot on bf16/fp16 operands (triton 3.9), so there the kernels
# upcast dot operands to fp32 after rounding them exactly as on the GPU; compiled kernels keep 16-bit tensor-core dots.
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_decode_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Tuple[int, int, int, int]:
    """Validate `q [B, Hq, D]`, `k, v [B, Hkv, C, D]`; return (B, Hq, Hkv, D). Errors name the fix."""
    if q.dim() != 3 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(
            f"decode attention expects q [B, Hq, D] and k, v [B, Hkv, C, D] of equal shape; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    batch, num_q_heads, head_dim = q.shape
    if k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or head dim")
    num_kv_heads = k.shape[1]
    if num_q_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_q_heads}) must be a multiple of KV heads ({num_kv_heads}) for GQA")
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(
            f"the Triton decode kernels support head dims {SUPPORTED_HEAD_DIMS}, got {head_dim}: "
            f"use backend='naive' for this model"
        )
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("q, k and v must be contiguous in the head dim (stride(-1) == 1): call .contiguous()")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    return batch, num_q_heads, num_kv_heads, head_dim


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def choose_num_splits(programs_per_split: int, max_tokens: int, device: torch.device) -> int:
    """Splits of the token axis so that `programs_per_split * splits` covers the SMs a few times over.

    Never more splits than `max_tokens / MIN_TOKENS_PER_SPLIT` (at least 1). Host-only arithmetic: no device sync,
    so the call can be captured in a CUDA graph.
    """
    if device.type == "cuda":
        sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    else:  # interpreter: a few splits are enough to exercise the combine path
        sms = 2
    wanted = triton.cdiv(PROGRAMS_PER_SM * sms, max(programs_per_split, 1))
    most = max(1, triton.cdiv(max_tokens, MIN_TOKENS_PER_SPLIT))
    return int(max(1, min(wanted, most)))


def group_rows(num_rows: int) -> int:
    """Rows of the per-program query tile: tl.dot needs at least 16."""
    return max(16, triton.next_power_of_2(num_rows))


@triton.jit
def _dot(a, b, DOT_F32: tl.constexpr):
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    return tl.dot(a, b)


@triton.jit
def _decode_split_kernel(
    OUT, O_PART, LSE_PART, Q, K, V, LENS, LSE_OUT, COUNTERS,
    stride_qb, stride_qh,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_lb, stride_lh,
    stride_ob, stride_oh,
    num_kv_heads, tokens_per_split, num_splits, scale_log2e,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    SINGLE_SPLIT: tl.constexpr, WRITE_LSE: tl.constexpr, DOT_F32: tl.constexpr, FUSE_COMBINE: tl.constexpr = False,
):
    """Program (b * Hkv + kv_head, split): the GROUP query heads of one KV head over one chunk of its tokens.

    FUSE_COMBINE (several splits): after writing its partials, each program takes a ticket from the
    `COUNTERS[b * Hkv + kv_head]` counter (acq_rel atomic after a CTA barrier, so every thread's partial stores
    are released before the ticket); the program drawing the last ticket merges the group's partials (read past
    L1) into OUT / LSE_OUT and resets the counter to 0 for the next launch: no second kernel launch."""
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = pid_bh // num_kv_heads
    kv_head = pid_bh % num_kv_heads

    length = tl.load(LENS + b * stride_lb + kv_head * stride_lh).to(tl.int32)
    start = split * tokens_per_split
    end = tl.minimum(start + tokens_per_split, length)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    row_ok = offs_g < GROUP
    q_heads = kv_head * GROUP + offs_g
    q = tl.load(Q + b * stride_qb + q_heads[:, None] * stride_qh + offs_d[None, :], mask=row_ok[:, None], other=0.0)

    k_base = K + b * stride_kb + kv_head * stride_kh
    v_base = V + b * stride_vb + kv_head * stride_vh
    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], dtype=tl.float32)
    for n0 in range(start, end, BLOCK_N):
        tok = n0 + offs_n
        tok_ok = tok < end
        kt = tl.load(k_base + tok[None, :] * stride_kn + offs_d[:, None], mask=tok_ok[None, :], other=0.0)
        s = _dot(q, kt, DOT_F32) * scale_log2e  # [BLOCK_G, BLOCK_N], log2 units
        s = tl.where(tok_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: every block holds at least one valid token
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        vt = tl.load(v_base + tok[:, None] * stride_vn + offs_d[None, :], mask=tok_ok[:, None], other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(vt.dtype), vt, DOT_F32)
        m_i = m_new

    part_rows = (b * num_kv_heads * GROUP + q_heads) * num_splits + split
    _store_split(OUT, O_PART, LSE_PART, acc, m_i, l_i, b, q_heads, part_rows, row_ok,
                 stride_ob, stride_oh, HEAD_DIM, SINGLE_SPLIT, WRITE_LSE)
    if FUSE_COMBINE:
        tl.debug_barrier()  # every thread's partial stores precede the ticket
        ticket = tl.atomic_add(COUNTERS + pid_bh, 1, sem="acq_rel", scope="gpu")
        if ticket == num_splits - 1:
            tl.store(COUNTERS + pid_bh, 0)  # every split of this launch has drawn: reset for the next launch
            first_rows = (b * num_kv_heads * GROUP + q_heads) * num_splits
            _combine_group(O_PART, LSE_PART, OUT, LSE_OUT, first_rows, b * num_kv_heads * GROUP + q_heads, row_ok,
                           b, q_heads, num_splits, stride_ob, stride_oh, BLOCK_G, HEAD_DIM, WRITE_LSE)


@triton.jit
def _combine_group(O_PART, LSE_PART, OUT, LSE_OUT, first_rows, out_rows, row_ok, b, q_heads, num_splits,
                   stride_ob, stride_oh, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, WRITE_LSE: tl.constexpr):
    """Merge the split partials of a group's query heads (`first_rows [BLOCK_G]` = row of split 0), online over
    the splits as `_combine_splits_kernel`; loads bypass L1 (`.cg`): the partials come from other SMs.
    `out_rows [BLOCK_G]`: the heads' rows of the `[B * Hq]` lse output."""
    offs_d = tl.arange(0, HEAD_DIM)
    m = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    total = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, HEAD_DIM], dtype=tl.float32)
    for split in range(0, num_splits):
        lse = tl.load(LSE_PART + first_rows + split, mask=row_ok, other=float("-inf"), cache_modifier=".cg")
        part = tl.load(O_PART + (first_rows + split)[:, None] * HEAD_DIM + offs_d[None, :], mask=row_ok[:, None],
                       other=0.0, cache_modifier=".cg")
        m_new = tl.maximum(m, lse)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all splits so far empty: weights 0
        alpha = tl.exp2(m - m_safe)
        w = tl.exp2(lse - m_safe)
        acc = acc * alpha[:, None] + part * w[:, None]
        total = total * alpha + w
        m = m_new
    denom = tl.where(total > 0, total, 1.0)
    ptrs = OUT + b * stride_ob + q_heads[:, None] * stride_oh + offs_d[None, :]
    tl.store(ptrs, (acc / denom[:, None]).to(OUT.dtype.element_ty), mask=row_ok[:, None])
    if WRITE_LSE:
        lse_out = tl.where(m == float("-inf"), float("-inf"), (m + tl.log2(denom)) * 0.6931471805599453)
        tl.store(LSE_OUT + out_rows, lse_out, mask=row_ok)  # [B, Hq] row b * Hq + head


@triton.jit
def _store_split(OUT, O_PART, LSE_PART, acc, m_i, l_i, b, q_heads, part_rows, row_ok,
                 stride_ob, stride_oh, HEAD_DIM: tl.constexpr, SINGLE_SPLIT: tl.constexpr,
                 WRITE_LSE: tl.constexpr):
    """Write the normalised output (one split) or the partial output + log2-sum-exp (several splits).

    With one split, LSE_PART is the `[B * Hq]` natural-log lse output (written when WRITE_LSE); part_rows is then
    `b * Hq + head`. An empty split (all its tokens past the head's length) writes lse = -inf and zeros; the
    combine gives it weight 0. An empty head (length 0) gets a zero output.
    """
    offs_d = tl.arange(0, HEAD_DIM)
    safe_l = tl.where(l_i > 0, l_i, 1.0)
    out = acc / safe_l[:, None]
    lse = tl.where(l_i > 0, m_i + tl.log2(safe_l), float("-inf"))
    if SINGLE_SPLIT:
        ptrs = OUT + b * stride_ob + q_heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(ptrs, out.to(OUT.dtype.element_ty), mask=row_ok[:, None])
        if WRITE_LSE:
            tl.store(LSE_PART + part_rows, lse * 0.6931471805599453, mask=row_ok)  # log2 -> natural log
    else:
        tl.store(LSE_PART + part_rows, lse, mask=row_ok)
        tl.store(O_PART + part_rows[:, None] * HEAD_DIM + offs_d[None, :], out, mask=row_ok[:, None])


@triton.jit
def _combine_splits_kernel(
    O_PART, LSE_PART, OUT, LSE_OUT, num_q_heads, num_splits, stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, WRITE_LSE: tl.constexpr,
):
    """Program (b * Hq + q_head): merge the split partials with weights 2^(lse_s - max lse), in one pass over the
    splits (online rescaling, as the split kernels' softmax): each partial row and lse is read once."""
    row = tl.program_id(0)
    b = row // num_q_heads
    head = row % num_q_heads
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, HEAD_DIM)
    m = tl.max(tl.full([BLOCK_S], float("-inf"), dtype=tl.float32), 0)  # fp32 scalars (loop-carried)
    total = tl.sum(tl.zeros([BLOCK_S], dtype=tl.float32), 0)
    acc = tl.zeros([HEAD_DIM], dtype=tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        split_ok = s0 + offs_s < num_splits
        lse = tl.load(LSE_PART + row * num_splits + s0 + offs_s, mask=split_ok, other=float("-inf"))
        part = tl.load(O_PART + (row * num_splits + s0 + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
                       mask=split_ok[:, None], other=0.0)
        m_new = tl.maximum(m, tl.max(lse, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all splits so far empty: weights 0
        alpha = tl.exp2(m - m_safe)
        w = tl.exp2(lse - m_safe)
        acc = acc * alpha + tl.sum(part * w[:, None], 0)
        total = total * alpha + tl.sum(w, 0)
        m = m_new
    denom = tl.where(total > 0, total, 1.0)
    tl.store(OUT + b * stride_ob + head * stride_oh + offs_d, (acc / denom).to(OUT.dtype.element_ty))
    if WRITE_LSE:
        lse = tl.where(m == float("-inf"), float("-inf"), (m + tl.log2(denom)) * 0.6931471805599453)
        tl.store(LSE_OUT + row, lse)


def allocate_split_buffers(batch: int, num_q_heads: int, num_splits: int, head_dim: int, device: torch.device):
    """fp32 partial outputs `[B * Hq * S, D]` and log2-sum-exps `[B * Hq * S]` (row = (b * Hq + h) * S + s)."""
    rows = batch * num_q_heads * num_splits
    return (torch.empty(rows, head_dim, device=device, dtype=torch.float32),
            torch.empty(rows, device=device, dtype=torch.float32))


def combine_splits(o_part: torch.Tensor, lse_part: torch.Tensor, out: torch.Tensor, num_splits: int,
                   lse_out: Optional[torch.Tensor] = None) -> None:
    """Merge split partials into `out [B, Hq, D]` (in place), and the natural-log lse into `lse_out [B, Hq]`."""
    batch, num_q_heads, head_dim = out.shape
    block_s = min(16, triton.next_power_of_2(num_splits))
    _combine_splits_kernel[(batch * num_q_heads,)](
        o_part, lse_part, out, lse_part if lse_out is None else lse_out, num_q_heads, num_splits,
        out.stride(0), out.stride(1),
        HEAD_DIM=head_dim, BLOCK_S=block_s, WRITE_LSE=lse_out is not None, num_warps=4,
    )


def launch_split_decode(kernel, grid_rows: int, num_splits: int, out: torch.Tensor, return_lse: bool,
                        args: tuple, **meta):
    """Run a split kernel then (several splits) the combine; return `out` or `(out, lse [B, Hq] fp32)`."""
    batch, num_q_heads, head_dim = out.shape
    lse_out = torch.empty(batch, num_q_heads, device=out.device, dtype=torch.float32) if return_lse else None
    single = num_splits == 1
    if single:
        o_part, lse_part = out, (lse_out if return_lse else out)
    else:
        o_part, lse_part = allocate_split_buffers(batch, num_q_heads, num_splits, head_dim, out.device)
    # split kernels take (OUT, O_PART, LSE_PART, *inputs and strides); num_splits is passed by the caller in args
    kernel[(grid_rows, num_splits)](out, o_part, lse_part, *args, SINGLE_SPLIT=single, WRITE_LSE=return_lse,
                                    DOT_F32=INTERPRETING, **meta)
    if not single:
        combine_splits(o_part, lse_part, out, num_splits, lse_out)
    return (out, lse_out) if return_lse else out


def triton_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lens: torch.Tensor,
    scale: Optional[float] = None,
    out: Optional[torch.Tensor] = None,
    return_lse: bool = False,
    num_splits: Optional[int] = None,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 3,
    fuse_combine: bool = False,
):
    """Decode attention over a per-head variable-length cache (flash-decoding, GQA-grouped); same contract as
    `naive_decode`.

    Args:
        q: `[B, Hq, D]` one query token per sample (D in 64, 128).
        k, v: `[B, Hkv, C, D]`; head `h` of sample `b` holds valid tokens at `0 .. lens[b, h] - 1`; later entries
            are never read.
        lens: `[B, Hkv]` int valid lengths (`1 <= lens <= C`; not checked on the device, which would sync); a `[B]`
            tensor means the same length for every head (dense decode over a full cache).
        scale: softmax scale. Default: `D ** -0.5`.
        out: optional `[B, Hq, D]` output buffer (q's dtype), written in place.
        return_lse: also return the natural-log log-sum-exp of the scaled scores, `[B, Hq]` fp32.
        num_splits: chunks of the token axis; default from `choose_num_splits` (host arithmetic, no device sync,
            so the call can be captured in a CUDA graph).
        block_n, num_warps, num_stages: tile and launch parameters (the benchmark tunes them).
        fuse_combine: with several splits, the last split program of each KV group merges the partials (atomic
            ticket counter, `_decode_split_kernel`) instead of a second `_combine_splits_kernel` launch. The
            counters are one buffer per device that the kernel resets itself, so fused decodes of one device must
            not run concurrently on two streams. Off by default: on an H100 (128K, Llama-3.1-8B heads) it did not
            beat the two launches (B=8: 0.165 ms both; B=1: 0.047 vs 0.039 ms, the last program merging 52+ splits
            alone is slower than a separate combine launch; benchmarks/results/decode_s3).

    Returns:
        `out [B, Hq, D]` in q's dtype (and `lse [B, Hq]`); query head `h` reads KV head `h // (Hq // Hkv)`.
    """
    batch, num_q_heads, num_kv_heads, head_dim = check_decode_shapes(q, k, v)
    lens = _as_head_lens(lens, batch, num_kv_heads)
    group = num_q_heads // num_kv_heads
    capacity = max(k.shape[2], 1)
    scale = head_dim ** -0.5 if scale is None else scale
    if out is None:
        out = torch.empty_like(q)
    if num_splits is None:
        num_splits = choose_num_splits(batch * num_kv_heads, capacity, q.device)
    tokens_per_split = triton.cdiv(triton.cdiv(capacity, num_splits), block_n) * block_n
    num_splits = triton.cdiv(capacity, tokens_per_split)
    fused = fuse_combine and num_splits > 1
    lse_out = None
    if fused:
        lse_out = torch.empty(batch, num_q_heads, device=q.device, dtype=torch.float32) if return_lse else None
        counters = _ticket_counters(q.device, batch * num_kv_heads)
    else:
        counters = lens  # unused placeholders (FUSE_COMBINE=False never reads them)
    args = (
        q, k, v, lens, lse_out if lse_out is not None else lens, counters,
        q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        lens.stride(0), lens.stride(1),
        out.stride(0), out.stride(1),
        num_kv_heads, tokens_per_split, num_splits, scale * LOG2E,
    )
    meta = dict(GROUP=group, BLOCK_G=group_rows(group), HEAD_DIM=head_dim, BLOCK_N=block_n, num_warps=num_warps,
                num_stages=num_stages)
    if fused:
        o_part, lse_part = allocate_split_buffers(batch, num_q_heads, num_splits, head_dim, out.device)
        _decode_split_kernel[(batch * num_kv_heads, num_splits)](
            out, o_part, lse_part, *args, SINGLE_SPLIT=False, WRITE_LSE=return_lse, DOT_F32=INTERPRETING,
            FUSE_COMBINE=True, **meta)
        return (out, lse_out) if return_lse else out
    return launch_split_decode(
        _decode_split_kernel, batch * num_kv_heads, num_splits, out, return_lse, args,
        GROUP=group, BLOCK_G=group_rows(group), HEAD_DIM=head_dim, BLOCK_N=block_n,
        num_warps=num_warps, num_stages=num_stages,
    )


_COUNTERS = {}


def _ticket_counters(device: torch.device, count: int) -> torch.Tensor:
    """`[>= count]` int32 zeros, one buffer per device, kept between calls: the fused combine's last program of
    each group resets its counter, so the buffer is zero again after every launch (no memset launch). Grown
    outside CUDA-graph capture only (a captured allocation would belong to the graph's pool)."""
    key = str(device)
    buffer = _COUNTERS.get(key)
    if buffer is None or buffer.numel() < count:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"triton_decode(fuse_combine=True) needs {count} ticket counters on {device} that were not "
                f"allocated before this CUDA-graph capture: run one decode step of this batch size eagerly first "
                f"(warm-up), or pass fuse_combine=False"
            )
        buffer = torch.zeros(max(count, 256), device=device, dtype=torch.int32)
        _COUNTERS[key] = buffer
    return buffer


def ticket_counter_buffers() -> list:
    """The fused combine's counter buffers (one per device) as they are now: a CUDA graph that captured a fused
    decode keeps them alive, since a later, larger decode may replace a device's buffer in the registry."""
    return list(_COUNTERS.values())


def _as_head_lens(lens: torch.Tensor, batch: int, num_kv_heads: int) -> torch.Tensor:
    if lens.dim() == 1:
        lens = lens[:, None].expand(batch, num_kv_heads)
    if tuple(lens.shape) != (batch, num_kv_heads):
        raise ValueError(f"lens must be [B, Hkv] = [{batch}, {num_kv_heads}] (or [B]), got {tuple(lens.shape)}")
    if lens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"lens must be int32 or int64, got {lens.dtype}")
    return lens


__all__ = ["triton_decode", "launch_split_decode", "choose_num_splits", "check_decode_shapes"]
