"""FlexPrefill's coverage budget and selection threshold in Triton: prefix scans that stop early, no host sync.

`budget_and_threshold` (sparse_attn/methods/flexprefill.py, the reference) sorts each row descending and then runs
two fp32 cumsums (the coverage) and two int32 cumsums (the count of non-forced valid entries) over whole rows plus
~10 elementwise ops: ~0.75 ms of scans per layer at 128K tokens (32 heads x 131072) on an H200, next to the sort.
But both answers lie in a short prefix of the sorted row (budgets are ~512-4000 entries):

* coverage: `covered = #{p : running mass at p <= alpha}`; the values are >= 0, so the running mass never
  decreases and the scan stops at the first tile whose running mass exceeds alpha (or at the sample's length `L`,
  past which the budget `min(L, max(floor, covered + 1))` cannot grow);
* threshold: `slot = #{p : #free entries in [0, p] < need}` with `need = budget - min(L, num_forced)` and "free" =
  sorted slot holding a valid non-forced entry (`num_forced <= order < L`); the scan stops at the tile where the
  count reaches `need`. `kth = values[min(slot, n - 1)]`, +inf when `need <= 0` (the forced entries fill the budget).

`_coverage_kernel`: one program per row (B * Hq rows), tiles of BLOCK entries with a running fp32 / int32 carry and
`tl.cumsum` inside the tile; two `while` loops, each ending as soon as its answer is known.

Rounding: the running fp32 sum is `carry + tl.cumsum(tile)` (a scan inside each tile, tile sums carried), not
torch.cumsum's order (torch on the CPU even accumulates in fp64 and rounds each output to fp32; on CUDA it runs its
own fp32 scan), so a partial sum can differ from torch's by a few ulps. `covered`, hence the budget, then differs
by ONE only where a partial sum lies within that rounding of alpha (cast to fp32, as torch compares). Measured on
the CPU against torch (interpreter, 2304 synthetic rows of 131072, alpha 0.3-0.95): 13 rows (0.6 %) off by one,
these rows had budgets of 10K-60K entries (flat: tiny steps near alpha, long sums); budgets of a few thousand
accumulate less rounding and take larger steps near alpha, so expect fewer (not measured). On the H200 vs
torch's CUDA cumsum, alpha 0.99 on `rand ** 16` rows: 8 of 32 rows off by one (entries at the boundary hold
~1e-7 of the mass, below the sums' rounding; tests/gpu/test_coverage_gpu.py). alpha = 1.0 on a row summing to ~1 is the degenerate
case: the whole tail sits within rounding of alpha. The free-entry count is an exact integer scan: for the same
budget `kth` matches torch exactly.
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

__all__ = ["triton_budget_and_threshold"]

BLOCK = 1024  # sorted entries per tile: a budget of ~512-4000 is found within 1-4 tiles


@triton.jit
def _coverage_kernel(VALUES, ORDER, LENS, BUDGET, KTH, stride_v, stride_o, n, rows_per_sample, alpha, floor,
                     NUM_FORCED: tl.constexpr, BLOCK: tl.constexpr):
    """Program `row`: BUDGET[row] (int64) and KTH[row] (fp32) from the row's sorted values and their order."""
    row = tl.program_id(0)
    length = tl.load(LENS + row // rows_per_sample).to(tl.int64)
    vals = VALUES + row.to(tl.int64) * stride_v
    order = ORDER + row.to(tl.int64) * stride_o
    offs = tl.arange(0, BLOCK)
    # coverage: count the positions whose running mass is <= alpha; positions >= L cannot change the budget
    limit = tl.minimum(length, n)
    mass = tl.zeros([], dtype=tl.float32)
    covered = tl.zeros([], dtype=tl.int64)
    start = tl.zeros([], dtype=tl.int64)
    while (start < limit) & (mass <= alpha):
        t = start + offs
        ok = t < limit
        x = tl.load(vals + t, mask=ok, other=0.0)
        running = mass + tl.cumsum(x, 0)
        covered += tl.sum(((running <= alpha) & ok).to(tl.int32), 0).to(tl.int64)
        # the next tile starts from carry + tile sum >= every later partial sum's start: once it exceeds alpha,
        # no later position can count (x >= 0 and fp32 rounding is monotone)
        mass = mass + tl.sum(x, 0)
        start += BLOCK
    budget = tl.minimum(length, tl.maximum(covered + 1, floor))
    tl.store(BUDGET + row, budget)
    # threshold: the sorted slot where the count of free entries (valid, not forced) reaches need
    need = budget - tl.minimum(length, NUM_FORCED)
    free = tl.zeros([], dtype=tl.int64)
    slot = tl.zeros([], dtype=tl.int64)
    start = tl.zeros([], dtype=tl.int64)
    while (start < n) & (free < need):
        t = start + offs
        ok = t < n
        o = tl.load(order + t, mask=ok, other=-1)
        is_free = (ok & (o >= NUM_FORCED) & (o < length)).to(tl.int32)
        count = free + tl.cumsum(is_free, 0).to(tl.int64)
        slot += tl.sum(((count < need) & ok).to(tl.int32), 0).to(tl.int64)
        free += tl.sum(is_free, 0).to(tl.int64)
        start += BLOCK
    kth = tl.load(vals + tl.minimum(slot, n - 1))
    tl.store(KTH + row, tl.where(need <= 0, float("inf"), kth))


def triton_budget_and_threshold(values: torch.Tensor, order: torch.Tensor, alpha: float, floor: int,
                                lens: torch.Tensor, num_forced: int,
                                block: int = BLOCK) -> Tuple[torch.Tensor, torch.Tensor]:
    """`budget_and_threshold` (sparse_attn/methods/flexprefill.py) after its sort, in one launch, no host sync.

    Args:
        values: `[B, Hq, n]` fp32, each row sorted descending (`torch.sort(distribution.float(), -1, True)`),
            non-negative (a distribution with zeros past the sample's length).
        order: `[B, Hq, n]` int (int64 from torch.sort): the original position of each sorted entry.
        alpha: mass to cover (compared in fp32, as torch compares an fp32 tensor with a Python float).
        floor: minimum budget.
        lens: `[B]` sample lengths (any int dtype, on values' device or moved there).
        num_forced: positions `< num_forced` are forced (kept first), not counted as free.
        block: sorted entries per tile (power of 2 >= 16).

    Returns:
        budget `[B, Hq]` int64: `min(L_b, max(floor, #{running mass <= alpha} + 1))`, and kth `[B, Hq, 1]` fp32:
        the sorted value at the slot where the count of free entries reaches `budget - min(L_b, num_forced)`
        (clamped to `n - 1`; +inf when that is <= 0). Equal to the torch reference up to the rounding noted in the
        module docstring (budget off by one only for a partial sum within a few ulps of alpha).
    """
    if values.dim() != 3 or order.shape != values.shape:
        raise ValueError(f"values and order must both be [B, Hq, n] (the sorted rows), got {tuple(values.shape)} "
                         f"and {tuple(order.shape)}")
    if lens.numel() != values.shape[0]:
        raise ValueError(f"lens must hold one length per sample ({values.shape[0]}), got {tuple(lens.shape)}")
    if block & (block - 1) or block < 16:
        raise ValueError(f"block must be a power of 2 >= 16, got {block}")
    batch, heads, num = values.shape
    rows = batch * heads
    budget = torch.empty(batch, heads, dtype=torch.int64, device=values.device)
    kth = torch.empty(batch, heads, 1, dtype=torch.float32, device=values.device)
    if rows == 0 or num == 0:
        if rows:  # empty rows: the reference's budget is min(L, max(floor, 1)); its gather would fail
            raise ValueError("rows of 0 entries have no threshold; the distribution must have n >= 1")
        return budget, kth
    flat = values.reshape(rows, num).float()
    flat = flat if flat.stride(-1) == 1 else flat.contiguous()
    flat_order = order.reshape(rows, num)
    flat_order = flat_order if flat_order.stride(-1) == 1 else flat_order.contiguous()
    lens_arg = lens.to(device=values.device, dtype=torch.int64)
    _coverage_kernel[(rows,)](flat, flat_order, lens_arg, budget, kth, flat.stride(0), flat_order.stride(0), num,
                              heads, float(alpha), int(floor), NUM_FORCED=num_forced, BLOCK=block, num_warps=4)
    return budget, kth
