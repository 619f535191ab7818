"""The fused compression kernels (`kernels/decode/kv_select_triton.py`, the window-statistics merge) against their
PyTorch references, and `compress` run through them against `reference_allocate` + `reference_pack`.

* `pool_keys`: pooling + forcing + int64 ranking keys (odd lengths, a pool wider than the prompt, local window
  longer than the prompt, no pooling);
* `pack_kept`: batch > 1, GQA, ragged widths with -1 padding, non-contiguous index; outputs checked element by
  element (every slot, padding zeros included);
* Ada-SnapKV's threshold allocation at the budget corners (no floor, no shared slots, every token tied);
* `ada_cuts`: Ada-SnapKV's radix-select cuts (`allocation = "radix"`) against the sort reference: ties across
  heads, negative / +inf / -0.0 scores, non-power-of-two heads, several kernel blocks, every budget corner; bad
  budgets raise.

Tiny shapes: CPU, Triton interpreter.
"""
import functools

import pytest
import torch

from sparse_attn import build_method
from sparse_attn.kernels.decode import (
    ada_cuts,
    compact_kept,
    flat_ordered_keys,
    keep_top,
    naive_ada_cuts,
    naive_compact_kept,
    naive_keep_top,
    naive_pack_kept,
    naive_pool_keys,
    pack_kept,
    pool_keys,
)
from sparse_attn.methods import _kv, ada_snapkv, snapkv
from sparse_attn.methods._kv import reference_top_positions
from sparse_attn.methods._kv import KeptTokens, reference_pack

from .method_matrix import METHODS


@pytest.mark.parametrize("heads,length", [(3, 203), (2, 7), (4, 1030)])
@pytest.mark.parametrize("kernel_size,local_window,prefix", [(5, 8, 4), (21, 300, 2), (1, 0, 0), (3, 1, 9)])
def test_pool_keys_kernel_equals_the_reference(heads, length, kernel_size, local_window, prefix):
    gen = torch.Generator().manual_seed(length + kernel_size)
    raw = torch.rand(heads, length, generator=gen)
    raw[:, length // 2:length // 2 + 3] = 0.25  # a few exact ties
    ref_pooled, ref_keys = naive_pool_keys(raw, kernel_size, local_window, prefix)
    pooled, keys = pool_keys(raw, kernel_size, local_window, prefix, backend="triton")
    assert pooled.shape == ref_pooled.shape and keys.dtype == torch.int64
    assert not pooled.isnan().any()
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-7, rtol=1e-6)
    assert torch.equal(pooled.isinf(), ref_pooled.isinf())  # the forced tokens
    assert torch.equal(keys, flat_ordered_keys(pooled))  # the key mapping itself is exact
    _, plain_keys = pool_keys(ref_pooled, 1, 0, 0, pool=False, backend="triton")
    assert torch.equal(plain_keys, ref_keys)


def test_flat_keys_rank_ties_by_head_then_token():
    scores = torch.tensor([[1.0, 2.0, 2.0], [2.0, 0.0, float("inf")]])
    order = torch.sort(flat_ordered_keys(scores).view(-1), descending=True).indices.tolist()
    assert order == [5, 1, 2, 3, 0, 4]  # inf, then the 2.0 ties in (head, token) order, then 1.0, 0.0


@pytest.mark.parametrize("heads,length,width", [(3, 203, 150), (2, 4500, 4500), (4, 9, 1)])
def test_compact_kernel_equals_the_reference(heads, length, width):
    """Cuts that keep 0..all tokens of a head, tied keys at the cut, several kernel blocks (4500 > 2048)."""
    gen = torch.Generator().manual_seed(length)
    keys = flat_ordered_keys(torch.randint(0, 5, (heads, length), generator=gen).float())
    sorted_keys = torch.sort(keys, dim=-1, descending=True).values
    counts = torch.randint(1, width + 1, (heads,), generator=gen)
    counts[0] = width
    cut = sorted_keys.gather(1, (counts - 1)[:, None])  # head h keeps exactly counts[h] keys
    ref_index, ref_lens = naive_compact_kept(keys, cut, width)
    index, lens = compact_kept(keys, cut, width, backend="triton")
    assert torch.equal(lens, ref_lens) and torch.equal(lens.long(), counts)
    assert torch.equal(index, ref_index)
    assert torch.all(index[:, 1:][index[:, 1:] >= 0] > index[:, :-1][index[:, 1:] >= 0])  # ascending


