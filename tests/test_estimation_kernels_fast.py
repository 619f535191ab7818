"""Session-2 estimation paths against their definitions: banded window sums (several key-tile runs per sample, so
the run-edge atomics are exercised) vs the fp32 reference and the first (atomic) kernel; `threshold_topk` vs
`stable_topk` entry for entry (it must select exactly the same indices)."""
import pytest
import torch

from sparse_attn.kernels.estimation import naive_last_window_sums, stable_topk
from sparse_attn.kernels.estimation.topk import kth_largest, threshold_topk
from sparse_attn.kernels.estimation.triton import triton_last_window_sums


def packed(lengths, hq, hkv, head_dim, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(sum(lengths), h, head_dim, generator=gen) for h in (hq, hkv))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, cu


def rel_err(got, want):
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("window", [64, 100])
def test_banded_sums_over_several_runs_match_reference(window):
    lengths = (700, 451, 65)  # 700 tokens = 11 key tiles: 2-3 runs per (sample, head); a short odd sample too
    q, k, cu = packed(lengths, 4, 2, 64, seed=window)  # GQA 2:1, batch of 3
    vertical, slash = triton_last_window_sums(q, k, cu, window, variant="banded")
    want_v, want_s = naive_last_window_sums(q, k, cu, window)
    assert torch.isfinite(vertical).all() and torch.isfinite(slash).all()
    assert rel_err(vertical, want_v) < 1e-5 and rel_err(slash, want_s) < 1e-5
    # the first kernel computes the same sums; the banded one is deterministic (atomics add at most two terms)
    old_v, old_s = triton_last_window_sums(q, k, cu, window, variant="atomic")
    assert rel_err(vertical, old_v) < 1e-5 and rel_err(slash, old_s) < 1e-5
    again_v, again_s = triton_last_window_sums(q, k, cu, window, variant="banded")
    assert torch.equal(vertical, again_v) and torch.equal(slash, again_s)
    # beyond each sample's length nothing is written but zeros (no stray sums from the next sample)
    for b, n in enumerate(lengths):
        assert not vertical[b, :, n:].any() and not slash[b, :, n:].any()


def test_unknown_variant_raises():
    q, k, cu = packed((70,), 2, 1, 64, seed=0)
    with pytest.raises(ValueError, match="variant"):
        triton_last_window_sums(q, k, cu, 16, variant="fast")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("given_kth", [False, True])
def test_threshold_topk_equals_stable_topk(seed, descending, given_kth):
    gen = torch.Generator().manual_seed(seed)
    n = 53 + seed
    values = torch.tensor([-2.0, -0.0, 0.0, 0.5, 1.0, 3.0, float("-inf")])
    scores = values[torch.randint(len(values), (2, 3, n), generator=gen)]  # ties everywhere
    scores[1, 0] = torch.randn(n, generator=gen)
    counts = torch.randint(0, n + 1, (2, 3), generator=gen)
    counts[0, 0] = 0
    kth = kth_largest(scores, counts) if given_kth else None
    got = threshold_topk(scores, counts, kth=kth, descending=descending)
    want = stable_topk(scores, counts, descending=descending)
    assert torch.equal(got, want)
