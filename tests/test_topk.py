"""`stable_topk` (int64-key top-k) against a stable full sort, the definition of its tie rule."""
import pytest
import torch

from sparse_attn.kernels.estimation import stable_topk
from sparse_attn.kernels.estimation.topk import ordered_keys


def sorted_oracle(scores, counts, descending=False):
    """The definition: stable descending sort of each row, cut at counts, indices re-sorted, -1 padded."""
    rows = []
    kmax = int(counts.max())
    for row, count in zip(scores.reshape(-1, scores.shape[-1]), counts.reshape(-1).tolist()):
        order = torch.sort(row, descending=True, stable=True).indices[:count]
        order = sorted(order.tolist(), reverse=descending)
        rows.append(order + [-1] * (kmax - count))
    return torch.tensor(rows, dtype=torch.int32).reshape(*scores.shape[:-1], kmax)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("descending", [False, True])
def test_matches_stable_sort_with_many_ties(seed, descending):
    gen = torch.Generator().manual_seed(seed)
    n = 37 + 11 * seed
    # few distinct values -> ties everywhere; signed zeros, infinities and large magnitudes mixed in
    values = torch.tensor([-3.5, -1.0, -0.0, 0.0, 0.25, 2.0, 1e30, -1e30, float("inf"), float("-inf")])
    scores = values[torch.randint(len(values), (3, 5, n), generator=gen)]
    scores[0] = torch.randn(5, n, generator=gen)  # one batch of distinct values
    counts = torch.randint(0, n + 1, (3, 5), generator=gen)
    got = stable_topk(scores, counts, descending=descending)
    torch.testing.assert_close(got, sorted_oracle(scores, counts, descending), rtol=0, atol=0)


def test_keys_order_floats_like_comparison():
    x = torch.tensor([float("-inf"), -1e30, -2.0, -1e-40, -0.0, 0.0, 1e-40, 3.0, 1e30, float("inf")])
    keys = ordered_keys(x) >> 32
    assert torch.all(keys[1:] >= keys[:-1])
    assert keys[4] == keys[5]  # -0.0 == 0.0
    assert int((keys[1:] > keys[:-1]).sum()) == len(x) - 2  # strictly increasing elsewhere


def test_counts_out_of_range_raise():
    with pytest.raises(ValueError, match="counts must lie"):
        stable_topk(torch.randn(2, 4), torch.tensor([1, 5]))
    with pytest.raises(ValueError, match="must match"):
        stable_topk(torch.randn(2, 4), torch.tensor([1]))
    assert stable_topk(torch.randn(2, 4), torch.tensor([0, 0])).shape == (2, 0)