@pytest.mark.parametrize("length,count", [(203, 150), (4500, 2100), (9, 1), (9, 9), (4500, 3)])
@pytest.mark.parametrize("levels", [2, 5, 100000])
def test_keep_top_kernel_equals_a_stable_sort(length, count, levels):
    """Cuts inside a run of ties (the earliest equals are kept), +inf forced tokens, several kernel blocks."""
    gen = torch.Generator().manual_seed(length + count + levels)
    scores = torch.randint(0, levels, (3, length), generator=gen).float() / levels
    scores[:, :1] = float("inf")
    scores[1, -2:] = float("inf")
    reference = torch.sort(reference_top_positions(scores, count), dim=-1).values
    for backend in ("naive", "triton"):
        index, lens = keep_top(scores, count, backend=backend)
        assert torch.equal(index, reference), backend
        assert lens.dtype == torch.int32 and lens.tolist() == [count] * 3
    assert torch.equal(naive_keep_top(scores, count)[0], reference)


@pytest.mark.parametrize("heads,head_dim", [(2, 64), (3, 128)])
def test_pack_kernel_equals_the_reference(heads, head_dim):
    gen = torch.Generator().manual_seed(heads)
    lengths = [50, 7, 33]
    cu_seqlens = torch.tensor([0, 50, 57, 90], dtype=torch.int32)
    k = torch.randn(90, heads, head_dim, generator=gen).to(torch.bfloat16)
    v = torch.randn(90, heads, head_dim, generator=gen).to(torch.bfloat16)
    width = 70  # more slots than one block of the kernel, ragged
    index = torch.full((3, heads, width + 3), -1, dtype=torch.int64)
    lens = torch.zeros(3, heads, dtype=torch.int32)
    for b, length in enumerate(lengths):
        for h in range(heads):
            n = int(torch.randint(1, length + 1, (1,), generator=gen))
            index[b, h, :n] = torch.randperm(length, generator=gen)[:n].sort().values
            lens[b, h] = n
    index = index[..., :width]  # non-contiguous, as the methods' compaction returns it
    ref_k, ref_v, ref_sparsity = naive_pack_kept(k, v, index, lens, cu_seqlens)
    out_k, out_v, sparsity = pack_kept(k, v, index, lens, cu_seqlens, backend="triton")
    assert torch.equal(out_k, ref_k) and torch.equal(out_v, ref_v)
    torch.testing.assert_close(sparsity, ref_sparsity)
    for b, start in enumerate(cu_seqlens[:-1].tolist()):  # the reference itself: kept rows, zeros after
        for h in range(heads):
            n = int(lens[b, h])
            assert torch.equal(ref_k[b, h, :n], k[start + index[b, h, :n], h])
            assert torch.all(ref_v[b, h, n:] == 0)


