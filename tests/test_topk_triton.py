"""`triton_stable_topk` (radix select + compaction, interpreter) against `stable_topk` entry for entry, and the
Vertical-Slash selection through the library with it (backend "triton") against the reference path.

Shapes are tiny (the interpreter); `block` is lowered so that rows span several programs and several tiles per
program, which exercises the offsets between programs and the running offsets inside one."""
import pytest
import torch

from sparse_attn import VerticalSlash
from sparse_attn.kernels.estimation import last_window_sums, stable_topk
from sparse_attn.kernels.estimation import topk_triton
from sparse_attn.kernels.estimation.topk_triton import triton_stable_topk
from sparse_attn.methods._prefill import select_vertical_slash

SENTINEL = 7777  # poison of the output: every slot must be overwritten (an index or -1)


def check(scores, counts, descending, kmax=None, **launch):
    """Run the kernel into a poisoned output and compare with stable_topk (padded with -1 to kmax)."""
    want = stable_topk(scores, counts, descending=descending)
    kmax = want.shape[-1] if kmax is None else kmax
    out = torch.full((*scores.shape[:-1], kmax), SENTINEL, dtype=torch.int32)
    got = triton_stable_topk(scores, counts, kmax, descending=descending, out=out, **launch)
    assert got.data_ptr() == out.data_ptr()
    pad = torch.full((*scores.shape[:-1], kmax - want.shape[-1]), -1, dtype=torch.int32)
    want = torch.cat([want, pad], -1)
    assert got.dtype == torch.int32 and got.shape == want.shape
    assert torch.equal(got, want), (got, want)


def mixed_counts(rows, n, gen):
    """Per-row counts with 0, n and random values in between (rows >= 3), else random."""
    counts = torch.randint(0, n + 1, (rows,), generator=gen)
    if rows >= 3:
        counts[0], counts[1] = 0, n
    return counts


@pytest.mark.parametrize("n, rows, block", [(1, 1, 16), (63, 6, 16), (700, 4, 64), (4099, 3, 256)])
@pytest.mark.parametrize("descending", [False, True])
def test_random_scores(n, rows, block, descending):
    gen = torch.Generator().manual_seed(n + descending)
    scores = torch.randn(rows, n, generator=gen)
    check(scores, mixed_counts(rows, n, gen), descending, block=block)


@pytest.mark.parametrize("n, block", [(63, 16), (700, 64), (4099, 256)])
@pytest.mark.parametrize("descending", [False, True])
def test_heavy_ties_signed_zeros_and_infinities(n, block, descending):
    gen = torch.Generator().manual_seed(10 * n + descending)
    values = torch.tensor([-2.0, -0.0, 0.0, 0.5, 1.0, 3.0, float("-inf"), float("inf")])
    scores = values[torch.randint(len(values), (5, n), generator=gen)]  # few values: ties everywhere
    scores[2] = 0.25  # an all-equal row
    scores[3] = float("-inf")  # a row of -inf only: ties from index 0 up
    scores[4, ::2] = -0.0  # -0.0 and 0.0 are one value (ordered_keys' rule)
    scores[4, 1::2] = 0.0
    counts = mixed_counts(5, n, gen)
    counts[2:] = torch.randint(1, n + 1, (3,), generator=gen)
    check(scores, counts, descending, block=block)


@pytest.mark.parametrize("descending", [False, True])
def test_forced_entries_and_varlen_candidates(descending):
    """The VS layout: +inf forced entries, -inf past each row's length; counts above the finite entries take -inf
    entries in index order, as stable_topk does."""
    gen = torch.Generator().manual_seed(3)
    n = 700
    lens = torch.tensor([700, 513, 64, 1, 300, 90])
    scores = torch.rand(6, n, generator=gen).round(decimals=2)  # ties among the real scores too
    scores[:, :4] = float("inf")
    scores = scores.masked_fill(torch.arange(n)[None] >= lens[:, None], float("-inf"))
    counts = torch.tensor([512, 512, 64, 1, 310, 200])  # rows 4 and 5 exceed their finite entries
    check(scores, counts, descending, block=64)


def test_wider_output_batched_rows_and_programs_per_row():
    """kmax above every count pads with -1; [B, H, n] rows and int32 counts; one and many programs per row."""
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(2, 3, 201, generator=gen).round(decimals=1)
    counts = torch.randint(0, 40, (2, 3), generator=gen, dtype=torch.int32)
    for parts, descending in ((1, False), (4, True)):
        check(scores, counts, descending, kmax=57, block=32, programs_per_row=parts)


def test_zero_width_and_empty_rows():
    scores = torch.randn(3, 10)
    assert triton_stable_topk(scores, torch.zeros(3, dtype=torch.long), 0).shape == (3, 0)
    assert triton_stable_topk(torch.randn(0, 10), torch.zeros(0, dtype=torch.long), 4).shape == (0, 4)
    check(scores, torch.zeros(3, dtype=torch.long), False, kmax=5, block=16)  # all -1


