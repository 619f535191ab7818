"""Size of the vertical-slash index: widths capped to what rows use, 64-bit row addressing, the memory guard.

The 128K crash (CUDA illegal memory access) came from `h * stride_h` in int32 inside the Triton kernels with an index
as wide as the pattern (2048 rows x 131072 slots per head). These tests run on the CPU (TRITON_INTERPRET=1 from
conftest.py) with tiny shapes; the offset probe uses the 128K strides without allocating anything that large.
"""
import pytest
import torch
import triton
import triton.language as tl

from sparse_attn.kernels.vertical_slash import (build_vertical_slash_index, canonical_index, check_index_fits,
                                                index_widths, naive_build_vertical_slash_index,
                                                vertical_slash_pair_counts)
from sparse_attn.kernels.vertical_slash import naive as vs_naive
from sparse_attn.kernels.vertical_slash.triton import index_row_offset


def cu_of(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)


POISON = -7777


@pytest.fixture
def poisoned_index(monkeypatch):
    """The Triton builder's index tensors start as POISON (instead of uninitialised memory), so a slot below a
    count that was not written, or a slot past a count that was, shows."""
    import sparse_attn.kernels.vertical_slash.triton as vs_triton

    monkeypatch.setattr(vs_triton, "_index_buffer",
                        lambda shape, device: torch.full(shape, POISON, dtype=torch.int32, device=device))


def assert_tails_untouched(block_count, block_offset, column_count, column_index):
    """Slots past each row's count still hold POISON: the builder writes nothing there."""
    for count, index in ((block_count, block_offset), (column_count, column_index)):
        past = torch.arange(index.shape[-1]) >= count[..., None]
        assert bool((index[past] == POISON).all()), "the builder wrote past a row's count"


def wide_pattern(lengths, heads, num_vert, num_slash, gen):
    """Patterns padded far past what they use: NV, NS >> valid counts on short samples, dense counts on long ones."""
    batch = len(lengths)
    vertical = torch.full((batch, heads, num_vert), -1, dtype=torch.int32)
    slash = torch.full((batch, heads, num_slash), -1, dtype=torch.int32)
    v_count = torch.zeros(batch, heads, dtype=torch.int32)
    s_count = torch.zeros(batch, heads, dtype=torch.int32)
    for b, length in enumerate(lengths):
        for h in range(heads):
            nv = min(num_vert, length)
            if h != 0:
                nv = int(torch.randint(1, nv + 1, (1,), generator=gen))
            ns = min(num_slash, length)
            if h != 1:
                ns = int(torch.randint(1, ns + 1, (1,), generator=gen))
            cols = torch.randperm(length, generator=gen)[:nv].sort().values
            offs = torch.randperm(length, generator=gen)[:ns].sort(descending=True).values
            vertical[b, h, :nv], v_count[b, h] = cols.to(torch.int32), nv
            slash[b, h, :ns], s_count[b, h] = offs.to(torch.int32), ns
    return vertical, v_count, slash, s_count