@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv", "ada_snapkv-radix"])
@pytest.mark.parametrize("heads", [(8, 2), (6, 3)], ids=["gqa4", "gqa2"])
def test_compress_through_the_triton_kernels_keeps_the_reference_tokens(name, heads, monkeypatch):
    name, _, allocation = name.partition("-")
    monkeypatch.setattr(ada_snapkv, "ada_cuts", functools.partial(ada_cuts, backend="triton"))
    if allocation:
        monkeypatch.setattr(ada_snapkv.AdaSnapKV, "allocation", allocation)
    monkeypatch.setattr(_kv, "pool_keys", functools.partial(pool_keys, backend="triton"))
    monkeypatch.setattr(_kv, "pack_kept", functools.partial(pack_kept, backend="triton"))
    monkeypatch.setattr(ada_snapkv, "compact_kept", functools.partial(compact_kept, backend="triton"))
    monkeypatch.setattr(snapkv, "keep_top", functools.partial(keep_top, backend="triton"))
    monkeypatch.setattr(ada_snapkv, "keep_top", functools.partial(keep_top, backend="triton"))
    method = build_method(name, **METHODS[name]["small"])
    lengths = (301, 37, 129)
    gen = torch.Generator().manual_seed(11)
    num_q, num_kv = heads
    q = torch.randn(sum(lengths), num_q, 64, generator=gen)
    k = torch.randn(sum(lengths), num_kv, 64, generator=gen)
    v = torch.randn(sum(lengths), num_kv, 64, generator=gen)
    bounds = [0, 301, 338, 467]
    cache = method.compress(q, k, v, torch.tensor(bounds, dtype=torch.int32), seq_lens=list(lengths))
    kept = []
    for start, end in zip(bounds, bounds[1:]):
        window = method.window_size(end - start)
        q_window, sample_k = q[end - window:end].transpose(0, 1), k[start:end].transpose(0, 1)
        if end - start <= method.token_capacity:
            kept.append(method.select_kept(q_window, sample_k))
            continue
        scores = method.importance(q_window, sample_k)  # through the Triton pooling (monkeypatched)
        reference = method.reference_allocate(scores)
        kept.append(KeptTokens(index=reference.index, lens=reference.lens))
    expected = reference_pack(kept, k, v, bounds)
    assert torch.equal(cache.index, expected.index) and torch.equal(cache.lens, expected.lens)
    assert torch.equal(cache.k, expected.k) and torch.equal(cache.v, expected.v)
    torch.testing.assert_close(cache.sparsity, expected.sparsity)


@pytest.mark.parametrize("params", [
    {"min_head_capacity_ratio": 0.0, "local_window": 0, "prefix_tokens": 0},  # floor 0: one global pick
    {"min_head_capacity_ratio": 1.0},  # no shared slots: SnapKV's budget
    {"min_head_capacity_ratio": 0.5, "token_capacity": 100},  # total = every token of a 100-token prompt
], ids=["no-floor", "no-shared", "everything"])
@pytest.mark.parametrize("levels", [2, 1000])
def test_ada_threshold_allocation_at_the_budget_corners(params, levels):
    config = dict(METHODS["ada_snapkv"]["small"], **params)
    method = build_method("ada_snapkv", **config)
    gen = torch.Generator().manual_seed(levels)
    scores = torch.randint(0, levels, (5, 100), generator=gen).float() / levels
    fast, reference = method._allocate(scores), method.reference_allocate(scores)
    assert torch.equal(fast.index, reference.index) and torch.equal(fast.lens, reference.lens)
    assert int(fast.lens.sum()) == method.token_capacity * 5


def _sort_cuts(keys, floor, total):
    """The cuts straight from the definition: per-head stable sorts of the keys' ranks, no shared code with
    `naive_ada_cuts`: head h keeps its `floor` best, the next `total - H * floor` best of the rest go anywhere."""
    heads, length = keys.shape
    keep = torch.zeros(heads, length, dtype=torch.bool)
    keep.scatter_(1, torch.sort(keys, dim=-1, descending=True).indices[:, :floor], True)
    rest = keys.masked_fill(keep, torch.iinfo(torch.int64).min).view(-1)
    extra = total - heads * floor
    keep.view(-1)[torch.sort(rest, descending=True).indices[:extra]] = True
    big = torch.iinfo(torch.int64).max
    return torch.where(keep, keys, big).amin(dim=-1), keep.sum(dim=-1).max()


