"""Triton prefill kernels vs the PyTorch references, on the CPU through the Triton interpreter (TRITON_INTERPRET=1,
set in conftest.py). Tiny shapes, odd lengths, varlen batches of 2-3, GQA 4:1, head dims 64 and 128, fresh random
inputs, outputs poisoned with NaN so unwritten rows show. The selections are compared too: the GPU index builder
must equal the reference builder entry for entry, and the tile conversion of a 16-token block index must keep
exactly the same (query, key) pairs.
"""
import pytest
import torch

from sparse_attn.kernels.block_sparse import block_sparse_attention, naive_block_sparse_attention
from sparse_attn.kernels.block_sparse import triton as block_sparse_triton
from sparse_attn.kernels.block_sparse.small_chunks import chunk_index_to_union, triton_chunk_index_to_union
from sparse_attn.kernels.block_sparse.triton import chunk_index_to_tiles
from sparse_attn.kernels.dense import dense_attention
from sparse_attn.kernels.estimation import last_window_sums, pooled_block_scores
from sparse_attn.kernels.vertical_slash import (build_vertical_slash_index, canonical_index,
                                                naive_build_vertical_slash_index,
                                                naive_vertical_slash_attention, vertical_slash_attention)


def packed(lengths, hq, hkv, head_dim, seed):
    gen = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    q, k, v = (torch.randn(n, h, head_dim, generator=gen) for h in (hq, hkv, hkv))
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    return q, k, v, cu


def rel_err(got, want):
    return float((got.float() - want.float()).norm() / want.float().norm())


