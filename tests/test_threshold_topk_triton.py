"""triton_threshold_topk (kernels/estimation/topk_triton.py) against threshold_topk (topk.py), entry for entry.

Runs in the Triton interpreter (TRITON_INTERPRET=1 from conftest.py) at tiny shapes: ties at the threshold, +inf
forced entries, -inf tails, counts 0 and n, several programs per row (the offsets between chunks), descending output.
"""
import pytest
import torch

from sparse_attn.kernels.estimation.topk import kth_largest, threshold_topk
from sparse_attn.kernels.estimation.topk_triton import triton_threshold_topk


def rows_with_ties(rows, n, seed, levels):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (rows, n), generator=gen).float() / levels  # few distinct values: ties
    scores[:, :3] = float("inf")  # forced entries
    scores[0, n // 2:] = float("-inf")  # a row with a -inf tail
    return scores


@pytest.mark.parametrize("n,levels,parts", [(700, 5, 4), (4099, 50, 3), (63, 3, 1), (1, 2, 1)])
@pytest.mark.parametrize("descending", [False, True])
def test_equals_threshold_topk(n, levels, parts, descending):
    rows = 5
    scores = rows_with_ties(rows, n, n + levels, levels)
    gen = torch.Generator().manual_seed(n)
    finite = (scores > float("-inf")).sum(-1)
    counts = torch.minimum(torch.randint(0, n + 1, (rows,), generator=gen), finite)
    counts[1] = min(n, int(finite[1]))  # a row kept whole
    counts[2] = 0
    kth = kth_largest(scores, counts)
    want = threshold_topk(scores, counts, kth, descending)
    kmax = int(counts.max())
    got = triton_threshold_topk(scores, counts, kth, kmax, descending, block=64, programs_per_row=parts)
    assert got.shape == want.shape and torch.equal(got, want)


def test_wider_output_is_minus_one_padded_and_bad_arguments_raise():
    scores = rows_with_ties(3, 300, 1, 7)
    counts = torch.tensor([10, 0, 40])
    kth = kth_largest(scores, counts)
    want = threshold_topk(scores, counts, kth)
    got = triton_threshold_topk(scores, counts, kth, 64, block=32, programs_per_row=3)
    assert torch.equal(got[:, :want.shape[1]], want) and bool((got[:, want.shape[1]:] == -1).all())
    with pytest.raises(ValueError, match="kmax"):
        triton_threshold_topk(scores, counts, kth, 301)
    with pytest.raises(ValueError, match="kth"):
        triton_threshold_topk(scores, counts, kth[:2], 40)