@pytest.mark.parametrize("heads,length,floor,total", [
    (3, 203, 20, 150),     # floor + shared slots
    (5, 100, 0, 500),      # every token (no floor)
    (5, 100, 100, 500),    # floor = every token: no shared slot
    (4, 1030, 100, 400),   # floor only (total = H * floor)
    (3, 300, 0, 1),        # one shared slot, no floor
    (1, 50, 10, 10),       # one head
    (6, 4500, 300, 9000),  # several kernel blocks per head, non-power-of-two heads
    (2, 7, 0, 5),          # shorter than one block
])
@pytest.mark.parametrize("levels", [2, 1000, 1 << 22])
def test_ada_cuts_kernel_equals_the_reference(heads, length, floor, total, levels):
    gen = torch.Generator().manual_seed(length * 7 + levels)
    scores = torch.randint(0, levels, (heads, length), generator=gen).float() / levels - 0.5  # negatives too
    scores[:, : min(2, length)] = float("inf")  # the forced tokens tie at +inf
    scores[0, -1] = -0.0
    scores[-1, length // 2] = float("-inf")
    keys = flat_ordered_keys(scores)
    expected_cut, expected_width = _sort_cuts(keys, floor, total)
    ref_cut, ref_width = naive_ada_cuts(keys, floor, total)
    cut, width = ada_cuts(keys, floor, total, backend="triton")
    assert cut.shape == (heads,) and cut.dtype == torch.int64 and width.dim() == 0
    # the same kept set as the definition (its cut is the smallest kept key; min(f_h, g) may lie below it)
    kept = keys >= cut[:, None]
    assert torch.equal(kept, keys >= expected_cut[:, None]) and int(kept.sum()) == total
    assert torch.equal(keys >= ref_cut[:, None], kept)
    assert torch.equal(cut, ref_cut)  # both compute min(f_h, g) exactly
    assert int(width) == int(expected_width) == int(ref_width)


def test_ada_cuts_reject_bad_budgets():
    keys = flat_ordered_keys(torch.rand(3, 40))
    for floor, total in [(41, 123), (-1, 10), (10, 29), (0, 121)]:  # floor > T, < 0, total < H * floor, > H * T
        for backend in ("naive", "triton"):
            with pytest.raises(ValueError, match="budget"):
                ada_cuts(keys, floor, total, backend=backend)
    with pytest.raises(ValueError, match="int64"):
        ada_cuts(torch.rand(3, 40), 2, 10, backend="triton")


@pytest.mark.parametrize("params", [
    {"min_head_capacity_ratio": 0.0, "local_window": 0, "prefix_tokens": 0},
    {"min_head_capacity_ratio": 1.0},
    {"min_head_capacity_ratio": 0.5, "token_capacity": 100},
    {},
], ids=["no-floor", "no-shared", "everything", "default"])
@pytest.mark.parametrize("levels", [2, 1000])
def test_ada_radix_allocation_equals_the_reference(params, levels, monkeypatch):
    monkeypatch.setattr(ada_snapkv, "ada_cuts", functools.partial(ada_cuts, backend="triton"))
    monkeypatch.setattr(ada_snapkv, "compact_kept", functools.partial(compact_kept, backend="triton"))
    method = build_method("ada_snapkv", **dict(METHODS["ada_snapkv"]["small"], **params))
    method.allocation = "radix"
    gen = torch.Generator().manual_seed(levels + 1)
    scores = torch.randint(0, levels, (5, 100), generator=gen).float() / levels
    scores[:, :3] = float("inf")
    fast, reference = method._allocate(scores), method.reference_allocate(scores)
    assert torch.equal(fast.index, reference.index) and torch.equal(fast.lens, reference.lens)
    assert int(fast.lens.sum()) == method.token_capacity * 5
    method.allocation = "sort"
    with pytest.raises(ValueError, match="allocation"):
        method._allocate(scores)
