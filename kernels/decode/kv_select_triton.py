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
* `_ada_radix_pass_kernel`: Ada-SnapKV's cuts (`triton_ada_cuts`, opt-in `AdaSnapKV.allocation = "radix"`): a
  radix select, one key byte per launch (8 launches), of the shared threshold g and of each head's floor-th key
  f_h together; per-head histograms by `tl.histogram` + atomics, the program drawing the last ticket picks the
  bytes. Replaces `keep_top` + a `torch.topk` over the flat `[Hkv * T]` remainder (~50 small launches at 32K)
  and the `lens.max()` launch (the width is written on the device).
* `_pack_kept_kernel`: gather of the kept K and V rows of a packed batch into the `[B, Hkv, C, D]` cache, zeros in
  unused slots, and the measured sparsity `1 - lens / T_b` (T_b read from the device `cu_seqlens`: no host copy).
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from .._order_key import order_key

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
    monotone = order_key(val.to(tl.int32, bitcast=True)).to(tl.int64)
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


# -- Ada-SnapKV: the per-head cuts by a radix select over the int64 keys (no torch.topk, no host sync) -------------
ADA_BINS = 256  # one byte of the key per pass: 8 passes over the keys
ADA_BLOCK = 2048
ADA_PASSES = 8


def _ada_state_layout(h_pad: int):
    """Offsets into the int64 scratch of `triton_ada_cuts` (zeroed once per call): per-head histograms of the
    shared search (`[H_PAD, BINS]`) and of the per-head floor search, the ticket, the shared threshold's known
    high bits `lo_g`, the width, then `[H_PAD]` vectors: keys above the current prefix (shared / floor search),
    the floor searches' high bits `lo_f`, and the output cuts."""
    hist = h_pad * ADA_BINS
    misc = 2 * hist
    return dict(hist_f=hist, ticket=misc, lo_g=misc + 1, width=misc + 2, above_g=misc + 4,
                above_f=misc + 4 + h_pad, lo_f=misc + 4 + 2 * h_pad, cut=misc + 4 + 3 * h_pad,
                size=misc + 4 + 4 * h_pad)