@pytest.mark.parametrize("lengths", [(200, 77, 129), (190,)])
def test_widths_are_capped_and_builders_agree(lengths, poisoned_index):
    gen = torch.Generator().manual_seed(len(lengths))
    num_vert, num_slash = 500, 400  # wider than any sample: the old index was [B, Hq, n_rows, 400 / 500]
    pattern = wide_pattern(lengths, 3, num_vert, num_slash, gen)
    cu = cu_of(lengths)
    want = naive_build_vertical_slash_index(cu, *pattern)
    raw = build_vertical_slash_index(cu, *pattern, backend="triton")
    assert_tails_untouched(*raw)
    got = canonical_index(*raw)
    for name, a, b in zip(("block_count", "block_offset", "column_count", "column_index"), got, want):
        assert a.shape == b.shape and torch.equal(a, b), f"{name} differs from the reference builder"
    block_count, block_offset, column_count, column_index = want
    n_rows = -(-max(lengths) // 64)
    max_blocks, max_columns = index_widths(max(lengths), num_slash, num_vert)
    assert (max_blocks, max_columns) == (n_rows, max(lengths))
    # widths are exactly the widest row, within the bounds
    assert block_offset.shape[-1] == max(1, int(block_count.max())) <= max_blocks
    assert column_index.shape[-1] == max(1, int(column_count.max())) <= max_columns
    assert int(block_count.max()) > 1 and (int(column_count.max()) > 0 or len(lengths) == 1)  # both parts used
    # the bound r + 1 per row holds
    rows = torch.arange(n_rows)
    assert bool((block_count <= rows + 1).all())


def test_dense_pattern_reaches_the_row_bound(poisoned_index):
    """All offsets of a 200-token sample: row r holds exactly r + 1 blocks, so the width is n_rows, not NS = 200."""
    length = 200
    cu = cu_of([length])
    slash = torch.arange(length - 1, -1, -1, dtype=torch.int32).view(1, 1, -1)
    vertical = torch.tensor([[[3]]], dtype=torch.int32)
    pattern = (vertical, torch.tensor([[1]], dtype=torch.int32), slash, torch.tensor([[length]], dtype=torch.int32))
    want = naive_build_vertical_slash_index(cu, *pattern)
    raw = build_vertical_slash_index(cu, *pattern, backend="triton")
    assert_tails_untouched(*raw)
    for a, b in zip(canonical_index(*raw), want):
        assert torch.equal(a, b)
    assert want[0][0, 0].tolist() == [1, 2, 3, 4]
    assert want[1].shape == (1, 1, 4, 4)  # min(NS = 200, n_rows = 4)
    assert int(want[2].sum()) == 0 and want[3].shape == (1, 1, 4, 1)  # vertical 3 lies inside a block: no columns


@triton.jit
def _offset_probe(Out, b, h, row, stride_b, stride_h, stride_r):
    tl.store(Out, index_row_offset(b, h, row, stride_b, stride_h, stride_r))


def test_index_row_offset_is_64_bit_at_128k_strides():
    """Strides of a [1, 32, 2048, 131072] index: h * stride_h = 31 * 2**28 > 2**31 wrapped in int32 before."""
    n_rows, width, heads = 2048, 131072, 32
    stride_r, stride_h = width, n_rows * width
    stride_b = heads * stride_h
    out = torch.zeros(1, dtype=torch.int64)
    b, h, row = 0, heads - 1, n_rows - 1
    _offset_probe[(1,)](out, b, h, row, stride_b, stride_h, stride_r)
    want = b * stride_b + h * stride_h + row * stride_r
    assert want > 2**31 and int(out[0]) == want


def test_guard_raises_naming_the_parameters_before_allocating():
    # 128K flexprefill on random weights: 32 heads x 2048 rows x (2048 + 131072) slots = 34 GiB of int32
    blocks, columns = index_widths(131072, 131072, 131072)
    assert (blocks, columns) == (2048, 131072)
    with pytest.raises(ValueError, match="vertical_size / slash_size.*alpha / min_budget") as error:
        check_index_fits(1, 32, 2048, blocks, columns, torch.device("cuda"), free_bytes=20 * 2**30)
    assert "GiB" in str(error.value) and "32 heads" in str(error.value)
    check_index_fits(1, 32, 2048, blocks, columns, torch.device("cuda"), free_bytes=60 * 2**30)  # fits: no error
    check_index_fits(1, 32, 2048, blocks, columns, torch.device("cpu"))  # host memory is not checked


def test_builders_call_the_guard_with_the_final_widths(monkeypatch):
    import sparse_attn.kernels.vertical_slash.triton as vs_triton

    calls = []

    def refuse(batch, heads, n_rows, block_width, column_width, device, free_bytes=None):
        calls.append((batch, heads, n_rows, block_width, column_width))
        raise ValueError("refused by the test")

    gen = torch.Generator().manual_seed(5)
    lengths = (130, 70)
    pattern = wide_pattern(lengths, 2, 50, 60, gen)
    want = naive_build_vertical_slash_index(cu_of(lengths), *pattern)
    monkeypatch.setattr(vs_naive, "check_index_fits", refuse)
    monkeypatch.setattr(vs_triton, "check_index_fits", refuse)
    for backend in ("naive", "triton"):
        with pytest.raises(ValueError, match="refused by the test"):
            build_vertical_slash_index(cu_of(lengths), *pattern, backend=backend)
    expected = (2, 2, 3, want[1].shape[-1], want[3].shape[-1])
    assert calls == [expected, expected]


def test_pair_counts_do_not_depend_on_the_row_chunk(monkeypatch):
    gen = torch.Generator().manual_seed(7)
    lengths = (300, 77, 129)
    cu = cu_of(lengths)
    index = naive_build_vertical_slash_index(cu, *wide_pattern(lengths, 3, 40, 30, gen))
    whole = vertical_slash_pair_counts(cu, *index)
    monkeypatch.setattr(vs_naive, "PAIR_COUNT_CHUNK", 7)  # one row per chunk
    assert torch.equal(vertical_slash_pair_counts(cu, *index), whole)
    assert int(whole.min()) > 0


@pytest.mark.parametrize("lengths,num_vert,num_slash", [((200, 77, 129), 90, 70), ((190,), 90, 70),
                                                        ((64, 1), 90, 70), ((1100, 70), 40, 300),
                                                        ((900, 70), 300, 8)])
def test_host_max_len_builds_in_one_pass_at_the_bound_widths(lengths, num_vert, num_slash, monkeypatch,
                                                             poisoned_index):
    """With the longest length given on the host, the Triton builder reads nothing back: one pass at the
    `index_widths` bounds (rounded up to 16 slots; entries written in groups of 4 by vector stores). Counts and the
    used slots equal the reference; slots past each count are never written (poisoned buffers)."""
    import sparse_attn.kernels.vertical_slash.triton as vs_triton

    gen = torch.Generator().manual_seed(sum(lengths))
    pattern = wide_pattern(lengths, 3, num_vert, num_slash, gen)
    cu = cu_of(lengths)
    want = naive_build_vertical_slash_index(cu, *pattern)
    reads = []
    monkeypatch.setattr(torch.Tensor, "max", lambda self, *a, **kw: reads.append(1) or torch.amax(self))
    raw = build_vertical_slash_index(cu, *pattern, backend="triton", max_len=max(lengths))
    reads_seen = list(reads)
    monkeypatch.setattr(torch.Tensor, "max", torch.Tensor.max)  # (undo only this patch: the poison stays)
    assert not reads_seen, "the one-pass build must not read the widths back"
    assert_tails_untouched(*raw)
    got = canonical_index(*raw)
    bound_blocks, bound_columns = (-(-w // 16) * 16 for w in index_widths(max(lengths), num_slash, num_vert))
    assert got[1].shape[-1] == bound_blocks and got[3].shape[-1] == bound_columns  # bounds, in whole 16-slot groups
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    if max(lengths) >= 900:  # rows with whole 8-slot groups: blocks (1100), columns (900)
        assert int(want[0].max() if num_slash > num_vert else want[2].max()) > 8
    for full, exact in ((got[1], want[1]), (got[3], want[3])):
        width = exact.shape[-1]
        assert torch.equal(full[..., :width], exact), "used slots differ from the reference"
        assert bool((full[..., width:] == -1).all()), "canonical form: -1 past the widest row"
    # above the size limit the two-pass build sizes the index to the widest row, as without max_len
    monkeypatch.setattr(vs_triton, "SINGLE_PASS_MAX_BYTES", 0)
    exact = build_vertical_slash_index(cu, *pattern, backend="triton", max_len=max(lengths))
    assert_tails_untouched(*exact)
    for a, b in zip(canonical_index(*exact), want):
        assert a.shape == b.shape and torch.equal(a, b)


def test_attention_over_a_bound_width_index_equals_the_exact_one():
    """The mixed attention reads only `count` slots per row: the one-pass (wider) index gives the same output,
    and the host max_len hint gives the same output as reading it from cu_seqlens."""
    from sparse_attn.kernels.vertical_slash import vertical_slash_attention

    gen = torch.Generator().manual_seed(3)
    lengths = (150, 67)
    cu = cu_of(lengths)
    pattern = wide_pattern(lengths, 4, 40, 30, gen)
    q = torch.randn(sum(lengths), 4, 64, generator=gen)
    k, v = torch.randn(2, sum(lengths), 2, 64, generator=gen)
    exact = naive_build_vertical_slash_index(cu, *pattern)
    wide = build_vertical_slash_index(cu, *pattern, backend="triton", max_len=max(lengths))
    assert wide[1].shape[-1] > exact[1].shape[-1] or wide[3].shape[-1] > exact[3].shape[-1]
    outs = []
    for index, hint in ((exact, None), (wide, max(lengths))):
        out = torch.full_like(q, float("nan"))
        outs.append(vertical_slash_attention(q, k, v, cu, *index, out=out, backend="triton", max_len=hint))
    assert not outs[1].isnan().any()
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)


def test_library_select_with_host_lengths_equals_the_reference_selection():
    """VerticalSlash / FlexPrefill select on the Triton backend (host lengths: one-pass index, no read-backs) pick the
    same pattern and index as the naive backend, and count the same computed pairs."""
    from sparse_attn.methods.flexprefill import FlexPrefill
    from sparse_attn.methods.vertical_slash import VerticalSlash

    gen = torch.Generator().manual_seed(11)
    lengths = (900, 97)
    cu = cu_of(lengths)
    q = torch.randn(sum(lengths), 4, 64, generator=gen)
    k = torch.randn(sum(lengths), 2, 64, generator=gen)
    for method in (VerticalSlash(vertical_size=16, slash_size=66, approximation_size=64),
                   FlexPrefill(alpha=0.0, approximation_size=64, min_budget=64)):
        got = method.select(q, k, cu, backend="triton")
        want = method.select(q, k, cu, backend="naive")
        assert got.max_len == max(lengths)
        trimmed_got, trimmed_want = got.trimmed(), want.trimmed()
        for name in ("vertical_idx", "vertical_count", "slash_offsets", "slash_count", "block_count", "block_offset",
                     "column_count", "column_index"):
            a, b = getattr(trimmed_got, name), getattr(trimmed_want, name)
            assert a.shape == b.shape and torch.equal(a, b), f"{type(method).__name__}: {name}"
        assert torch.equal(got.pair_counts(), want.pair_counts())
        assert float(got.sparsity()[0].min()) > 0.2, "the selection must skip pairs at these budgets"


@pytest.mark.parametrize("bounded", [True, False])
@pytest.mark.parametrize("max_len", [None, "host"])
def test_builder_walk_bound_per_row_program(bounded, max_len, monkeypatch, poisoned_index):
    """Programs of 16 rows (BUILD_ROWS), so that early programs stop their walk early (`_build_index`: slashes
    invalid in all their rows skipped, verticals past their rows' ends + 64 never reached): the index equals the
    reference entry for entry, with the bound and without it, for verticals and slashes spread over the whole
    sample (offsets larger than early rows' ends, verticals past them) and the local diagonals."""
    import sparse_attn.kernels.vertical_slash.triton as vs_triton

    monkeypatch.setattr(vs_triton, "BUILD_ROWS", 16)
    monkeypatch.setattr(vs_triton, "BUILD_BOUNDED", bounded)
    lengths = (2300, 1111, 40)  # 36 rows: 3 programs per head for the longest sample
    gen = torch.Generator().manual_seed(7)
    pattern = wide_pattern(lengths, 3, 60, 50, gen)
    cu = cu_of(lengths)
    want = naive_build_vertical_slash_index(cu, *pattern)
    raw = build_vertical_slash_index(cu, *pattern, backend="triton",
                                     max_len=max(lengths) if max_len == "host" else None)
    assert_tails_untouched(*raw)
    got = canonical_index(*raw)
    assert torch.equal(got[0], want[0]) and torch.equal(got[2], want[2])
    for full, exact in ((got[1], want[1]), (got[3], want[3])):
        assert torch.equal(full[..., :exact.shape[-1]], exact)
    # the early programs had work to skip: verticals past their rows and offsets past their ends exist
    vertical_idx, vertical_count, slash_offsets, slash_count = pattern
    assert int((vertical_idx[0] >= 16 * 64 + 64).sum()) > 0 and int((slash_offsets[0] >= 16 * 64).sum()) > 0
    assert int(want[0].sum()) > 0 and int(want[2].sum()) > 0
