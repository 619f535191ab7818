"""Triton kernels of SnapKV / Ada-SnapKV compression after the window scores (references: `kv_select_naive.py`).

Compression of a 32K prompt does ~0.6 ms of GPU work but, run eagerly as ~30 small PyTorch ops, took ~1.1-1.3 ms:
the host could not issue the launches as fast as the GPU ran them. These kernels fold the elementwise tails into
one launch each:

* `_pool_keys_kernel`: average pooling (same length, zero padding counted, summed left to right and divided as
  `F.avg_pool1d` does), prefix / local-window forcing, and the int64 ranking keys (`flat_ordered_keys`) of the
  pooled scores; one read of the raw scores, one write of pooled scores and keys.
* `_compact_kept_kernel`: Ada-SnapKV's kept positions from per-head key cuts, in positional order (a running
  prefix sum per head), -1 after each head's count, and the counts; replaces a mask + cumsum + scatter chain.
* `_keep_top_kernel`: SnapKV's kept positions from the `count`-th largest score of each head (found by one fp32
  `torch.topk`, whose values the kernel min-reduces): every score above it, then the earliest of the scores equal
  to it, in positional order. It replaced `torch.topk` on int64 keys (8 radix passes, ~30 small launches: ~0.4 ms
  of host time per call at 32K on the H100 profile) followed by `torch.sort` (~0.18 ms of host time).
* `_pack_kept_kernel`: gather of the kept K and V rows of a packed batch into the `[B, Hkv, C, D]` cache, zeros in
  unused slots, and the measured sparsity `1 - lens / T_b` (T_b read from the device `cu_seqlens`: no host copy).
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

POOL_BLOCK = 1024
PACK_BLOCK = 64
_LOW31 = 0x7FFFFFFF


@triton.jit
def _pool_keys_kernel(
    S, POOLED, KEYS, stride_sh, seq_len, total, local_start, prefix,
    KERNEL: tl.constexpr, POOL: tl.constexpr, BLOCK: tl.constexpr,
):
    """Program (head, block of tokens): pooled + forced scores and their keys
    `monotone(score) << 32 | (total - 1 - (head * T + t))`, `total = H * T`."""
    head = tl.program_id(0)
    t = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = t < seq_len
    base = S + head * stride_sh
    if POOL:
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for j in tl.static_range(KERNEL):  # left to right, as avg_pool1d accumulates
            src = t + (j - KERNEL // 2)
            acc += tl.load(base + src, mask=(src >= 0) & (src < seq_len), other=0.0)
        val = tl.math.div_rn(acc, tl.full([BLOCK], KERNEL, dtype=tl.float32))
        val = tl.where((t < prefix) | (t >= local_start), float("inf"), val)
    else:
        val = tl.load(base + t, mask=ok, other=0.0).to(tl.float32)
    flat = head * seq_len + t
    tl.store(POOLED + flat, val, mask=ok)
    bits = (val + 0.0).to(tl.int32, bitcast=True)  # + 0.0: -0.0 ranks as 0.0
    monotone = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64)
    key = (monotone << 32) | (total - 1 - flat).to(tl.int64)
    tl.store(KEYS + flat, key, mask=ok)


def triton_pool_keys(scores: torch.Tensor, kernel_size: int, local_window: int, prefix_tokens: int,
                     pool: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_pool_keys`: `[H, T]` raw scores -> (pooled `[H, T]` fp32, keys `[H, T]` int64)."""
    if scores.dim() != 2:
        raise ValueError(f"expected scores [H, T], got {tuple(scores.shape)}")
    if pool and kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size} must be odd (same-length pooling)")
    num_heads, seq_len = scores.shape
    if num_heads * seq_len >= 2 ** 31:
        raise ValueError(f"{num_heads} x {seq_len} scores exceed the 2^31 flat indices the keys encode")
    if scores.stride(-1) != 1:
        scores = scores.contiguous()
    # one allocation (eager compression is launch-bound): keys `[H, T]` int64, then pooled `[H, T]` fp32
    buffer = torch.empty(3 * num_heads * seq_len, device=scores.device, dtype=torch.int32)
    keys = buffer[: 2 * num_heads * seq_len].view(torch.int64).view(num_heads, seq_len)
    pooled = buffer[2 * num_heads * seq_len:].view(torch.float32).view(num_heads, seq_len)
    local_start = max(seq_len - local_window, 0) if local_window > 0 else seq_len
    _pool_keys_kernel[(num_heads, triton.cdiv(seq_len, POOL_BLOCK))](
        scores, pooled, keys, scores.stride(0), seq_len, num_heads * seq_len, local_start, prefix_tokens,
        KERNEL=kernel_size if pool else 1, POOL=pool, BLOCK=POOL_BLOCK, num_warps=4,
    )
    return pooled, keys


