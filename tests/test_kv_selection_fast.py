"""The fast SnapKV / Ada-SnapKV selection and its kernels against their PyTorch references.

* selection: `top_positions` (torch.topk on packed keys), `kept_from_mask` (cumsum compaction) and the methods'
  `_allocate` must return exactly what the reference (full stable sorts, `reference_*`) returns, ties included;
* `compress` with host `seq_lens` equals `compress` reading `cu_seqlens`; the packed cache holds the kept tokens'
  K/V and zeros beyond each head's length (GQA, batch > 1, odd lengths);
* the window-importance kernel (unmasked bulk + masked tail, several key splits, row counts that are not a
  multiple of the tile) and the split-K decode (more splits than tokens per head, empty splits) against their
  references with NaN-poisoned outputs.

Tiny shapes: CPU, Triton interpreter.
"""
import pytest
import torch

from sparse_attn import build_method
from sparse_attn.methods._kv import (
    host_bounds,
    kept_from_mask,
    reference_kept_from_mask,
    reference_top_positions,
    top_positions,
)

from .method_matrix import METHODS


def tied_scores(heads, length, levels, seed):
    """Random scores on a few levels (many exact ties), with +inf forced entries at both ends."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (heads, length), generator=gen).float() / levels
    scores[:, :2] = float("inf")
    scores[:, -3:] = float("inf")
    return scores


@pytest.mark.parametrize("length,count", [(1, 1), (37, 5), (301, 100), (300, 300)])
@pytest.mark.parametrize("levels", [2, 7, 1000])
def test_top_positions_equal_a_stable_descending_sort(length, count, levels):
    scores = tied_scores(3, length, levels, seed=length + levels)
    if length < 5:
        scores = torch.rand(3, length)
    reference = reference_top_positions(scores, count)
    assert torch.equal(top_positions(scores, count), reference)  # sorted: same order too (best first, ties: lower)
    unordered = top_positions(scores, count, sorted=False)
    assert torch.equal(unordered.sort(-1).values, reference.sort(-1).values)


def test_top_positions_handle_negative_scores_and_minus_inf():
    scores = torch.tensor([[-1.0, 0.0, -0.0, float("-inf"), -1.0, 2.0, float("inf"), -3.5]])
    assert torch.equal(top_positions(scores, 8), reference_top_positions(scores, 8))


@pytest.mark.parametrize("length", [1, 17, 300])
def test_kept_from_mask_equals_the_sort_reference(length):
    gen = torch.Generator().manual_seed(length)
    mask = torch.rand(4, length, generator=gen) < torch.tensor([[0.0], [0.3], [0.9], [1.0]])
    mask[0, 0] = True  # every head keeps at least one token
    reference = reference_kept_from_mask(mask)
    fast = kept_from_mask(mask)
    assert torch.equal(fast.index, reference.index) and torch.equal(fast.lens, reference.lens)
    assert fast.index.dtype == torch.int64 and fast.lens.dtype == torch.int32
    wide = kept_from_mask(mask, width=length)  # host-known width: no sync, -1 padding past the longest head
    assert torch.equal(wide.index[:, : reference.index.shape[1]], reference.index)
    assert torch.all(wide.index[:, reference.index.shape[1]:] == -1)


@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv", "ada_snapkv-radix"])
@pytest.mark.parametrize("length", [61, 300, 513])
@pytest.mark.parametrize("levels", [3, 50, 100000])
def test_allocate_equals_the_reference_allocation_with_ties(name, length, levels):
    name, _, allocation = name.partition("-")
    method = build_method(name, **METHODS[name]["small"])
    if allocation:
        method.allocation = allocation  # Ada's radix-select cuts (`ada_cuts`); its PyTorch reference on CPU
    scores = tied_scores(4, length, levels, seed=7 * length + levels)
    fast, reference = method._allocate(scores), method.reference_allocate(scores)
    assert torch.equal(fast.index, reference.index), f"{name}: kept positions differ from the reference"
    assert torch.equal(fast.lens, reference.lens)
    assert fast.uniform == (name == "snapkv")


@pytest.mark.parametrize("allocation", ["topk", "radix"])
def test_ada_allocate_ties_across_heads_go_to_the_earlier_head(allocation):
    method = build_method("ada_snapkv", token_capacity=20, local_window=2, prefix_tokens=1,
                          min_head_capacity_ratio=0.25)
    method.allocation = allocation
    scores = torch.ones(3, 40)  # every token of every head ties: the shared slots go to head 0, earliest first
    fast, reference = method._allocate(scores), method.reference_allocate(scores)
    assert torch.equal(fast.index, reference.index) and torch.equal(fast.lens, reference.lens)
    assert fast.lens.tolist() == [40, 15, 5]  # floors of 5, then the 45 shared slots in (head, token) order


def packed(lengths, num_q_heads, num_kv_heads, head_dim, seed=3):
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q = torch.randn(total, num_q_heads, head_dim, generator=gen)
    k = torch.randn(total, num_kv_heads, head_dim, generator=gen)
    v = torch.randn(total, num_kv_heads, head_dim, generator=gen)
    bounds = [0]
    for length in lengths:
        bounds.append(bounds[-1] + length)
    return q, k, v, torch.tensor(bounds, dtype=torch.int32)


@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv"])
@pytest.mark.parametrize("heads", [(8, 2), (6, 3)], ids=["gqa4", "gqa2"])
def test_compress_packs_the_reference_selection_with_zero_padding(name, heads):
    method = build_method(name, **METHODS[name]["small"])
    lengths = (301, 37, 129)  # one prompt shorter than the capacity: kept whole
    q, k, v, cu_seqlens = packed(lengths, *heads, 64)
    cache = method.compress(q, k, v, cu_seqlens)
    host = method.compress(q, k, v, cu_seqlens, seq_lens=list(lengths))
    for field in ("k", "v", "lens", "index", "sparsity"):
        assert torch.equal(getattr(cache, field), getattr(host, field)), field
    width = cache.index.shape[-1]
    assert cache.k.shape == (3, heads[1], width, 64) and cache.lens.dtype == torch.int32
    for b, (start, end) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
        sample_k = k[start:end].transpose(0, 1)
        window = method.window_size(end - start)
        if end - start > method.token_capacity:
            reference = method.reference_allocate(method.importance(q[end - window:end].transpose(0, 1), sample_k))
        else:
            reference = method.select_kept(q[end - window:end].transpose(0, 1), sample_k)
        assert torch.equal(cache.lens[b], reference.lens)
        for h in range(heads[1]):
            n = int(cache.lens[b, h])
            assert cache.index[b, h, :n].tolist() == reference.index[h, :n].tolist()
            assert torch.all(cache.index[b, h, n:] == -1)
            torch.testing.assert_close(cache.k[b, h, :n], k[start + cache.index[b, h, :n], h], atol=0, rtol=0)
            torch.testing.assert_close(cache.v[b, h, :n], v[start + cache.index[b, h, :n], h], atol=0, rtol=0)
            assert torch.all(cache.k[b, h, n:] == 0) and torch.all(cache.v[b, h, n:] == 0)
        torch.testing.assert_close(cache.sparsity[b], 1 - cache.lens[b].float() / (end - start))


def test_host_bounds_validate_seq_lens():
    cu_seqlens = torch.tensor([0, 5, 9])
    assert host_bounds(cu_seqlens) == [0, 5, 9]
    assert host_bounds(cu_seqlens, [5, 4]) == [0, 5, 9]
    with pytest.raises(ValueError, match="seq_lens has 1 samples"):
        host_bounds(cu_seqlens, [9])
    with pytest.raises(ValueError, match="non-empty sample"):
        host_bounds(torch.tensor([0, 5, 5]))


# -- kernels ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduce", ["mean_sum", "max"])
@pytest.mark.parametrize("shape", [(8, 2, 13, 203, 64), (6, 3, 16, 97, 128), (4, 4, 5, 40, 64)],
                         ids=["gqa4-odd", "gqa2-d128", "mha-short"])
@pytest.mark.parametrize("splits", [1, 3])
def test_window_importance_kernel_tiles_and_splits(reduce, shape, splits):
    """Unmasked bulk blocks + masked tail, rows not a multiple of BLOCK_M (EVEN_ROWS false), several key splits
    whose ends fall inside the final window."""
    from sparse_attn.kernels.decode import naive_window_importance
    from sparse_attn.kernels.decode.window_triton import triton_window_importance

    num_q_heads, num_kv_heads, window, seq_len, head_dim = shape
    gen = torch.Generator().manual_seed(seq_len + splits)
    q_window = torch.randn(num_q_heads, window, head_dim, generator=gen)
    k = torch.randn(num_kv_heads, seq_len, head_dim, generator=gen)
    reference = naive_window_importance(q_window, k, reduce=reduce)
    for stats, scores in (((16, 16, 4, 2), (16, 32, 4, 2)), ((32, 16, 4, 2), (16, 16, 4, 1))):
        out = triton_window_importance(q_window, k, reduce=reduce, stats_config=stats, scores_config=scores,
                                       num_splits=splits)
        assert out.shape == reference.shape and not out.isnan().any()
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("num_splits", [1, 5, 40])
def test_decode_split_counts_and_empty_splits_against_the_reference(num_splits):
    """Per-head lengths (some shorter than one split: whole splits empty), GQA, batch 2, padding poisoned with
    NaN, output poisoned with NaN; the one-pass combine must weigh empty splits 0."""
    from sparse_attn.kernels.decode import naive_decode
    from sparse_attn.kernels.decode.triton import triton_decode

    gen = torch.Generator().manual_seed(num_splits)
    q = torch.randn(2, 8, 64, generator=gen)
    k = torch.randn(2, 2, 150, 64, generator=gen)
    v = torch.randn(2, 2, 150, 64, generator=gen)
    lens = torch.tensor([[150, 3], [77, 129]], dtype=torch.int32)
    valid = torch.arange(150) < lens[..., None]
    k[~valid] = float("nan")
    v[~valid] = float("nan")
    reference, ref_lse = naive_decode(q, k, v, lens, return_lse=True)
    out = torch.full_like(q, float("nan"))
    result, lse = triton_decode(q, k, v, lens, out=out, return_lse=True, num_splits=num_splits, block_n=16)
    assert result is out and not out.isnan().any()
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-4)
