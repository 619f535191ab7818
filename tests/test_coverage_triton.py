"""triton_budget_and_threshold (kernels/estimation/coverage_triton.py) against the torch `budget_and_threshold`
(sparse_attn/methods/flexprefill.py), entry for entry, and FlexPrefill.select on both backends.

Runs in the Triton interpreter (TRITON_INTERPRET=1 from conftest.py) at tiny shapes with tiles of 32 entries, so the
early-stopping scans cross tiles: varlen rows (zeros past each sample's length, one sample shorter than the floor,
one shorter than num_forced), peaked rows (a few entries hold most of the mass) and flat ones (the budget reaches
L), alpha 0 / 0.3 / 0.65 / 0.99 / 1.0, num_forced 4 and 64.
"""
import pytest
import torch

from sparse_attn.kernels.estimation.coverage_triton import triton_budget_and_threshold
from sparse_attn.methods.flexprefill import FlexPrefill, budget_and_threshold

from .test_estimation_kernels_fast import packed

N = 300
LENS = torch.tensor([N, 20, 3])  # full row; shorter than the floor (32); shorter than num_forced (4 and 64)
FLOOR = 32  # the 512 floor of a 128K row, scaled down
HEADS = 4  # rows 0-1 peaked, rows 2-3 flat
ALPHAS = [0.0, 0.3, 0.65, 0.99, 1.0]


def exact_rows(seed):
    """[3, HEADS, N] distributions in multiples of 1/1024 (every partial sum exact in fp32), zeros past each length:
    peaked heads put 3 x 256 units on a few entries and spread the rest; flat heads spread 1024 units evenly."""
    gen = torch.Generator().manual_seed(seed)
    units = torch.zeros(len(LENS), HEADS, N)
    for b, length in enumerate(LENS.tolist()):
        for h in range(HEADS):
            spread = torch.full((length,), 1024 // length, dtype=torch.float32)
            spread[torch.randperm(length, generator=gen)[:1024 % length]] += 1  # 1024 units in all
            if h < 2 and length > 3:  # peaked: 768 units on 3 random entries, 256 scattered at random
                spread = torch.zeros(length)
                spread[torch.randperm(length, generator=gen)[:3]] = 256
                spread.index_put_((torch.randint(0, length, (256,), generator=gen),), torch.ones(256),
                                  accumulate=True)
            units[b, h, :length] = spread[torch.randperm(length, generator=gen)]
    assert bool((units.sum(-1) == 1024).all()) and bool((units >= 0).all())
    return units / 1024


def random_rows(seed, power):
    """[3, HEADS, N] random distributions (`rand ** power`: larger power = more peaked), zeros past each length."""
    gen = torch.Generator().manual_seed(seed)
    d = torch.rand(len(LENS), HEADS, N, generator=gen, dtype=torch.float64) ** power
    d = d.masked_fill(torch.arange(N)[None, None] >= LENS[:, None, None], 0)
    return (d / d.sum(-1, keepdim=True)).float()


def both(distribution, alpha, num_forced):
    want = budget_and_threshold(distribution, alpha, FLOOR, LENS, num_forced, backend="naive")
    values, order = torch.sort(distribution.float(), dim=-1, descending=True)
    got = triton_budget_and_threshold(values, order, alpha, FLOOR, LENS, num_forced, block=32)
    assert got[0].dtype == torch.int64 and got[0].shape == (len(LENS), HEADS)
    assert got[1].dtype == torch.float32 and got[1].shape == (len(LENS), HEADS, 1)
    return got, want


def assert_same(got, want, what):
    for name, g, w in zip(("budget", "kth"), got, want):
        assert torch.equal(g, w), f"{what}: {name} differs\n{g.squeeze(-1)}\nvs\n{w.squeeze(-1)}"


@pytest.mark.parametrize("num_forced", [4, 64])
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_distributions_match_torch(seed, alpha, num_forced):
    """Partial sums exact in fp32 (multiples of 1/1024): no rounding anywhere, so equality is required."""
    got, want = both(exact_rows(seed), alpha, num_forced)
    assert_same(got, want, f"seed={seed} alpha={alpha} num_forced={num_forced}")


def test_exact_distributions_cover_the_edge_cases():
    """The cases above reach what they claim: the floor, L (flat rows), L < floor, need <= 0 (+inf)."""
    budget = both(exact_rows(0), 1.0, 64)[1][0]
    assert budget[0].tolist() == [N] * HEADS  # all the mass: the budget reaches L
    budget, kth = both(exact_rows(0), 0.99, 64)[1]
    assert bool((FLOOR < budget[0]).all() & (budget[0] < N).all())  # coverage between the floor and L
    assert budget[1].tolist() == [20] * HEADS and budget[2].tolist() == [3] * HEADS  # L below the floor
    assert bool(torch.isinf(kth[1:]).all())  # the forced entries fill those budgets (need <= 0)
    budget, kth = both(exact_rows(0), 0.0, 4)[1]
    assert budget[0].tolist() == [FLOOR] * HEADS and bool(torch.isfinite(kth[0]).all())  # the floor


@pytest.mark.parametrize("num_forced", [4, 64])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.65, 0.99])
@pytest.mark.parametrize("power", [1, 8])
def test_random_distributions_match_torch(power, alpha, num_forced):
    """Random rows, no tolerance. These seeds put no partial sum within rounding of alpha (checked: they pass).
    alpha = 1.0 is left to the exact rows: on a random row summing to ~1 every partial sum of the tail lies within
    an ulp of 1.0, so where the running sum first exceeds 1.0 is decided by rounding alone (torch's CPU cumsum
    accumulates in fp64, the kernel in fp32), see the module docstring of coverage_triton.py."""
    got, want = both(random_rows(power, power), alpha, num_forced)
    assert_same(got, want, f"power={power} alpha={alpha} num_forced={num_forced}")


def test_dispatch_and_bad_arguments():
    d = random_rows(3, 4)
    assert_same(budget_and_threshold(d, 0.65, FLOOR, LENS, 4, backend="triton"),
                budget_and_threshold(d, 0.65, FLOOR, LENS, 4), "backend='triton' vs the CPU default (torch)")
    values, order = torch.sort(d, dim=-1, descending=True)
    with pytest.raises(ValueError, match="lens"):
        triton_budget_and_threshold(values, order, 0.65, FLOOR, LENS[:2], 4)
    with pytest.raises(ValueError, match=r"\[B, Hq, n\]"):
        triton_budget_and_threshold(values[0], order[0], 0.65, FLOOR, LENS, 4)


@pytest.mark.parametrize("alpha", [0.3, 0.9])
def test_flexprefill_select_same_on_both_backends(alpha):
    """FlexPrefill.select through backend='triton' (window sums, budgets and thresholds, selection, index) picks the
    same verticals and slashes as backend='naive' on a varlen batch."""
    method = FlexPrefill(alpha=alpha, approximation_size=64, min_budget=64)
    q, k, cu = packed((301, 90, 40), 4, 2, 64, seed=5)
    got = method.select(q, k, cu, backend="triton")
    want = method.select(q, k, cu, backend="naive")
    for field in ("vertical_idx", "vertical_count", "slash_offsets", "slash_count"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field
