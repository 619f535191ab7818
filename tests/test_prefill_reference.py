"""PyTorch references of the sparse prefill methods (vertical_slash, block_sparse, flexprefill) and dense prefill.

Oracles are independent of the code under test: torch SDPA for dense attention, dense boolean masks built by
brute force from the selections (at small L), and a full softmax for the estimation sums. Shapes are tiny: CPU
only, fp32 unless a test says otherwise.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sparse_attn import ConfigError, build_method
from sparse_attn.kernels.block_sparse import block_sparse_pair_counts, naive_block_sparse_attention
from sparse_attn.kernels.estimation import naive_last_window_sums, naive_pooled_block_scores, stable_topk
from sparse_attn.kernels.vertical_slash import (
    naive_build_vertical_slash_index,
    naive_vertical_slash_attention,
    vertical_slash_pair_counts,
)
from sparse_attn.methods import BlockSparse, Dense, FlexPrefill, VerticalSlash
from sparse_attn.methods.flexprefill import coverage_budget

from .method_matrix import METHODS, PREFILL_METHODS

LENGTHS = (37, 301, 1000)
GQA = {"gqa4": (4, 1), "mha": (2, 2)}  # (Hq, Hkv)
HEAD_DIMS = (64, 128)


# ---------------------------------------------------------------------------------------------------------------
# helpers: inputs and brute-force oracles
# ---------------------------------------------------------------------------------------------------------------
def packed(lengths, num_q_heads, num_kv_heads, head_dim, seed=42, dtype=torch.float32):
    """Random varlen packed q, k, v `[N, H, D]` and `cu_seqlens [B+1]` int32."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q = torch.randn(total, num_q_heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(total, num_kv_heads, head_dim, generator=gen).to(dtype)
    v = torch.randn(total, num_kv_heads, head_dim, generator=gen).to(dtype)
    cu_seqlens = torch.tensor([0] + [sum(lengths[: i + 1]) for i in range(len(lengths))], dtype=torch.int32)
    return q, k, v, cu_seqlens


def sdpa_causal(q, k, v, cu_seqlens):
    """Dense causal oracle: torch SDPA per sample, fp32, `[N, Hq, D]`."""
    out = torch.empty(q.shape, dtype=torch.float32)
    bounds = cu_seqlens.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        q_s, k_s, v_s = (t[a:b].float().transpose(0, 1)[None] for t in (q, k, v))
        out[a:b] = F.scaled_dot_product_attention(q_s, k_s, v_s, is_causal=True, enable_gqa=True)[0].transpose(0, 1)
    return out


def masked_attention(q_s, k_s, v_s, mask):
    """Oracle for one sample: `q_s [L, Hq, D]`, `k_s, v_s [L, Hkv, D]`, `mask [Hq, L, L]` bool -> `[L, Hq, D]` fp32."""
    group = q_s.shape[1] // k_s.shape[1]
    k_rep = k_s.float().repeat_interleave(group, dim=1).transpose(0, 1)  # explicit GQA repeat: [Hq, L, D]
    v_rep = v_s.float().repeat_interleave(group, dim=1).transpose(0, 1)
    logits = q_s.float().transpose(0, 1) @ k_rep.transpose(1, 2) * q_s.shape[-1] ** -0.5
    probs = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    return (probs @ v_rep).transpose(0, 1)


def causal(length):
    return torch.ones(length, length, dtype=torch.bool).tril()