@triton.jit
def _ada_radix_pass_kernel(
    KEYS, STATE, stride_kh, seq_len, num_heads, floor, total, shift,
    H_PAD: tl.constexpr, BINS: tl.constexpr, BLOCK: tl.constexpr,
    FIRST: tl.constexpr, LAST: tl.constexpr, HAS_FLOOR: tl.constexpr,
):
    """Program (head, block of tokens) of one radix pass: histogram the key byte at `shift` of the keys that still
    match each search's known high bits, add it to the per-head histograms (atomics); the program drawing the
    last ticket picks the byte of every search, updates the state, resets the histograms and the ticket.

    Shared search: g = the largest key value with F(g) = sum_h max(floor, #keys_h >= g) >= total (with distinct
    keys, the `extra`-th largest key outside the heads' floors). Floor search of head h: f_h = the largest value
    with #keys_h >= f_h >= floor (its floor-th largest key). Candidate byte d stands for the threshold
    `lo + (d << shift)`; #keys_h >= it = (keys above the prefix) + (prefix matches with byte >= d). The first pass
    reads the top byte with its sign bit flipped (int64 order). STATE offsets: `_ada_state_layout`."""
    HIST_F = H_PAD * BINS  # constexpr offsets (few launch arguments: eager compression is launch-bound)
    TICKET = 2 * H_PAD * BINS
    LO_G = TICKET + 1
    WIDTH = TICKET + 2
    ABOVE_G = TICKET + 4
    ABOVE_F = ABOVE_G + H_PAD
    LO_F = ABOVE_F + H_PAD
    CUT = LO_F + H_PAD
    head = tl.program_id(0)
    t = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = t < seq_len
    key = tl.load(KEYS + head * stride_kh + t, mask=ok, other=0)
    byte = ((key >> shift) & 0xFF).to(tl.int32)
    bins = tl.arange(0, BINS)
    if FIRST:
        byte = byte ^ 0x80  # signed top byte -128..127 -> 0..255
        match_g = ok
        match_f = ok
    else:
        lo_g = tl.load(STATE + LO_G)
        match_g = ok & ((key >> (shift + 8)) == (lo_g >> (shift + 8)))
        lo_f_head = tl.load(STATE + LO_F + head)
        match_f = ok & ((key >> (shift + 8)) == (lo_f_head >> (shift + 8)))
    hist = tl.histogram(byte, BINS, mask=match_g).to(tl.int64)
    tl.atomic_add(STATE + head * BINS + bins, hist, mask=hist != 0, sem="relaxed")
    if HAS_FLOOR:
        hist_f = tl.histogram(byte, BINS, mask=match_f).to(tl.int64)
        tl.atomic_add(STATE + HIST_F + head * BINS + bins, hist_f, mask=hist_f != 0, sem="relaxed")
    tl.debug_barrier()  # every thread's histogram atomics precede the ticket
    ticket = tl.atomic_add(STATE + TICKET, 1, sem="acq_rel", scope="gpu")
    if ticket == tl.num_programs(0) * tl.num_programs(1) - 1:
        rows = tl.arange(0, H_PAD)
        row_ok = rows < num_heads
        cells = rows[:, None] * BINS + bins[None, :]
        zero2 = tl.zeros([H_PAD, BINS], dtype=tl.int64)
        # shared search: F(d) over the candidate bytes, the largest byte with F >= total (F(0) >= total holds)
        hg = tl.load(STATE + cells, cache_modifier=".cg")
        tl.store(STATE + cells, zero2)  # reset for the next pass
        if FIRST:
            above_g = tl.zeros([H_PAD], dtype=tl.int64)
        else:
            above_g = tl.load(STATE + ABOVE_G + rows, cache_modifier=".cg")
            lo_g_old = tl.load(STATE + LO_G, cache_modifier=".cg")
        at_least = above_g[:, None] + tl.sum(hg, 1)[:, None] - tl.cumsum(hg, 1) + hg  # keys_h >= candidate d
        fill = tl.sum(tl.where(row_ok[:, None], tl.maximum(at_least, floor), 0), 0)  # F(d), [BINS]
        d_g = tl.max(tl.where(fill >= total, bins, -1), 0)
        above_g_new = above_g + tl.sum(tl.where(bins[None, :] > d_g, hg, 0), 1)
        if FIRST:
            lo_g_new = (d_g - 0x80).to(tl.int64) << shift
        else:
            lo_g_new = lo_g_old + (d_g.to(tl.int64) << shift)
        tl.store(STATE + LO_G, lo_g_new)
        tl.store(STATE + ABOVE_G + rows, above_g_new, mask=row_ok)
        if HAS_FLOOR:
            hf = tl.load(STATE + HIST_F + cells, cache_modifier=".cg")
            tl.store(STATE + HIST_F + cells, zero2)
            if FIRST:
                above_f = tl.zeros([H_PAD], dtype=tl.int64)
                lo_f_old = tl.zeros([H_PAD], dtype=tl.int64)
            else:
                above_f = tl.load(STATE + ABOVE_F + rows, cache_modifier=".cg")
                lo_f_old = tl.load(STATE + LO_F + rows, cache_modifier=".cg")
            at_least_f = above_f[:, None] + tl.sum(hf, 1)[:, None] - tl.cumsum(hf, 1) + hf
            d_f = tl.max(tl.where(at_least_f >= floor, bins[None, :], -1), 1)  # [H_PAD]
            above_f_new = above_f + tl.sum(tl.where(bins[None, :] > d_f[:, None], hf, 0), 1)
            if FIRST:
                lo_f_new = (d_f - 0x80).to(tl.int64) << shift
            else:
                lo_f_new = lo_f_old + (d_f.to(tl.int64) << shift)
            tl.store(STATE + ABOVE_F + rows, above_f_new, mask=row_ok)
            tl.store(STATE + LO_F + rows, lo_f_new, mask=row_ok)
        if LAST:  # every byte known: lo_g = g, lo_f = f_h; head h keeps the keys >= min(f_h, g)
            count_g = tl.sum(tl.where(bins[None, :] == d_g, at_least, 0), 1)  # keys_h >= g
            if HAS_FLOOR:
                cut = tl.minimum(lo_f_new, lo_g_new)
                kept = tl.maximum(count_g, floor)
            else:
                cut = tl.zeros([H_PAD], dtype=tl.int64) + lo_g_new
                kept = count_g
            tl.store(STATE + CUT + rows, cut, mask=row_ok)
            tl.store(STATE + WIDTH, tl.max(tl.where(row_ok, kept, 0), 0))
        tl.store(STATE + TICKET, 0)  # every program of this pass has drawn: reset for the next pass


def triton_ada_cuts(keys: torch.Tensor, floor: int, total: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `naive_ada_cuts`: 8 launches of one radix-pass kernel (a byte of the key each) after one
    zero fill, no torch.topk, no host sync. The width stays on the device (0-dim int64)."""
    from .kv_select_naive import _check_ada_budget

    if keys.dim() != 2 or keys.dtype != torch.int64:
        raise ValueError(f"expected int64 keys [H, T], got {keys.dtype} {tuple(keys.shape)}")
    num_heads, seq_len = keys.shape
    _check_ada_budget(num_heads, seq_len, floor, total)
    if keys.stride(-1) != 1:
        keys = keys.contiguous()
    h_pad = triton.next_power_of_2(num_heads)
    layout = _ada_state_layout(h_pad)
    state = torch.zeros(layout["size"], device=keys.device, dtype=torch.int64)
    grid = (num_heads, triton.cdiv(seq_len, ADA_BLOCK))
    for step in range(ADA_PASSES):
        _ada_radix_pass_kernel[grid](
            keys, state, keys.stride(0), seq_len, num_heads, floor, total, 8 * (ADA_PASSES - 1 - step),
            H_PAD=h_pad, BINS=ADA_BINS, BLOCK=ADA_BLOCK, FIRST=step == 0, LAST=step == ADA_PASSES - 1,
            HAS_FLOOR=floor > 0, num_warps=8,
        )
    return state[layout["cut"]:layout["cut"] + num_heads], state[layout["width"]]
