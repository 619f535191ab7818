"""The "skew_gather" window-sums pass (`_window_sums_skew`: band-sum tiles, one diagonal extraction per key tile)
against the fp32 PyTorch reference and the banded pass, on the CPU interpreter.

Covered: ring sizes NQ 1 / 2 / 4, queries reloaded per key tile or resident, windows shorter than a chunk (64, 100) and
spanning several chunks (300), several runs of key tiles per (sample, head) (the run-edge atomics), GQA 2:1 and 4:1,
batches with samples shorter than the window, head dims 64 and 128, bit-identical repeats, nothing written past a
sample's end, NaN-poisoned query rows outside the window, and the VerticalSlash / FlexPrefill selections built on
top (same indices as with the banded pass and the reference).
"""
import pytest
import torch

import sparse_attn.kernels.estimation.triton as est
from sparse_attn.kernels.estimation import naive_last_window_sums

from .test_estimation_kernels_fast import packed, rel_err

VARIANT = "skew_gather"


def check_sums(vertical, slash, q, k, cu, window, lengths):
    want_v, want_s = naive_last_window_sums(q, k, cu, window)
    assert vertical.shape == want_v.shape and slash.shape == want_s.shape
    assert torch.isfinite(vertical).all() and torch.isfinite(slash).all()
    assert rel_err(vertical, want_v) < 1e-5 and rel_err(slash, want_s) < 1e-5
    assert float((slash - want_s).abs().max()) < 1e-4 * float(want_s.abs().max())
    for b, n in enumerate(lengths):
        # each window query's probabilities sum to 1: both sums add up to the window size per head
        w = min(window, n)
        assert torch.allclose(vertical[b, :, :n].sum(-1), torch.full((q.shape[1],), float(w)), rtol=1e-4)
        assert torch.allclose(slash[b, :, :n].sum(-1), torch.full((q.shape[1],), float(w)), rtol=1e-4)
        # beyond each sample's length nothing is written but zeros (no stray sums from the next sample)
        assert not vertical[b, :, n:].any() and not slash[b, :, n:].any()


@pytest.fixture
def launch(monkeypatch):
    """Set the ring size NQ and Q residency of the skew pass (8 warps, 2 stages: the interpreter ignores both)."""
    def set_nq(nq, resident=False):
        monkeypatch.setattr(est, "SKEW_LAUNCH", {VARIANT: (nq, 8, 2, int(resident))})
    return set_nq


@pytest.mark.parametrize("resident", [False, True])
def test_skew_sums_match_reference_and_banded(resident, launch):
    variant = VARIANT
    launch(4, resident)
    lengths = (1601, 451, 65)  # 1601 tokens = 26 key tiles: 4 runs of >= 6 tiles per (sample, head); short samples
    q, k, cu = packed(lengths, 4, 2, 64, seed=3)  # GQA 2:1, batch of 3
    window = 100  # two of the four query blocks of the chunk are (partly) padding
    vertical, slash = est.triton_last_window_sums(q, k, cu, window, variant=variant)
    check_sums(vertical, slash, q, k, cu, window, lengths)
    band_v, band_s = est.triton_last_window_sums(q, k, cu, window, variant="banded")
    assert rel_err(vertical, band_v) < 1e-5 and rel_err(slash, band_s) < 1e-5
    again_v, again_s = est.triton_last_window_sums(q, k, cu, window, variant=variant)
    assert torch.equal(vertical, again_v) and torch.equal(slash, again_s)  # at most two atomic addends per band


@pytest.mark.parametrize("nq,resident", [(1, False), (1, True), (2, False), (2, True), (4, True)])
def test_skew_ring_sizes_and_chunks(nq, resident, launch):
    variant = VARIANT
    launch(nq, resident)
    lengths = (833, 300, 37)  # a sample exactly the window long, one shorter than a query block
    q, k, cu = packed(lengths, 4, 1, 128, seed=nq)  # GQA 4:1, head dim 128
    window = 300  # 5 query blocks: 2 chunks at NQ 4, 3 at NQ 2, 5 at NQ 1
    vertical, slash = est.triton_last_window_sums(q, k, cu, window, variant=variant)
    check_sums(vertical, slash, q, k, cu, window, lengths)


def test_skew_window_one_block_and_tiny_samples(launch):
    variant = VARIANT
    launch(4)
    lengths = (459, 64, 1, 63)
    q, k, cu = packed(lengths, 2, 2, 64, seed=5)  # no GQA
    vertical, slash = est.triton_last_window_sums(q, k, cu, 64, variant=variant)
    check_sums(vertical, slash, q, k, cu, 64, lengths)


@pytest.mark.parametrize("resident", [False, True])
def test_skew_ignores_query_rows_outside_the_window(resident, launch):
    """Only the window rows of q are read: NaN everywhere else changes nothing."""
    launch(4, resident)
    lengths = (700, 130)
    q, k, cu = packed(lengths, 4, 2, 64, seed=7)
    window = 100
    want_v, want_s = est.triton_last_window_sums(q, k, cu, window, variant=VARIANT)
    poisoned = q.clone()
    for b, n in enumerate(lengths):
        start = int(cu[b])
        poisoned[start: start + n - window] = float("nan")
    got_v, got_s = est.triton_last_window_sums(poisoned, k, cu, window, variant=VARIANT)
    assert torch.equal(got_v, want_v) and torch.equal(got_s, want_s)