def vs_index_mask(length, block_count, block_offset, column_count, column_index):
    """Dense `[Hq, L, L]` mask of the (q, k) pairs a vertical-slash index computes (causal pairs only)."""
    heads = block_count.shape[0]
    mask = torch.zeros(heads, length, length, dtype=torch.bool)
    for h in range(heads):
        for row in range(-(-length // 64)):
            rows = slice(row * 64, min(row * 64 + 64, length))
            for start in block_offset[h, row, : block_count[h, row]].tolist():
                mask[h, rows, start: min(start + 64, length)] = True
            for col in column_index[h, row, : column_count[h, row]].tolist():
                mask[h, rows, col] = True
    return mask & causal(length)


def pattern_mask(length, verticals, offsets):
    """Dense `[L, L]` causal mask of keys in `verticals` or on diagonals `offsets` (o = q - k)."""
    q_pos = torch.arange(length)[:, None]
    k_pos = torch.arange(length)[None, :]
    on_vertical = torch.isin(k_pos, torch.tensor(verticals, dtype=torch.long)).expand(length, length)
    on_slash = torch.isin(q_pos - k_pos, torch.tensor(offsets, dtype=torch.long))
    return (on_vertical | on_slash) & causal(length)


def bs_index_mask(length, block_index, block_count, chunk):
    """Dense `[Hq, L, L]` mask of the (q, k) pairs a block index computes (causal pairs only)."""
    heads = block_count.shape[0]
    mask = torch.zeros(heads, length, length, dtype=torch.bool)
    for h in range(heads):
        for m in range(-(-length // chunk)):
            for n in block_index[h, m, : block_count[h, m]].tolist():
                mask[h, m * chunk: (m + 1) * chunk, n * chunk: (n + 1) * chunk] = True
    return mask & causal(length)


def selection_mask(selection, b, length):
    """Brute-force mask of sample b from any prefill selection."""
    if hasattr(selection, "block_index"):
        return bs_index_mask(length, selection.block_index[b], selection.block_count[b], selection.chunk_size)
    return vs_index_mask(length, selection.block_count[b], selection.block_offset[b], selection.column_count[b],
                         selection.column_index[b])


def random_pattern(length, heads, gen, n_vertical, n_slash, force_main_diagonal=True):
    """Random verticals (ascending) and slash offsets (descending) per head, padded with -1, and their counts."""
    verticals, offsets = [], []
    for _ in range(heads):
        nv = int(torch.randint(0, min(n_vertical, length) + 1, (1,), generator=gen))
        ns = int(torch.randint(1, min(n_slash, length) + 1, (1,), generator=gen))
        vert = sorted(torch.randperm(length, generator=gen)[:nv].tolist())
        offs = torch.randperm(length, generator=gen)[:ns].tolist()
        if force_main_diagonal and 0 not in offs:
            offs[0] = 0
        verticals.append(vert)
        offsets.append(sorted(offs, reverse=True))
    return verticals, offsets


def pad_pattern(per_sample):
    """[[list per head] per sample] -> (`[B, H, n]` int32 padded with -1, counts `[B, H]` int32)."""
    width = max(1, max(len(x) for sample in per_sample for x in sample))
    values = torch.full((len(per_sample), len(per_sample[0]), width), -1, dtype=torch.int32)
    counts = torch.zeros(len(per_sample), len(per_sample[0]), dtype=torch.int32)
    for b, sample in enumerate(per_sample):
        for h, x in enumerate(sample):
            values[b, h, : len(x)] = torch.tensor(x, dtype=torch.int32)
            counts[b, h] = len(x)
    return values, counts


def prefill_method(name, budget):
    return build_method(name, **METHODS[name][budget])


# ---------------------------------------------------------------------------------------------------------------
# full budget == dense attention
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head_dim", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("gqa", list(GQA), ids=str)
@pytest.mark.parametrize("name", PREFILL_METHODS + ["dense"])
def test_full_budget_equals_dense(name, gqa, head_dim):
    q, k, v, cu = packed(LENGTHS, *GQA[gqa], head_dim)
    result = prefill_method(name, "full").prefill(q, k, v, cu)
    assert result.out.shape == q.shape and result.out.dtype == q.dtype
    torch.testing.assert_close(result.out, sdpa_causal(q, k, v, cu), atol=2e-5, rtol=1e-4)
    assert result.sparsity.shape == (len(LENGTHS), q.shape[1])
    assert torch.equal(result.sparsity, torch.zeros_like(result.sparsity))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_full_budget_low_precision_inputs(dtype):
    q, k, v, cu = packed((45, 130), 4, 2, 64, dtype=dtype)
    ref = sdpa_causal(q, k, v, cu)
    for name in PREFILL_METHODS:
        result = prefill_method(name, "full").prefill(q, k, v, cu)
        assert result.out.dtype == dtype
        torch.testing.assert_close(result.out.float(), ref, atol=2e-2, rtol=2e-2)


def test_dense_prefill_backends_and_errors():
    q, k, v, cu = packed((5, 70), 6, 3, 32)
    for backend in ("auto", "naive"):
        result = Dense().prefill(q, k, v, cu, backend=backend)
        torch.testing.assert_close(result.out, sdpa_causal(q, k, v, cu), atol=1e-5, rtol=1e-5)
        assert torch.equal(result.sparsity, torch.zeros(2, 6))
    with pytest.raises(ValueError, match="multiple of KV heads"):
        Dense().prefill(q[:, :5], k, v, cu)
    with pytest.raises(ValueError, match="cu_seqlens must start at 0 and end at N"):
        VerticalSlash().prefill(q, k, v, torch.tensor([0, 5, 74], dtype=torch.int32))
    with pytest.raises(ValueError, match="backend"):
        Dense().prefill(q, k, v, cu, backend="cuda")


# ---------------------------------------------------------------------------------------------------------------
# small budgets: the method acts, its output is masked attention over its selection, sparsity is the exact count
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PREFILL_METHODS)
def test_small_budget_output_and_sparsity_match_selection(name):
    lengths = (37, 301)
    q, k, v, cu = packed(lengths, 4, 2, 64, seed=7)
    q_poison = q.clone()
    result = prefill_method(name, "small").prefill(q_poison, k, v, cu)
    assert torch.equal(q_poison, q)  # inputs untouched
    bounds = cu.tolist()
    for b, length in enumerate(lengths):
        mask = selection_mask(result.selection, b, length)
        rows = slice(bounds[b], bounds[b + 1])
        expected = masked_attention(q[rows], k[rows], v[rows], mask)
        torch.testing.assert_close(result.out[rows], expected, atol=1e-5, rtol=1e-5)
        counted = mask.sum(dim=(1, 2)).double()
        exact = 1.0 - counted / (length * (length + 1) / 2)
        torch.testing.assert_close(result.sparsity[b].double(), exact, atol=1e-6, rtol=0)
        torch.testing.assert_close(result.selection.sparsity()[b].double(), exact, atol=1e-6, rtol=0)
    # the method really changed the computation on the 301-token prompt
    assert bool((result.sparsity[1] > 0.2).all())
    assert not torch.allclose(result.out, sdpa_causal(q, k, v, cu), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# vertical-slash index builder and mixed attention primitive
# ---------------------------------------------------------------------------------------------------------------
def test_build_vertical_slash_index_hand_example():
    # L = 256, slashes at offsets 100 and 0, verticals 5, 70, 200 (worked out by hand from the merge rule)
    cu = torch.tensor([0, 256], dtype=torch.int32)
    vertical, v_count = pad_pattern([[[5, 70, 200]]])
    slash, s_count = pad_pattern([[[100, 0]]])
    block_count, block_offset, column_count, column_index = naive_build_vertical_slash_index(
        cu, vertical, v_count, slash, s_count)
    blocks = [block_offset[0, 0, r, : block_count[0, 0, r]].tolist() for r in range(4)]
    columns = [column_index[0, 0, r, : column_count[0, 0, r]].tolist() for r in range(4)]
    assert blocks == [[0], [0, 64], [28, 128], [92, 192]]
    assert columns == [[], [], [5], [5, 70]]
    assert block_offset.shape == (1, 1, 4, 2) and column_index.shape == (1, 1, 4, 2)  # widths: the widest row
    assert int(block_offset[0, 0, 0, 1]) == -1  # unused slots


@pytest.mark.parametrize("force_main_diagonal", [True, False], ids=["with_offset0", "without_offset0"])
def test_build_vertical_slash_index_covers_pattern(force_main_diagonal):
    gen = torch.Generator().manual_seed(3)
    lengths, heads = (1, 64, 200, 333), 3
    per_sample = [random_pattern(n, heads, gen, 40, 12, force_main_diagonal) for n in lengths]
    vertical, v_count = pad_pattern([p[0] for p in per_sample])
    slash, s_count = pad_pattern([p[1] for p in per_sample])
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    index = naive_build_vertical_slash_index(cu, vertical, v_count, slash, s_count)
    block_count, block_offset, column_count, column_index = index
    assert block_offset.dtype == column_index.dtype == torch.int32
    pairs = vertical_slash_pair_counts(cu, *index)
    for b, length in enumerate(lengths):
        got = vs_index_mask(length, block_count[b], block_offset[b], column_count[b], column_index[b])
        for h in range(heads):
            want = pattern_mask(length, per_sample[b][0][h], per_sample[b][1][h])
            assert not bool((want & ~got[h]).any()), "a vertical or slash pair is missing from the index"
            assert int(pairs[b, h]) == int(got[h].sum()), "pair count differs from the brute-force union"
            for row in range(-(-length // 64)):
                starts = block_offset[b, h, row, : block_count[b, h, row]].tolist()
                cols = column_index[b, h, row, : column_count[b, h, row]].tolist()
                assert starts == sorted(starts) and all(s2 - s1 >= 64 for s1, s2 in zip(starts, starts[1:]))
                assert all(0 <= s < (row + 1) * 64 for s in starts) and len(starts) <= s_count[b, h]
                assert cols == sorted(cols) and all(c < (row + 1) * 64 for c in cols)
                assert not any(s <= c < s + 64 for c in cols for s in starts)  # columns outside blocks
                if force_main_diagonal:  # columns are then strictly past keys of the whole row: no causal mask needed
                    assert all(c < row * 64 for c in cols)
        assert bool((block_count[b, :, -(-length // 64):] == 0).all())  # rows past the sample are empty


def test_naive_vertical_slash_attention_matches_masked_dense():
    gen = torch.Generator().manual_seed(5)
    lengths, hq, hkv = (70, 190), 4, 2
    q, k, v, cu = packed(lengths, hq, hkv, 64, seed=11)
    per_sample = [random_pattern(n, hq, gen, 30, 8, force_main_diagonal=(b == 0)) for b, n in enumerate(lengths)]
    vertical, v_count = pad_pattern([p[0] for p in per_sample])
    slash, s_count = pad_pattern([p[1] for p in per_sample])
    index = naive_build_vertical_slash_index(cu, vertical, v_count, slash, s_count)
    out = torch.full_like(q, float("nan"))
    returned = naive_vertical_slash_attention(q, k, v, cu, *index, out=out)
    assert returned is out and not bool(out.isnan().any())
    bounds = cu.tolist()
    for b, length in enumerate(lengths):
        mask = vs_index_mask(length, *(t[b] for t in index))
        rows = slice(bounds[b], bounds[b + 1])
        empty = ~mask.any(-1)  # queries with no key (possible without offset 0) get 0
        expected = masked_attention(q[rows], k[rows], v[rows], mask | empty[..., None]).masked_fill(
            empty.transpose(0, 1)[..., None], 0.0)
        torch.testing.assert_close(out[rows], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PREFILL_METHODS)
def test_prefill_never_reads_future_keys(name):
    # change every key and value from position 150 on: outputs of the queries before 150 must not move
    length, cut = 301, 150
    q, k, v, cu = packed((length,), 4, 2, 64, seed=17)
    method = prefill_method(name, "small")
    selection = method.select(q, k, cu)
    k2, v2 = k.clone(), v.clone()
    k2[cut:], v2[cut:] = 3.0 * torch.randn_like(k2[cut:]), 3.0 * torch.randn_like(v2[cut:])
    if name == "block_sparse":
        args = (selection.block_index, selection.block_count, selection.chunk_size)
        before = naive_block_sparse_attention(q, k, v, cu, *args)
        after = naive_block_sparse_attention(q, k2, v2, cu, *args)
    else:
        args = (selection.block_count, selection.block_offset, selection.column_count, selection.column_index)
        before = naive_vertical_slash_attention(q, k, v, cu, *args)
        after = naive_vertical_slash_attention(q, k2, v2, cu, *args)
    assert torch.equal(before[:cut], after[:cut])
    assert not torch.allclose(before[cut:], after[cut:])


# ---------------------------------------------------------------------------------------------------------------
# block-sparse primitive
# ---------------------------------------------------------------------------------------------------------------
def test_naive_block_sparse_attention_matches_masked_dense():
    gen = torch.Generator().manual_seed(9)
    lengths, hq, hkv, chunk = (17, 100), 4, 1, 16
    q, k, v, cu = packed(lengths, hq, hkv, 64, seed=13)
    n_q = -(-max(lengths) // chunk)
    block_index = torch.full((2, hq, n_q, 3), -1, dtype=torch.int32)
    block_count = torch.zeros(2, hq, n_q, dtype=torch.int32)
    for b, length in enumerate(lengths):
        for h in range(hq):
            for m in range(-(-length // chunk)):
                chosen = sorted({m, *torch.randint(0, m + 1, (2,), generator=gen).tolist()})
                block_index[b, h, m, : len(chosen)] = torch.tensor(chosen, dtype=torch.int32)
                block_count[b, h, m] = len(chosen)
    out = torch.full_like(q, float("nan"))
    naive_block_sparse_attention(q, k, v, cu, block_index, block_count, chunk, out=out)
    assert not bool(out.isnan().any())
    pairs = block_sparse_pair_counts(cu, block_index, block_count, chunk)
    bounds = cu.tolist()
    for b, length in enumerate(lengths):
        mask = bs_index_mask(length, block_index[b], block_count[b], chunk)
        rows = slice(bounds[b], bounds[b + 1])
        torch.testing.assert_close(out[rows], masked_attention(q[rows], k[rows], v[rows], mask), atol=1e-5, rtol=1e-5)
        assert pairs[b].tolist() == mask.sum(dim=(1, 2)).tolist()


# ---------------------------------------------------------------------------------------------------------------
# estimation
# ---------------------------------------------------------------------------------------------------------------
def test_last_window_sums_match_full_softmax():
    lengths, window = (5, 40, 97), 16
    q, k, _, cu = packed(lengths, 4, 2, 32, seed=21)
    vertical, slash = naive_last_window_sums(q, k, cu, window)
    assert vertical.shape == slash.shape == (3, 4, 97)
    bounds = cu.tolist()
    for b, length in enumerate(lengths):
        rows = slice(bounds[b], bounds[b + 1])
        k_rep = k[rows].repeat_interleave(2, dim=1)
        logits = torch.einsum("qhd,khd->hqk", q[rows], k_rep) / 32**0.5
        probs = torch.softmax(logits.masked_fill(~causal(length), float("-inf")), dim=-1)  # full [Hq, L, L]
        w = min(window, length)
        last = probs[:, length - w:]
        torch.testing.assert_close(vertical[b, :, :length], last.sum(1))
        diag = torch.stack([torch.diagonal(last, offset=length - w - o, dim1=1, dim2=2).sum(-1)
                            for o in range(length)], dim=-1)
        torch.testing.assert_close(slash[b, :, :length], diag)
        assert bool((vertical[b, :, length:] == 0).all()) and bool((slash[b, :, length:] == 0).all())
        torch.testing.assert_close(slash[b].sum(-1), torch.full((4,), float(w)))


def test_pooled_block_scores_match_mean_pooling():
    q, k, _, cu = packed((40, 23), 2, 1, 8, seed=2)
    scores = naive_pooled_block_scores(q, k, cu, 16)
    assert scores.shape == (2, 2, 3, 3)
    q0, k0 = q[40:63], k[40:63, 0]
    q_pool = torch.stack([q0[:16].mean(0), q0[16:].sum(0) / 16])  # the partial block: zero padding counts
    k_pool = torch.stack([k0[:16].mean(0), k0[16:].sum(0) / 16])
    torch.testing.assert_close(scores[1, :, :2, :2], torch.einsum("mhd,nd->hmn", q_pool, k_pool))
    assert bool((scores[1, :, 2] == 0).all()) and bool((scores[1, :, :, 2] == 0).all())


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for t in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return result


def test_estimation_never_materialises_l_by_l():
    length, window = 32768, 64
    q, k, v, cu = packed((length,), 2, 1, 64, seed=1)
    with _LargestTensor() as probe:
        vertical, slash = naive_last_window_sums(q, k, cu, window)
    # one GQA group's [G, w, L + w] window buffer at most: ~4M elements, versus L * L = 1.07e9
    assert probe.largest <= 2 * window * (length + window)
    assert int(vertical[0, 0].argmax()) >= 0 and torch.allclose(vertical.sum(-1), torch.full((1, 2), 64.0))
    with _LargestTensor() as probe:
        selection = VerticalSlash(vertical_size=64, slash_size=64, approximation_size=window).select(q, k, cu)
    assert probe.largest <= 2 * window * (length + window)
    assert bool((selection.sparsity() > 0.99).all())


# ---------------------------------------------------------------------------------------------------------------
# hand-checkable selections
# ---------------------------------------------------------------------------------------------------------------
def planted_key_inputs(length, planted, hq=4, hkv=2, head_dim=32, seed=4, strength=6.0):
    """Queries share a direction u; the key at `planted` is `strength * u`: it dominates every row."""
    q, k, v, cu = packed((length,), hq, hkv, head_dim, seed=seed)
    u = torch.zeros(head_dim)
    u[0] = 1.0
    q = 0.3 * q + 2.0 * u
    k = 0.3 * k
    k[planted] = strength * u
    return q, k, v, cu


@pytest.mark.parametrize("name", ["vertical_slash", "flexprefill"])
def test_planted_key_is_a_vertical(name):
    length, planted = 300, 150
    q, k, v, cu = planted_key_inputs(length, planted)
    method = build_method(name, **METHODS[name]["small"])
    selection = method.select(q, k, cu)
    for h in range(q.shape[1]):
        verticals = selection.vertical_idx[0, h, : selection.vertical_count[0, h]].tolist()
        offsets = selection.slash_offsets[0, h, : selection.slash_count[0, h]].tolist()
        assert planted in verticals
        assert {0, 1, 2, 3} <= set(verticals)  # sinks
        assert set(range(64)) <= set(offsets)  # local diagonals
        mask = selection_mask(selection, 0, length)[h]
        assert bool(mask[planted:, planted].all())  # every later query sees the planted key
        assert bool(mask[:, :4].tril().eq(causal(length)[:, :4]).all())  # every query sees the sinks
        local = causal(length) & ~causal(length).tril(-64)
        assert bool(mask[local].all())  # and its 64 nearest keys


def test_planted_key_block_is_selected_and_structure_blocks_are_kept():
    length, chunk, planted = 300, 16, 150
    q, k, v, cu = planted_key_inputs(length, planted, strength=24.0)  # diluted 16x by the block mean
    selection = BlockSparse(chunk_size=chunk, top_chunks=4).select(q, k, cu)
    n_q = -(-length // chunk)
    assert selection.block_index.shape == (1, 4, n_q, 4) and selection.block_index.dtype == torch.int32
    for h in range(q.shape[1]):
        for m in range(n_q):
            chosen = selection.block_index[0, h, m, : selection.block_count[0, h, m]].tolist()
            assert len(chosen) == min(m + 1, 4) and chosen == sorted(chosen)
            assert {0, m, max(m - 1, 0)} <= set(chosen)
            assert all(0 <= n <= m for n in chosen)
            if m > planted // chunk:
                assert planted // chunk in chosen


def test_flexprefill_budgets_follow_alpha_coverage_with_floor():
    dist = torch.tensor([[[0.5, 0.3, 0.1, 0.1, 0.0]]])
    lens = torch.tensor([5])
    assert coverage_budget(dist, 0.65, 1, lens).item() == 2  # 0.5 <= 0.65 < 0.8: one entry, +1
    assert coverage_budget(dist, 0.85, 1, lens).item() == 3
    assert coverage_budget(dist, 0.0, 1, lens).item() == 1
    assert coverage_budget(dist, 0.65, 4, lens).item() == 4  # the floor
    assert coverage_budget(dist, 0.65, 9, lens).item() == 5  # clamped to L

    length, window = 400, 32
    q, k, v, cu = packed((length,), 2, 1, 32, seed=8)
    vertical, slash = naive_last_window_sums(q, k, cu, window)
    budgets = []
    for alpha in (0.0, 0.5, 0.9, 1.0):
        selection = FlexPrefill(alpha=alpha, approximation_size=window, min_budget=64).select(q, k, cu)
        expected_v = coverage_budget(vertical / window, alpha, 64, torch.tensor([length]))
        expected_s = coverage_budget(slash / window, alpha, 64, torch.tensor([length]))
        assert torch.equal(selection.vertical_count.long(), expected_v)
        assert torch.equal(selection.slash_count.long(), expected_s)
        budgets.append(selection.vertical_count.clone())
    assert bool((budgets[0] == 64).all())  # alpha = 0: exactly min_budget
    assert bool((budgets[1] > 64).any())  # coverage drives the budget above the floor
    assert all(bool((a <= b).all()) for a, b in zip(budgets, budgets[1:]))  # monotone in alpha
    assert bool((budgets[3] == length).all())  # alpha = 1: everything
    # and per head: the two heads see different attention, so their budgets differ
    assert int(budgets[1][0, 0]) != int(budgets[1][0, 1])


def test_short_prompts_clamp_budgets():
    q, k, v, cu = packed((3, 20), 2, 2, 16, seed=6)
    for name in PREFILL_METHODS:
        method = build_method(name)  # reference defaults (512-sized budgets) on 3- and 20-token prompts
        result = method.prefill(q, k, v, cu)
        torch.testing.assert_close(result.out, sdpa_causal(q, k, v, cu), atol=1e-5, rtol=1e-5)
        assert torch.equal(result.sparsity, torch.zeros(2, 2))


def test_stable_topk_ties_go_to_lower_index():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, float("-inf")]])
    assert stable_topk(scores, torch.tensor([2])).tolist() == [[1, 2]]
    assert stable_topk(scores, torch.tensor([4])).tolist() == [[1, 2, 3, 4]]
    assert stable_topk(scores, torch.tensor([4]), descending=True).tolist() == [[4, 3, 2, 1]]
    padded = stable_topk(scores.expand(2, -1), torch.tensor([1, 3]))
    assert padded.tolist() == [[1, -1, -1], [1, 2, 4]]


@pytest.mark.parametrize("name", PREFILL_METHODS)
def test_ties_are_deterministic(name):
    # constant keys: every key in a window row gets the same probability, so scores tie everywhere
    q, k, v, cu = packed((150,), 2, 1, 16, seed=12)
    k = torch.ones_like(k)
    method = prefill_method(name, "small")
    first, second = method.select(q, k, cu), method.select(q.clone(), k.clone(), cu.clone())
    for field in ("vertical_idx", "slash_offsets", "block_offset", "column_index", "block_index"):
        if hasattr(first, field):
            assert torch.equal(getattr(first, field), getattr(second, field))
    if name == "vertical_slash":  # ties among the non-forced keys go to the lowest positions
        assert first.vertical_idx[0, 0].tolist() == list(range(8))


def test_invalid_budgets_name_the_parameter():
    with pytest.raises(ConfigError, match="vertical_size"):
        VerticalSlash(vertical_size=3)
    with pytest.raises(ConfigError, match="slash_size"):
        VerticalSlash(slash_size=32)
    with pytest.raises(ConfigError, match="top_chunks"):
        BlockSparse(top_chunks=2)
    with pytest.raises(ConfigError, match="min_budget"):
        FlexPrefill(min_budget=10)
