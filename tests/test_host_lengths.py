"""Host sample lengths (`seq_lens`) on the prefill path: same results, validated on the host, cu_seqlens not read.

Every prefill method's `select` / `prefill` takes an optional `seq_lens` (the lengths as Python ints, as the
integrations know them: vLLM's CPU `query_start_loc`, transformers' `Varlen.host_lengths`). With them nothing on the
prefill path reads `cu_seqlens` back from the device (on a GPU that read drains the CUDA queue). Here, on the CPU:
the selections and outputs are bit-identical with and without them, wrong lengths raise a ValueError naming the
problem, and `check_varlen` returns them without touching cu_seqlens' values.
"""
import pytest
import torch

from sparse_attn.kernels._varlen import check_varlen
from sparse_attn.kernels.estimation.pooling import pooled_block_means
from sparse_attn.methods import BlockSparse, Dense, FlexPrefill, VerticalSlash

LENGTHS = (67, 131, 33)  # B = 3, odd lengths: partial 16- and 64-token blocks in every sample
HQ, HKV, D = 4, 2, 64  # GQA group of 2; D = 64 so the Triton kernels (TRITON_INTERPRET=1, conftest) run too


def method_of(name):
    """Tiny budgets that leave pairs out at these lengths (a real selection, not dense)."""
    return {
        "dense": Dense(),
        "vertical_slash": VerticalSlash(vertical_size=8, slash_size=64, approximation_size=16),
        "flexprefill": FlexPrefill(alpha=0.5, approximation_size=16, min_budget=64),
        "block_sparse": BlockSparse(chunk_size=16, top_chunks=3),
    }[name]


def varlen_batch(lengths=LENGTHS, seed=0):
    """q `[N, HQ, D]`, k, v `[N, HKV, D]` fp32 and cu_seqlens `[B+1]` int32 of a packed batch."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    q = torch.randn(n, HQ, D, generator=gen)
    k, v = torch.randn(2, n, HKV, D, generator=gen)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, v, cu


class NoReadBack(torch.Tensor):
    """A cu_seqlens whose values cannot be read on the host: `.tolist()`, `.item()`, `int()`, `bool()` raise."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("cu_seqlens was read back on the host")

    tolist = item = __int__ = __index__ = __bool__ = __float__ = _refuse


def no_read_back(cu):
    return torch.Tensor._make_subclass(NoReadBack, cu)


def selection_fields(selection):
    """The tensors that define a selection (index and pattern), for exact comparison."""
    names = [n for n in ("block_index", "block_count", "vertical_idx", "vertical_count", "slash_offsets",
                         "slash_count", "block_offset", "column_count", "column_index") if hasattr(selection, n)]
    return {n: getattr(selection, n) for n in names}


def assert_same_selection(got, want):
    if hasattr(got, "trimmed"):  # vertical-slash index: compare canonical forms (the builder leaves tails unwritten)
        got, want = got.trimmed(), want.trimmed()
    a, b = selection_fields(got), selection_fields(want)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape and torch.equal(a[name], b[name]), name
    assert torch.equal(got.sparsity(), want.sparsity())


# ------------------------------------------------------------------------------------------------ check_varlen
def test_check_varlen_returns_host_lengths_without_reading_cu_seqlens():
    """With seq_lens the returned lengths are seq_lens, whatever cu_seqlens holds: its values are not read (the caller
    guarantees they match). Here cu_seqlens is deliberately different (valid shape) and cannot even be read back."""
    q, k, v, cu = varlen_batch()
    other = torch.tensor([0, 100, 200, sum(LENGTHS)], dtype=torch.int32)  # same B, other lengths
    assert check_varlen(q, k, other, v, seq_lens=list(LENGTHS)) == list(LENGTHS)
    assert check_varlen(q, k, no_read_back(cu), v, seq_lens=LENGTHS) == list(LENGTHS)
    assert check_varlen(q, k, no_read_back(cu), v, seq_lens=torch.tensor(LENGTHS)) == list(LENGTHS)
    with pytest.raises(AssertionError, match="read back"):  # the guard works: without seq_lens it is read
        check_varlen(q, k, no_read_back(cu), v)
    assert check_varlen(q, k, cu, v) == list(LENGTHS)  # unchanged behaviour without seq_lens


@pytest.mark.parametrize("seq_lens, problem", [
    ([67, 131], "3 samples"),  # wrong count
    ([67, 131, 33, 0], "3 samples"),
    ([67, 131, 34], "sums to 232"),  # sum != N
    ([0, 198, 33], "at least one token"),  # an empty sample
    (torch.tensor([67.0, 131.0, 33.0]), "integer"),
], ids=["too_few", "too_many", "wrong_sum", "zero", "float_tensor"])
def test_check_varlen_rejects_wrong_host_lengths(seq_lens, problem):
    q, k, v, cu = varlen_batch()
    with pytest.raises(ValueError, match=problem):
        check_varlen(q, k, cu, v, seq_lens=seq_lens)