def test_skew_rejects_bad_launch(monkeypatch):
    monkeypatch.setattr(est, "SKEW_LAUNCH", {VARIANT: (3, 8, 2)})
    q, k, cu = packed((70,), 2, 1, 64, seed=0)
    with pytest.raises(ValueError, match="NQ"):
        est.triton_last_window_sums(q, k, cu, 16, variant=VARIANT)


@pytest.mark.parametrize("name", ["vertical_slash", "flexprefill"])
def test_selection_with_skew_sums_equals_banded_and_reference(name, monkeypatch, launch):
    """The library path (`variant=None` -> DEFAULT_VARIANT) with the skew pass selects the same verticals and
    slashes as with the banded pass and as the naive backend."""
    from sparse_attn.methods.flexprefill import FlexPrefill
    from sparse_attn.methods.vertical_slash import VerticalSlash

    launch(4)
    method = (VerticalSlash(vertical_size=64, slash_size=96, approximation_size=128) if name == "vertical_slash"
              else FlexPrefill(approximation_size=128, min_budget=64))
    q, k, cu = packed((1100, 333), 4, 2, 64, seed=13)
    selections = {}
    for variant in ("banded", VARIANT):
        monkeypatch.setattr(est, "DEFAULT_VARIANT", variant)
        selections[variant] = method.select(q, k, cu, backend="triton")
    selections["naive"] = method.select(q, k, cu, backend="naive")
    fields = ("vertical_idx", "vertical_count", "slash_offsets", "slash_count")
    for other in ("banded", "naive"):
        for field in fields:
            assert torch.equal(getattr(selections[VARIANT], field), getattr(selections[other], field)), (other, field)


@pytest.mark.parametrize("threshold, expected", [(1, "skew_gather"), (10 ** 9, "banded")])
def test_auto_variant_picks_by_length(threshold, expected, monkeypatch):
    """`variant=None` with DEFAULT_VARIANT "auto" runs skew_gather from SKEW_MIN_LENGTH tokens (the longest sequence)
    and banded below: the same sums, bit for bit, as naming that variant."""
    monkeypatch.setattr(est, "DEFAULT_VARIANT", "auto")
    monkeypatch.setattr(est, "SKEW_MIN_LENGTH", threshold)
    q, k, cu = packed((301, 77), 4, 2, 64, seed=11)
    got = est.triton_last_window_sums(q, k, cu, 64)
    want = est.triton_last_window_sums(q, k, cu, 64, variant=expected)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    check_sums(*got, q, k, cu, 64, (301, 77))
    with pytest.raises(ValueError, match="variant must be one of"):
        est.triton_last_window_sums(q, k, cu, 64, variant="fastest")


@pytest.mark.parametrize("lengths,window,dtype", [((700, 451, 65), 256, torch.float16),
                                                  ((1601, 37), 300, torch.float32)])
def test_skew_prep_kernel_equals_the_torch_preparation(lengths, window, dtype):
    """`_skew_prep` (one launch: window queries scaled and padded, lse merged from the statistics partials) gives the
    inputs the torch preparation gave: the same queries, the same lse (+inf past each window), NaN never leaks."""
    q, k, cu = packed(lengths, 4, 2, 64, seed=len(lengths))
    q, k = q.to(dtype), k.to(dtype)
    q_nan = q.clone()
    q_nan[:lengths[0] - window] = float("nan")  # rows before the first window: must never be read
    scale = 64 ** -0.5
    qk_scale = scale * est.LOG2E
    longest = max(lengths)
    w_max = min(window, longest)
    w_pad = -(-w_max // 256) * 256
    stats = (q_nan, k, cu, window, qk_scale, w_max, longest, 64, 64)
    part_max, part_sum = est._row_statistics(*stats, merge=False)
    row_max, row_inv_sum = est._row_statistics(*stats)
    want_q, want_lse = est._skew_inputs_torch(q_nan, cu, window, qk_scale, w_max, w_pad, row_max, row_inv_sum)
    got_q = torch.full_like(want_q, float("nan"))
    got_lse = torch.full_like(want_lse, float("nan"))
    est._skew_prep[(len(lengths) * 4, w_pad // 64)](
        q_nan, cu, part_max, part_sum, got_q, got_lse, qk_scale, 4, window, w_max, part_max.shape[2],
        q_nan.stride(0), q_nan.stride(1), part_max.stride(0), part_max.stride(1), part_max.stride(2),
        got_q.stride(0), got_q.stride(1), got_q.stride(2), got_lse.stride(0), got_lse.stride(1),
        HEAD_DIM=64, BLOCK_R=64)
    assert torch.equal(got_q, want_q)
    assert torch.equal(torch.isinf(got_lse), torch.isinf(want_lse))
    finite = torch.isfinite(want_lse)
    torch.testing.assert_close(got_lse[finite], want_lse[finite], rtol=1e-6, atol=1e-6)