def test_bad_arguments_raise():
    scores = torch.randn(2, 8)
    with pytest.raises(ValueError, match="kmax"):
        triton_stable_topk(scores, torch.tensor([1, 2]), 9)
    with pytest.raises(ValueError, match="counts"):
        triton_stable_topk(scores, torch.tensor([1]), 2)
    with pytest.raises(ValueError, match="out"):
        triton_stable_topk(scores, torch.tensor([1, 2]), 2, out=torch.empty(2, 3, dtype=torch.int32))


def packed(lengths, hq, hkv, head_dim, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(sum(lengths), h, head_dim, generator=gen) for h in (hq, hkv))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, cu


def selections_equal(a, b):
    a, b = a.trimmed(), b.trimmed()  # the one-pass Triton index may be wider (-1 padded), see trimmed()
    for name in ("vertical_idx", "vertical_count", "slash_offsets", "slash_count", "block_count", "block_offset",
                 "column_count", "column_index"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def spy_on_triton_topk(monkeypatch):
    calls = []
    real = topk_triton.triton_stable_topk

    def spy(*args, **kwargs):
        calls.append(args[2])  # kmax
        return real(*args, **kwargs)

    monkeypatch.setattr(topk_triton, "triton_stable_topk", spy)
    return calls


def test_select_vertical_slash_triton_topk_equals_reference(monkeypatch):
    """Same scores, varlen batch (the short sample has fewer candidates than the budget): the Triton top-k path
    (backend "triton", host-known max_budget) selects exactly what the reference path selects."""
    calls = spy_on_triton_topk(monkeypatch)
    gen = torch.Generator().manual_seed(5)
    lengths = (150, 97)
    cu = torch.tensor([0, 150, 247], dtype=torch.int32)
    vertical = torch.rand(2, 3, 150, generator=gen).round(decimals=2)  # ties
    slash = torch.rand(2, 3, 150, generator=gen)
    for b, n in enumerate(lengths):
        vertical[b, :, n:] = 0.0
        slash[b, :, n:] = 0.0
    budgets = (20, 100)  # slash budget 100 > 97: the short sample keeps all its offsets
    v_budget, s_budget = (torch.full((2, 3), size, dtype=torch.long) for size in budgets)
    want = select_vertical_slash(cu, vertical, slash, v_budget, s_budget, backend="naive")
    got = select_vertical_slash(cu, vertical, slash, v_budget, s_budget, backend="triton", max_budget=budgets)
    assert calls == list(budgets)
    selections_equal(got, want)


def test_vertical_slash_select_uses_triton_topk_and_matches_reference(monkeypatch):
    """VerticalSlash.select on the Triton backend passes its sizes as max_budget (no read-back) and selects what
    the reference top-k selects on the same window sums."""
    calls = spy_on_triton_topk(monkeypatch)
    method = VerticalSlash(vertical_size=24, slash_size=72, approximation_size=32)
    q, k, cu = packed((160, 75), 4, 2, 64, seed=6)  # GQA 2:1, the second sample shorter than the slash size
    got = method.select(q, k, cu, backend="triton")
    assert calls == [24, 72]
    vertical, slash = last_window_sums(q, k, cu, 32, backend="triton")

    def budget(size):
        return torch.full((2, 4), size, dtype=torch.long)

    want = select_vertical_slash(cu, vertical, slash, budget(24), budget(72), backend="naive")
    selections_equal(got, want)


@pytest.mark.parametrize("num_forced,descending", [(4, False), (64, True)])
def test_forcing_on_the_fly_equals_forced_scores(num_forced, descending):
    """lens / num_forced: the same selection as stable_topk over forced_scores (first entries +inf, entries past each
    sample's length -inf), for [B, H, n] scores of varlen samples, one shorter than num_forced."""
    from sparse_attn.methods._prefill import forced_scores
    gen = torch.Generator().manual_seed(num_forced)
    lens = torch.tensor([700, 31, 450])
    scores = torch.rand(3, 2, 700, generator=gen)
    scores[1] = float("nan")  # past the sample's length: never read as a score (forced to -inf first)
    scores[1, :, :31] = torch.rand(2, 31, generator=gen)
    counts = torch.minimum(torch.tensor([[80, 5], [31, 31], [200, 0]]), lens[:, None])
    want = stable_topk(forced_scores(torch.nan_to_num(scores, nan=0.0), lens, num_forced), counts, descending)
    got = triton_stable_topk(scores, counts, want.shape[-1], descending, programs_per_row=3, block=64, lens=lens,
                             num_forced=num_forced)
    assert torch.equal(got, want)