def test_pooled_block_means_with_host_lengths_equals_read_back():
    q, _, _, cu = varlen_batch()
    want = pooled_block_means(q, cu, 16)
    assert torch.equal(pooled_block_means(q, no_read_back(cu), 16, seq_lens=LENGTHS), want)


# ------------------------------------------------------------------------------------------------ the methods
NAIVE = [(name, "naive") for name in ("dense", "vertical_slash", "flexprefill", "block_sparse")]
# the Triton paths the existing tests run on the CPU (interpreter); Dense's "triton" is SDPA per sample
TRITON = [(name, "triton") for name in ("dense", "vertical_slash", "flexprefill", "block_sparse")]


@pytest.mark.parametrize("name, backend", NAIVE + TRITON, ids=lambda x: x)
def test_select_and_prefill_with_host_lengths_are_identical(name, backend):
    q, k, v, cu = varlen_batch()
    method = method_of(name)
    want_sel = method.select(q, k, cu, backend=backend)
    got_sel = method.select(q, k, cu, backend=backend, seq_lens=list(LENGTHS))
    assert_same_selection(got_sel, want_sel)
    want = method.prefill(q, k, v, cu, backend=backend)
    got = method.prefill(q, k, v, cu, backend=backend, seq_lens=list(LENGTHS))
    assert torch.equal(got.out, want.out)
    assert torch.equal(got.sparsity, want.sparsity)
    assert_same_selection(got.selection, want.selection)
    if name != "dense":
        assert float(want.sparsity.max()) > 0, "the budgets must leave pairs out (a real selection)"


# FlexPrefill is left out: its one host read is of its data-dependent budget widths (`select_vertical_slash`),
# computed from scores AND the lengths, so this guard (which follows everything derived from cu_seqlens) trips on it
@pytest.mark.parametrize("name", ["dense", "vertical_slash", "block_sparse"])
def test_prefill_with_host_lengths_never_reads_cu_seqlens_back(name):
    """On the Triton backend with seq_lens, no `.tolist()` / `.item()` / `int()` of cu_seqlens (or of anything computed
    from it) happens anywhere in select + prefill: the path a GPU runs without a length read-back."""
    q, k, v, cu = varlen_batch()
    method = method_of(name)
    want = method.prefill(q, k, v, cu, backend="triton")
    got = method.prefill(q, k, v, no_read_back(cu), backend="triton", seq_lens=LENGTHS)
    assert torch.equal(got.out, want.out)
    assert torch.equal(torch.Tensor(got.sparsity), want.sparsity)


@pytest.mark.parametrize("name", ["dense", "vertical_slash", "flexprefill", "block_sparse"])
@pytest.mark.parametrize("seq_lens, problem", [
    ([67, 131], "3 samples"), ([67, 131, 34], "sums to"), ([0, 198, 33], "at least one token"),
], ids=["count", "sum", "zero"])
def test_methods_reject_wrong_host_lengths(name, seq_lens, problem):
    q, k, v, cu = varlen_batch()
    method = method_of(name)
    with pytest.raises(ValueError, match=problem):
        method.select(q, k, cu, backend="naive", seq_lens=seq_lens)
    with pytest.raises(ValueError, match=problem):
        method.prefill(q, k, v, cu, backend="naive", seq_lens=seq_lens)


# ------------------------------------------------------------------------------------------------ transformers layout
def test_varlen_host_lengths_from_padding():
    """`Varlen.from_padding` keeps the lengths on the host (read once with padding, known without), matching its
    cu_seqlens; an all-padding sample still raises naming it. (The padded generate / forward paths run in
    tests/test_transformers_api.py and tests/test_transformers_generate.py.)"""
    from sparse_attn.integrations.transformers.layout import Varlen

    padding = torch.zeros(3, 8, dtype=torch.bool)
    for b, length in enumerate((5, 8, 1)):
        padding[b, 8 - length:] = True  # left padding, as generate builds it
    varlen = Varlen.from_padding(padding, 3, 8, "cpu")
    assert varlen.host_lengths == [5, 8, 1]
    assert varlen.cu_seqlens.tolist() == [0, 5, 13, 14]
    assert Varlen.from_padding(None, 2, 8, "cpu").host_lengths == [8, 8]
    padding[1] = False
    with pytest.raises(ValueError, match=r"samples \[1\]"):
        Varlen.from_padding(padding, 3, 8, "cpu")