def random_block_index(lengths, hq, chunk, max_k, gen, drop_diagonal=False):
    """Per sample, head and query block: up to max_k earlier blocks at random plus the diagonal block."""
    n = -(-max(lengths) // chunk)
    index = torch.full((len(lengths), hq, n, max_k + 1), -1, dtype=torch.int32)
    count = torch.zeros(len(lengths), hq, n, dtype=torch.int32)
    for b, length in enumerate(lengths):
        for h in range(hq):
            for m in range(-(-length // chunk)):
                picks = torch.randperm(m, generator=gen)[: int(torch.randint(0, max_k + 1, (1,), generator=gen))]
                keep = picks.tolist() + ([] if drop_diagonal and m == 1 else [m])
                keep = sorted(set(keep))
                index[b, h, m, : len(keep)] = torch.tensor(keep, dtype=torch.int32)
                count[b, h, m] = len(keep)
    return index, count


@pytest.mark.parametrize("chunk,head_dim,lengths", [
    (16, 64, (37, 100, 5)),   # tiles of 64 with sub-block bits
    (32, 128, (91, 64)),
    (64, 64, (150, 71)),      # chunk >= 64: the index as is, unmasked prefix loop
    (128, 64, (300,)),
])
def test_block_sparse_matches_reference(chunk, head_dim, lengths):
    gen = torch.Generator().manual_seed(chunk)
    q, k, v, cu = packed(lengths, 4, 1, head_dim, seed=chunk + head_dim)
    index, count = random_block_index(lengths, 4, chunk, 3, gen, drop_diagonal=True)
    want = naive_block_sparse_attention(q, k, v, cu, index, count, chunk)
    out = torch.full_like(q, float("nan"))
    got = block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, backend="triton")
    assert got.data_ptr() == out.data_ptr()
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("small_chunk_path", ["gather", "tiles"])
@pytest.mark.parametrize("chunk,head_dim,lengths", [(16, 128, (150, 37, 64)), (32, 64, (200, 33))])
def test_small_chunk_paths_with_blocks_right_of_the_diagonal(small_chunk_path, chunk, head_dim, lengths,
                                                             monkeypatch):
    """chunk < 64: both kernels, on an index that also lists chunks right of the diagonal and past the sample
    (the causal mask must drop them) and rows without their diagonal."""
    monkeypatch.setattr(block_sparse_triton, "SMALL_CHUNK_PATH", small_chunk_path)
    gen = torch.Generator().manual_seed(7)
    q, k, v, cu = packed(lengths, 8, 2, head_dim, seed=11)
    index, count = random_block_index(lengths, 8, chunk, 6, gen, drop_diagonal=True)
    n = index.shape[2]
    for b in range(len(lengths)):
        for h in range(8):
            for m in range(0, n, 3):  # one extra chunk right of the diagonal (maybe past the sample)
                c = int(count[b, h, m])
                if 0 < c < index.shape[-1]:
                    extra = min(n - 1, m + 1 + int(torch.randint(0, 3, (1,), generator=gen)))
                    row = sorted(set(index[b, h, m, :c].tolist()) | {extra})
                    index[b, h, m, :len(row)] = torch.tensor(row, dtype=torch.int32)
                    count[b, h, m] = len(row)
    want = naive_block_sparse_attention(q, k, v, cu, index, count, chunk)
    out = torch.full_like(q, float("nan"))
    got = block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, backend="triton")
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5


def test_block_sparse_full_index_equals_dense():
    lengths, chunk = (77, 130), 32
    q, k, v, cu = packed(lengths, 8, 2, 64, seed=3)
    n = -(-max(lengths) // chunk)
    index = torch.arange(n, dtype=torch.int32).expand(2, 8, n, n).contiguous()
    count = (torch.arange(n, dtype=torch.int32) + 1).expand(2, 8, n).contiguous()
    got = block_sparse_attention(q, k, v, cu, index, count, chunk, backend="triton")
    assert rel_err(got, dense_attention(q, k, v, cu)) < 1e-5


def pairs_of_chunk_index(index, count, chunk, n_keys):
    """Dense [B, H, rows*chunk, n_keys] boolean of the (query, key) block pairs a chunk-level index selects."""
    b, h, n, _ = index.shape
    mask = torch.zeros(b, h, n * chunk, n_keys, dtype=torch.bool)
    for i in range(b):
        for j in range(h):
            for m in range(n):
                for e in range(int(count[i, j, m])):
                    kb = int(index[i, j, m, e])
                    mask[i, j, m * chunk:(m + 1) * chunk, kb * chunk:(kb + 1) * chunk] = True
    return mask


@pytest.mark.parametrize("chunk", [16, 32])
def test_union_conversion_keeps_exactly_the_selected_pairs(chunk):
    """The gather kernel's index: per 64-row tile the sorted, distinct union of the sub-blocks' key chunks, and
    bits saying which sub-block chose each: together exactly the chunk-level index's (query, key) pairs."""
    gen = torch.Generator().manual_seed(chunk)
    lengths = (200, 130)
    index, count = random_block_index(lengths, 3, chunk, 5, gen)
    union, union_count, bits = chunk_index_to_union(index, count, chunk)
    r = 64 // chunk
    assert union.shape[-1] == r * index.shape[-1] and union.dtype == bits.dtype == torch.int32
    n_keys = index.shape[2] * chunk
    want = pairs_of_chunk_index(index, count, chunk, n_keys)
    got = torch.zeros(2, 3, union.shape[2] * 64, n_keys, dtype=torch.bool)
    for i in range(2):
        for j in range(3):
            for t in range(union.shape[2]):
                n = int(union_count[i, j, t])
                chunks = union[i, j, t, :n].tolist()
                assert chunks == sorted(set(chunks)), "union must be sorted and distinct"
                assert (union[i, j, t, n:] == -1).all() and (bits[i, j, t, n:] == 0).all()
                for e, kc in enumerate(chunks):
                    assert 0 < int(bits[i, j, t, e]) < (1 << r)
                    for qs in range(r):
                        if (int(bits[i, j, t, e]) >> qs) & 1:
                            rows = slice(t * 64 + qs * chunk, t * 64 + (qs + 1) * chunk)
                            got[i, j, rows, kc * chunk:(kc + 1) * chunk] = True
    assert torch.equal(got[:, :, : want.shape[2]], want)
    assert not got[:, :, want.shape[2]:].any()


@pytest.mark.parametrize("chunk,lengths,max_k", [(16, (200, 130, 7), 5), (32, (333,), 9), (16, (64,), 70)])
def test_triton_union_builder_equals_torch(chunk, lengths, max_k):
    """The one-launch Triton union builder = the torch builder, entry for entry (pads, empty rows, odd tiles)."""
    gen = torch.Generator().manual_seed(max_k)
    index, count = random_block_index(lengths, 3, chunk, max_k, gen, drop_diagonal=True)
    want = chunk_index_to_union(index, count, chunk)
    got = triton_chunk_index_to_union(index, count, chunk)
    for name, w, g in zip(("union", "union_count", "bits"), want, got):
        assert g.dtype == torch.int32 and torch.equal(g, w.to(torch.int32)), name


def test_tile_conversion_keeps_exactly_the_selected_pairs():
    gen = torch.Generator().manual_seed(0)
    lengths, chunk = (200, 130), 16
    index, count = random_block_index(lengths, 3, chunk, 5, gen)
    tiles, tile_count, bits = chunk_index_to_tiles(index, count, chunk)
    n_keys = -(-max(lengths) // 64) * 64
    want = pairs_of_chunk_index(index, count, chunk, n_keys)
    got = torch.zeros(2, 3, tiles.shape[2] * 64, n_keys, dtype=torch.bool)
    for i in range(2):
        for j in range(3):
            for t in range(tiles.shape[2]):
                row_tiles = tiles[i, j, t, : tile_count[i, j, t]].tolist()
                assert row_tiles == sorted(set(row_tiles)), "tile list must be sorted and unique"
                for e, kt in enumerate(row_tiles):
                    for qs in range(4):
                        for ks in range(4):
                            if (int(bits[i, j, t, e]) >> (qs * 4 + ks)) & 1:
                                got[i, j, t * 64 + qs * 16: t * 64 + qs * 16 + 16,
                                    kt * 64 + ks * 16: kt * 64 + ks * 16 + 16] = True
    assert torch.equal(got[:, :, : want.shape[2]], want)
    assert not got[:, :, want.shape[2]:].any()


def random_vs_pattern(lengths, hq, n_vert, n_slash, gen, force_local=True):
    b = len(lengths)
    vi = torch.full((b, hq, n_vert), -1, dtype=torch.int32)
    so = torch.full((b, hq, n_slash), -1, dtype=torch.int32)
    vc = torch.zeros(b, hq, dtype=torch.int32)
    sc = torch.zeros(b, hq, dtype=torch.int32)
    for i, length in enumerate(lengths):
        for h in range(hq):
            nv = int(torch.randint(1, min(n_vert, length) + 1, (1,), generator=gen))
            cols = torch.randperm(length, generator=gen)[:nv].sort().values
            ns = int(torch.randint(1, min(n_slash, length) + 1, (1,), generator=gen))
            offs = torch.randperm(length, generator=gen)[:ns]
            if force_local:
                offs[0] = 0
            offs = offs.unique().sort(descending=True).values
            vi[i, h, :nv], vc[i, h] = cols.to(torch.int32), nv
            so[i, h, : offs.numel()], sc[i, h] = offs.to(torch.int32), offs.numel()
    return vi, vc, so, sc


@pytest.mark.parametrize("force_local", [True, False])
def test_vertical_slash_index_builder_equals_reference(force_local):
    gen = torch.Generator().manual_seed(int(force_local))
    lengths = (300, 77, 129)
    pattern = random_vs_pattern(lengths, 4, 12, 20, gen, force_local)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    got = canonical_index(*build_vertical_slash_index(cu, *pattern, backend="triton"))  # -1 past the counts
    want = naive_build_vertical_slash_index(cu, *pattern)
    for name, a, b in zip(("block_count", "block_offset", "column_count", "column_index"), got, want):
        assert torch.equal(a, b), f"{name} differs from the reference builder"
    assert int(got[0].sum()) > 0 and int(got[2].sum()) > 0, "the pattern must produce blocks and columns"


@pytest.mark.parametrize("head_dim,lengths", [(64, (200, 77, 5)), (128, (130, 64))])
def test_vertical_slash_attention_matches_reference(head_dim, lengths):
    gen = torch.Generator().manual_seed(head_dim)
    q, k, v, cu = packed(lengths, 4, 1, head_dim, seed=head_dim)
    index = naive_build_vertical_slash_index(cu, *random_vs_pattern(lengths, 4, 10, 6, gen, force_local=False))
    want = naive_vertical_slash_attention(q, k, v, cu, *index)
    out = torch.full_like(q, float("nan"))
    got = vertical_slash_attention(q, k, v, cu, *index, out=out, backend="triton")
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5


def test_vertical_slash_column_runs_match_reference_and_dense():
    """Columns that are long runs of consecutive keys (what FlexPrefill keeps on flat heads): head 0 keeps every key
    (plus the local diagonal: equals dense attention), heads 1-3 runs of 140 / 64 (aligned) / 90 keys among
    scattered columns, batch of 2 ragged samples, GQA 4:1. (Session 13 measured folding such runs as unmasked blocks
    in the kernel: benchmarks/results/s13/column_runs.patch, slower and never met on the library's selections.)"""
    lengths = (300, 201)
    q, k, v, cu = packed(lengths, 4, 1, 64, seed=11)
    gen = torch.Generator().manual_seed(11)
    runs = [None, range(10, 150), range(64, 128), range(100, 190)]
    vi = torch.full((2, 4, 300), -1, dtype=torch.int32)
    vc = torch.zeros(2, 4, dtype=torch.int32)
    for b, length in enumerate(lengths):
        for h, run in enumerate(runs):
            scattered = set(torch.randint(0, length, (12,), generator=gen).tolist())
            cols = set(range(length)) if run is None else set(run) | scattered
            cols = sorted(c for c in cols if c < length)
            vi[b, h, : len(cols)], vc[b, h] = torch.tensor(cols, dtype=torch.int32), len(cols)
    so = torch.zeros(2, 4, 1, dtype=torch.int32)  # offset 0 only: the diagonal
    sc = torch.ones(2, 4, dtype=torch.int32)
    index = naive_build_vertical_slash_index(cu, vi, vc, so, sc)
    column_count, column_index = index[2], index[3]
    run_groups = 0  # full groups of 64 consecutive columns wholly before their row
    for b in range(2):
        for h in range(4):
            for r in range(column_count.shape[2]):
                cols = column_index[b, h, r, : column_count[b, h, r]]
                for c in range(0, cols.numel() - 63, 64):
                    run_groups += int(cols[c + 63] - cols[c] == 63 and cols[c + 63] < 64 * r)
    assert run_groups >= 8, "the pattern must contain whole groups of consecutive columns"
    want = naive_vertical_slash_attention(q, k, v, cu, *index)
    out = torch.full_like(q, float("nan"))
    got = vertical_slash_attention(q, k, v, cu, *index, out=out, backend="triton")
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5
    dense = dense_attention(q, k, v, cu)
    assert rel_err(got[:, 0], dense[:, 0]) < 1e-5  # head 0 keeps every key: dense attention


@pytest.mark.parametrize("window", [16, 64, 100])
def test_last_window_sums_match_reference(window):
    q, k, _, cu = packed((150, 40, 77), 4, 1, 64, seed=window)
    got_v, got_s = last_window_sums(q, k, cu, window, backend="triton")
    want_v, want_s = last_window_sums(q, k, cu, window, backend="naive")
    assert rel_err(got_v, want_v) < 1e-5 and rel_err(got_s, want_s) < 1e-5
    # every window query's probabilities sum to 1, so both sums total the window size per head
    sizes = torch.tensor([min(window, n) for n in (150, 40, 77)], dtype=torch.float32)
    torch.testing.assert_close(got_s.sum(-1), sizes[:, None].expand(3, 4), rtol=1e-5, atol=1e-4)


def test_pooled_block_scores_match_reference():
    q, k, _, cu = packed((37, 100), 8, 2, 64, seed=5)
    got = pooled_block_scores(q, k, cu, 16, backend="triton")
    want = pooled_block_scores(q, k, cu, 16, backend="naive")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_dense_path_matches_reference_and_errors_name_the_fix():
    q, k, v, cu = packed((33, 70), 4, 1, 64, seed=9)
    want = naive_block_sparse_attention(  # every block of the causal triangle = dense
        q, k, v, cu, torch.arange(5, dtype=torch.int32).expand(2, 4, 5, 5).contiguous(),
        (torch.arange(5, dtype=torch.int32) + 1).expand(2, 4, 5).contiguous(), 16)
    assert rel_err(dense_attention(q, k, v, cu), want) < 1e-5
    odd_q, odd_k, odd_v, cu = packed((40,), 4, 1, 80, seed=1)
    with pytest.raises(ValueError, match="pad q/k/v"):
        vertical_slash_attention(odd_q, odd_k, odd_v, cu, *naive_build_vertical_slash_index(
            cu, torch.zeros(1, 4, 1, dtype=torch.int32), torch.ones(1, 4, dtype=torch.int32),
            torch.zeros(1, 4, 1, dtype=torch.int32), torch.ones(1, 4, dtype=torch.int32)), backend="triton")


@pytest.mark.parametrize("name", ["vertical_slash", "block_sparse", "flexprefill"])
def test_method_prefill_same_on_both_backends(name):
    """The methods' whole prefill (estimation, selection, index, attention) through backend='triton' equals 'naive'."""
    from sparse_attn import build_method

    from .method_matrix import METHODS
    q, k, v, cu = packed((301, 90), 4, 1, 64, seed=11)
    method = build_method(name, **METHODS[name]["small"])
    got = method.prefill(q, k, v, cu, backend="triton")
    want = method.prefill(q, k, v, cu, backend="naive")
    assert rel_err(got.out, want.out) < 1e-5
    assert torch.equal(got.sparsity, want.sparsity)
    assert float(want.sparsity[0].min()) > 0.2, "the small budget must drop much of the 301-token prompt"


def test_cudnn_length_bounds_plans_and_padding():
    """Every length maps to a multiple of 1/128 of its next power of two (>= 64): <= max(n/64, 63) padded rows,
    idempotent, powers of two unchanged, 64 distinct lengths per octave (one cuDNN plan each)."""
    from sparse_attn.kernels.dense import cudnn_length
    for n in list(range(1, 3000)) + [16387, 32761, 32768, 100_000, 131071, 131072, 131075]:
        m = cudnn_length(n)
        assert 0 <= m - n <= max(n // 64, 63), (n, m)
        assert cudnn_length(m) == m
    assert [cudnn_length(1 << e) for e in range(6, 18)] == [1 << e for e in range(6, 18)]
    assert len({cudnn_length(n) for n in range(65537, 131073)}) == 64
    with pytest.raises(ValueError, match=">= 1"):
        cudnn_length(0)


def test_padded_length_pads_until_the_copies_cost_a_plan(monkeypatch):
    """A shape pads to its cuDNN length while its copies stay within PAD_BYTES_PER_SHAPE, then runs at its own
    length (ski rental: a length met every layer builds its own plan); cuDNN lengths and lengths past 64K never
    pad; shapes are counted apart."""
    from sparse_attn.kernels import dense
    monkeypatch.setattr(dense, "_padded_bytes", {})
    monkeypatch.setattr(dense, "PAD_BYTES_PER_SHAPE", 100)
    assert [dense.padded_length(32761, ("a",), 30) for _ in range(6)] == [32768] * 4 + [32761] * 2
    assert dense.padded_length(32761, ("b",), 30) == 32768  # another shape: its own budget
    assert dense.padded_length(32768, ("c",), 30) == 32768 and ("c",) not in dense._padded_bytes
    assert dense.padded_length(131071, ("f",), 30) == 131071 and ("f",) not in dense._padded_bytes  # > 64K
    monkeypatch.setattr(dense, "PAD_BYTES_PER_SHAPE", 0)  # padding off
    assert dense.padded_length(32761, ("e",), 30) == 32761
    monkeypatch.setattr(dense, "PAD_BYTES_PER_SHAPE", 100)
    monkeypatch.setattr(dense, "_MAX_TRACKED_SHAPES", 2)
    assert dense.padded_length(100, ("d",), 30) == 128  # the table is full: forgotten, then this one counted
    assert list(dense._padded_bytes) == [("d",)]


def test_padded_causal_rows_equal_unpadded():
    """pad_rows appends zero rows in the [B, n, H, D] memory layout; causal attention of the real rows is unchanged
    (a real query never sees an appended key): the identity causal_sdpa relies on, for a batch of 2 with GQA."""
    import torch.nn.functional as F
    from sparse_attn.kernels.dense import cudnn_length, pad_rows
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, h, 77, 32, generator=gen) for h in (8, 2, 2))
    length = cudnn_length(77)
    padded = [pad_rows(t, length) for t in (q, k, v)]
    assert length == 128 and padded[0].shape == (2, 8, 128, 32)
    assert padded[0].transpose(1, 2).is_contiguous()  # the BSHD layout of the fused kernels
    assert torch.equal(padded[1][:, :, :77], k) and not padded[1][:, :, 77:].any()
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    got = F.scaled_dot_product_attention(*padded, is_causal=True, enable_gqa=True)[:, :, :77]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