@triton.jit
def _pack_kept_kernel(
    K, V, INDEX, LENS, CU_SEQLENS, K_OUT, V_OUT, SPARSITY,
    stride_kn, stride_kh, stride_vn, stride_vh, stride_ib, stride_ih, stride_lb, stride_lh,
    num_kv_heads, width,
    HEAD_DIM: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """Program (b * Hkv + head, block of slots): copy the kept rows of K and V (zeros for slots holding -1)."""
    pid = tl.program_id(0)
    b = pid // num_kv_heads
    head = pid % num_kv_heads
    slots = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    slot_ok = slots < width
    pos = tl.load(INDEX + b * stride_ib + head * stride_ih + slots, mask=slot_ok, other=-1)
    start = tl.load(CU_SEQLENS + b).to(tl.int64)
    kept = pos >= 0
    rows = start + tl.where(kept, pos, 0)
    offs_d = tl.arange(0, HEAD_DIM)
    kx = tl.load(K + rows[:, None] * stride_kn + head * stride_kh + offs_d[None, :], mask=kept[:, None], other=0.0)
    vx = tl.load(V + rows[:, None] * stride_vn + head * stride_vh + offs_d[None, :], mask=kept[:, None], other=0.0)
    out = (pid.to(tl.int64) * width + slots)[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(K_OUT + out, kx, mask=slot_ok[:, None])
    tl.store(V_OUT + out, vx, mask=slot_ok[:, None])
    if tl.program_id(1) == 0:
        end = tl.load(CU_SEQLENS + b + 1).to(tl.int64)
        length = tl.load(LENS + b * stride_lb + head * stride_lh).to(tl.float32)
        tl.store(SPARSITY + pid, 1.0 - tl.math.div_rn(length, (end - start).to(tl.float32)))


def triton_pack_kept(k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, lens: torch.Tensor,
                     cu_seqlens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as `naive_pack_kept` (one launch for K, V and the sparsity; no host sync)."""
    if k.dim() != 3 or v.shape != k.shape or index.dim() != 3 or index.shape[1] != k.shape[1]:
        raise ValueError(f"expected k, v [N, Hkv, D] and index [B, Hkv, C]; got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}, index {tuple(index.shape)}")
    if tuple(lens.shape) != tuple(index.shape[:2]) or cu_seqlens.numel() != index.shape[0] + 1:
        raise ValueError(f"lens {tuple(lens.shape)} / cu_seqlens {tuple(cu_seqlens.shape)} do not match index "
                         f"{tuple(index.shape)}: expected [B, Hkv] and [B + 1]")
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("k and v must be contiguous in the head dim (stride(-1) == 1): call .contiguous()")
    if k.shape[2] & (k.shape[2] - 1):
        raise ValueError(f"the Triton pack kernel needs a power-of-two head dim, got {k.shape[2]}: use backend='naive'")
    if index.stride(-1) != 1:
        index = index.contiguous()
    batch, num_kv_heads, width = index.shape
    head_dim = k.shape[2]
    cu_seqlens = cu_seqlens.to(k.device)  # no-op for the integrations' CUDA cu_seqlens
    if v.dtype != k.dtype:
        raise ValueError(f"k and v must share one dtype, got {k.dtype} and {v.dtype}")
    kv_out = torch.empty(2, batch, num_kv_heads, width, head_dim, device=k.device, dtype=k.dtype)  # one allocation
    k_out, v_out = kv_out[0], kv_out[1]
    sparsity = torch.empty(batch, num_kv_heads, device=k.device, dtype=torch.float32)
    _pack_kept_kernel[(batch * num_kv_heads, max(triton.cdiv(width, PACK_BLOCK), 1))](
        k, v, index, lens, cu_seqlens, k_out, v_out, sparsity,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), index.stride(0), index.stride(1),
        lens.stride(0), lens.stride(1), num_kv_heads, width,
        HEAD_DIM=head_dim, BLOCK_C=PACK_BLOCK, num_warps=4,
    )
    return k_out, v_out, sparsity


COMPACT_BLOCK = 2048


@triton.jit
def _compact_kept_kernel(KEYS, CUT, INDEX, LENS, stride_kh, stride_ih, seq_len, width, BLOCK: tl.constexpr):
    """Program (head): one pass over the head's keys; kept position t goes to slot (kept before t)."""
    head = tl.program_id(0)
    cut = tl.load(CUT + head)
    offs = tl.arange(0, BLOCK)
    count = tl.sum(tl.zeros([BLOCK], dtype=tl.int32), 0)  # int32 scalar, loop-carried
    for t0 in range(0, seq_len, BLOCK):
        t = t0 + offs
        ok = t < seq_len
        key = tl.load(KEYS + head * stride_kh + t, mask=ok, other=0)
        keep = ((key >= cut) & ok).to(tl.int32)
        slot = count + tl.cumsum(keep, 0) - keep  # exclusive prefix sum
        tl.store(INDEX + head * stride_ih + slot, t.to(tl.int64), mask=keep != 0)
        count += tl.sum(keep, 0)
    tl.store(LENS + head, count)
    for s0 in range(0, width, BLOCK):  # -1 after the count
        s = s0 + offs
        tl.store(INDEX + head * stride_ih + s, tl.full([BLOCK], -1, dtype=tl.int64), mask=(s >= count) & (s < width))


def triton_compact_kept(keys: torch.Tensor, cut: torch.Tensor, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_compact_kept` (one launch, one allocation, no sync)."""
    num_heads, seq_len = keys.shape
    if keys.dtype != torch.int64 or cut.numel() != num_heads:
        raise ValueError(f"expected int64 keys [H, T] and cut [H], got {keys.dtype} {tuple(keys.shape)} and "
                         f"{tuple(cut.shape)}")
    if not 0 < width <= seq_len:
        raise ValueError(f"width must lie in [1, T={seq_len}], got {width}")
    if keys.stride(-1) != 1:
        keys = keys.contiguous()
    cut = cut.reshape(num_heads).to(torch.int64).contiguous()
    buffer = torch.empty(2 * num_heads * width + num_heads, device=keys.device, dtype=torch.int32)
    index = buffer[: 2 * num_heads * width].view(torch.int64).view(num_heads, width)
    lens = buffer[2 * num_heads * width:]
    _compact_kept_kernel[(num_heads,)](keys, cut, index, lens, keys.stride(0), index.stride(0), seq_len, width,
                                       BLOCK=COMPACT_BLOCK, num_warps=8)
    return index, lens


@triton.jit
def _keep_top_kernel(SCORES, TOP_VALUES, INDEX, LENS, stride_sh, stride_vh, stride_ih, seq_len, count,
                     BLOCK: tl.constexpr):
    """Program (head): cut = min of the head's top-`count` values (the count-th largest score); keep the scores
    > cut and the first (count - #above) scores == cut, in positional order (two passes over the head)."""
    head = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    cut_block = tl.full([BLOCK], float("inf"), dtype=tl.float32)
    for c0 in range(0, count, BLOCK):
        c = c0 + offs
        cut_block = tl.minimum(cut_block, tl.load(TOP_VALUES + head * stride_vh + c, mask=c < count,
                                                  other=float("inf")))
    cut = tl.min(cut_block, 0)
    zero = tl.sum(tl.zeros([BLOCK], dtype=tl.int32), 0)  # int32 scalar for the loop-carried counters
    above = zero
    for t0 in range(0, seq_len, BLOCK):
        t = t0 + offs
        s = tl.load(SCORES + head * stride_sh + t, mask=t < seq_len, other=float("-inf"))
        above += tl.sum(((s > cut) & (t < seq_len)).to(tl.int32), 0)
    need_equal = count - above  # >= 1: the cut itself is one of the top `count`
    taken = zero
    seen_equal = zero
    for t0 in range(0, seq_len, BLOCK):
        t = t0 + offs
        ok = t < seq_len
        s = tl.load(SCORES + head * stride_sh + t, mask=ok, other=float("-inf"))
        equal = ((s == cut) & ok).to(tl.int32)
        equal_rank = seen_equal + tl.cumsum(equal, 0) - equal  # equals before this one, in positional order
        keep = (((s > cut) & ok) | ((equal != 0) & (equal_rank < need_equal))).to(tl.int32)
        slot = taken + tl.cumsum(keep, 0) - keep
        tl.store(INDEX + head * stride_ih + slot, t.to(tl.int64), mask=keep != 0)
        taken += tl.sum(keep, 0)
        seen_equal += tl.sum(equal, 0)
    tl.store(LENS + head, taken)


def triton_keep_top(scores: torch.Tensor, count: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_keep_top`: one fp32 `torch.topk` (values only are used) and one Triton launch."""
    if scores.dim() != 2 or scores.dtype != torch.float32:
        raise ValueError(f"expected fp32 scores [H, T], got {scores.dtype} {tuple(scores.shape)}")
    num_heads, seq_len = scores.shape
    if not 1 <= count <= seq_len:
        raise ValueError(f"count must lie in [1, T={seq_len}], got {count}")
    if scores.stride(-1) != 1:
        scores = scores.contiguous()
    top_values = torch.topk(scores, count, dim=-1, sorted=False).values  # the set's minimum is the cut
    buffer = torch.empty(2 * num_heads * count + num_heads, device=scores.device, dtype=torch.int32)
    index = buffer[: 2 * num_heads * count].view(torch.int64).view(num_heads, count)
    lens = buffer[2 * num_heads * count:]
    _keep_top_kernel[(num_heads,)](scores, top_values, index, lens, scores.stride(0), top_values.stride(0),
                                   index.stride(0), seq_len, count, BLOCK=COMPACT_BLOCK, num_warps=8)
    return index, lens
