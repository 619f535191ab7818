"""Quest over a paged (vLLM-style) KV cache: the Triton kernels (`kernels/quest/triton.py`, `triton_paged_*`) vs
their PyTorch references (`kernels/quest/naive.py`, `naive_paged_*`) and vs the contiguous-cache Quest.

Random keys/values in shuffled physical blocks, GQA, batch > 1, ragged (odd) lengths, padding slots, NaN in every
cache slot and metadata page no request owns, NaN-poisoned outputs. On CPU the kernels run in Triton's interpreter
(conftest); with TRITON_INTERPRET=0 on a CUDA machine the same tests run the compiled kernels on the GPU.
"""
import os

import pytest
import torch

pytest.importorskip("triton")

from sparse_attn.kernels.quest import (  # noqa: E402
    naive_build_page_meta,
    naive_paged_page_scores,
    naive_paged_quest_decode,
    naive_paged_update_page_meta,
    naive_quest_decode,
    naive_quest_page_scores,
    naive_quest_select_pages,
    paged_gather,
    paged_page_scores,
    paged_quest_decode,
    paged_update_page_meta,
)

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "0" else "cpu"
HKV, HQ, D, BLOCK, PAGE = 2, 6, 32, 32, 16  # GQA group 3 (not a power of two)
LENGTHS = [37, 133, 90]
# fp32 tolerance of the attention kernels: exact-ish in the interpreter (fp32 dots), TF32 tensor-core dots on a GPU
F32_TOL = dict(rtol=5e-3, atol=5e-3) if DEVICE == "cuda" else dict(rtol=1e-4, atol=1e-4)


def _paged(lengths, num_blocks=24, seed=0, dtype=torch.float32):
    """NaN-filled paged caches `[num_blocks, BLOCK, HKV, D]` with each request's tokens in shuffled blocks.

    Returns (key_cache, value_cache, block_tables [B, max_blocks] int32, keys [N, HKV, D], slots [N] of the
    concatenated requests in batch order)."""
    gen = torch.Generator().manual_seed(seed)
    key_cache = torch.full((num_blocks, BLOCK, HKV, D), float("nan"), dtype=dtype)
    value_cache = torch.full((num_blocks, BLOCK, HKV, D), float("nan"), dtype=dtype)
    order = torch.randperm(num_blocks, generator=gen)
    max_blocks = max(-(-n // BLOCK) for n in lengths) + 1  # one spare column, as vLLM tables are wider
    tables = torch.zeros(len(lengths), max_blocks, dtype=torch.int32)
    used, keys, slots = 0, [], []
    for b, n in enumerate(lengths):
        blocks = -(-n // BLOCK)
        tables[b, :blocks] = order[used:used + blocks].int()
        used += blocks
        pos = torch.arange(n)
        slot = tables[b, pos // BLOCK].long() * BLOCK + pos % BLOCK
        k = torch.randn(n, HKV, D, generator=gen).to(dtype)
        v = torch.randn(n, HKV, D, generator=gen).to(dtype)
        key_cache.view(-1, HKV, D)[slot] = k
        value_cache.view(-1, HKV, D)[slot] = v
        keys.append(k)
        slots.append(slot)
    dev = lambda t: t.to(DEVICE)  # noqa: E731
    return dev(key_cache), dev(value_cache), dev(tables), dev(torch.cat(keys)), dev(torch.cat(slots))


def _empty_meta(num_blocks, dtype=torch.float32):
    shape = (num_blocks * BLOCK // PAGE, HKV, D)
    return (torch.full(shape, float("nan"), dtype=dtype, device=DEVICE),
            torch.full(shape, float("nan"), dtype=dtype, device=DEVICE))


def _owned_pages(tables, lengths):
    """Global ids of the physical pages holding tokens of some request."""
    ids = []
    for b, n in enumerate(lengths):
        for page in range(-(-n // PAGE)):
            ids.append(int(tables[b, page * PAGE // BLOCK]) * (BLOCK // PAGE) + page % (BLOCK // PAGE))
    return torch.tensor(ids, device=DEVICE)


def _steps(keys, slots, lengths):
    """Split the writes as vLLM would: one step with every prompt but its last token (plus 5 padding slots and a
    longer key tensor), then one decode step per request (the last token; lands mid-page or on a fresh page)."""
    starts = torch.tensor([0] + lengths).cumsum(0).tolist()
    prompt = torch.cat([torch.arange(starts[b], starts[b + 1] - 1) for b in range(len(lengths))]).to(DEVICE)
    last = torch.tensor([starts[b + 1] - 1 for b in range(len(lengths))], device=DEVICE)
    pad_slots = torch.full((5,), -1, dtype=slots.dtype, device=DEVICE)
    pad_keys = torch.randn(7, HKV, D, device=DEVICE).to(keys.dtype)
    first = (torch.cat([keys[prompt], pad_keys]), torch.cat([slots[prompt], pad_slots]))
    second = (keys[last], slots[last])
    return first, second


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_update_matches_reference_and_contiguous_metadata(dtype):
    key_cache, _, tables, keys, slots = _paged(LENGTHS, dtype=dtype)
    got_min, got_max = _empty_meta(key_cache.shape[0], dtype)
    ref_min, ref_max = _empty_meta(key_cache.shape[0], dtype)
    for key, slot in _steps(keys, slots, LENGTHS):
        paged_update_page_meta(got_min, got_max, key, slot, PAGE, backend="triton")
        naive_paged_update_page_meta(ref_min, ref_max, key, slot, PAGE)
    owned = _owned_pages(tables, LENGTHS)
    assert not got_min[owned].isnan().any() and not got_max[owned].isnan().any()
    torch.testing.assert_close(got_min[owned], ref_min[owned], rtol=0, atol=0)
    torch.testing.assert_close(got_max[owned], ref_max[owned], rtol=0, atol=0)
    # the same as the contiguous-cache metadata of the gathered requests
    lens = torch.tensor(LENGTHS, device=DEVICE)
    dense_k = paged_gather(key_cache, tables, max(LENGTHS))
    want_min, want_max = naive_build_page_meta(dense_k, lens, PAGE)
    flat_min, flat_max = got_min.view(-1, BLOCK // PAGE, HKV, D), got_max.view(-1, BLOCK // PAGE, HKV, D)
    for b, n in enumerate(LENGTHS):
        for page in range(-(-n // PAGE)):
            block = int(tables[b, page * PAGE // BLOCK])
            assert torch.equal(flat_min[block, page % (BLOCK // PAGE)], want_min[b, :, page])
            assert torch.equal(flat_max[block, page % (BLOCK // PAGE)], want_max[b, :, page])
    # pages nobody wrote stay untouched (still the NaN poison)
    untouched = torch.ones(got_min.shape[0], dtype=torch.bool, device=DEVICE)
    untouched[owned] = False
    assert got_min[untouched].isnan().all()


def test_paged_update_resets_a_reused_page_and_folds_mid_page():
    key_cache, _, tables, keys, slots = _paged([40], num_blocks=4)
    page_min, page_max = _empty_meta(4)
    page_min.fill_(-1e4)  # stale values of a freed block: must be reset by the write at the page's first slot
    page_max.fill_(1e4)
    ref_min, ref_max = page_min.clone(), page_max.clone()
    for chunk in (slice(0, 5), slice(5, 20), slice(20, 21), slice(21, 40)):  # runs start mid-page
        paged_update_page_meta(page_min, page_max, keys[chunk], slots[chunk], PAGE, backend="triton")
        naive_paged_update_page_meta(ref_min, ref_max, keys[chunk], slots[chunk], PAGE)
    owned = _owned_pages(tables, [40])
    assert torch.equal(page_min[owned], ref_min[owned]) and torch.equal(page_max[owned], ref_max[owned])
    assert float(page_min[owned].min()) > -1e4 and float(page_max[owned].max()) < 1e4


@pytest.mark.parametrize("share_pages", [True, False])
def test_paged_page_scores_match_reference_and_contiguous(share_pages):
    key_cache, _, tables, keys, slots = _paged(LENGTHS, seed=1)
    page_min, page_max = _empty_meta(key_cache.shape[0])
    naive_paged_update_page_meta(page_min, page_max, keys, slots, PAGE)  # NaN stays in pages nobody owns
    lens = torch.tensor(LENGTHS, device=DEVICE)
    q = torch.randn(len(LENGTHS), HQ, D, device=DEVICE)
    pages = -(-max(LENGTHS) // PAGE) + 1  # one page past the longest request: must score -inf
    got = paged_page_scores(q, page_min, page_max, tables, lens, PAGE, BLOCK, pages, share_pages, backend="triton")
    want = naive_paged_page_scores(q, page_min, page_max, tables, lens, PAGE, BLOCK, pages, share_pages)
    assert not got.isnan().any()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    dense_min, dense_max = naive_build_page_meta(paged_gather(key_cache, tables, max(LENGTHS)), lens, PAGE)
    contiguous = naive_quest_page_scores(q, dense_min, dense_max, lens, PAGE, share_pages)
    torch.testing.assert_close(got[..., :contiguous.shape[-1]], contiguous, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("share_pages", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_quest_decode_matches_reference_and_contiguous(share_pages, dtype):
    key_cache, value_cache, tables, keys, slots = _paged(LENGTHS, seed=2, dtype=dtype)
    page_min, page_max = _empty_meta(key_cache.shape[0], dtype)
    naive_paged_update_page_meta(page_min, page_max, keys, slots, PAGE)
    lens = torch.tensor(LENGTHS, device=DEVICE)
    q = torch.randn(len(LENGTHS), HQ, D, device=DEVICE).to(dtype)
    pages = -(-max(LENGTHS) // PAGE)
    scores = naive_paged_page_scores(q, page_min, page_max, tables, lens, PAGE, BLOCK, pages, share_pages)
    page_index = naive_quest_select_pages(scores, lens, PAGE, page_budget=3)  # short rows get -1 padding
    assert bool((page_index < 0).any())
    out = torch.full_like(q, float("nan"))
    got = paged_quest_decode(q, key_cache, value_cache, tables, lens, page_index, PAGE, scale=0.3, out=out,
                             backend="triton")
    assert got.data_ptr() == out.data_ptr() and not got.isnan().any()
    want = naive_paged_quest_decode(q, key_cache, value_cache, tables, lens, page_index, PAGE, scale=0.3)
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else F32_TOL
    torch.testing.assert_close(got.float(), want.float(), **tol)
    dense_k = paged_gather(key_cache, tables, max(LENGTHS))
    dense_v = paged_gather(value_cache, tables, max(LENGTHS))
    contiguous = naive_quest_decode(q, dense_k, dense_v, lens, page_index, PAGE, scale=0.3)
    torch.testing.assert_close(got.float(), contiguous.float(), **tol)


def test_paged_quest_decode_full_budget_is_dense_attention():
    """With a budget covering every page the paged kernel is plain causal decode over each request."""
    key_cache, value_cache, tables, _, _ = _paged(LENGTHS, seed=3)
    lens = torch.tensor(LENGTHS, device=DEVICE)
    q = torch.randn(len(LENGTHS), HQ, D, device=DEVICE)
    pages = -(-max(LENGTHS) // PAGE)
    page_index = torch.full((len(LENGTHS), HKV, pages), -1, dtype=torch.int32, device=DEVICE)
    for b, n in enumerate(LENGTHS):
        page_index[b, :, :-(-n // PAGE)] = torch.arange(-(-n // PAGE), dtype=torch.int32, device=DEVICE)
    got = paged_quest_decode(q, key_cache, value_cache, tables, lens, page_index, PAGE, backend="triton")
    for b, n in enumerate(LENGTHS):
        k = paged_gather(key_cache, tables[b:b + 1], n)[0].repeat_interleave(HQ // HKV, 0)  # [HQ, n, D]
        v = paged_gather(value_cache, tables[b:b + 1], n)[0].repeat_interleave(HQ // HKV, 0)
        probs = torch.softmax(torch.einsum("hd,hnd->hn", q[b], k) * D ** -0.5, -1)
        torch.testing.assert_close(got[b], torch.einsum("hn,hnd->hd", probs, v), **F32_TOL)


def test_paged_kernels_refuse_bad_shapes():
    key_cache, value_cache, tables, _, _ = _paged([20], num_blocks=2)
    q = torch.randn(1, HQ, D, device=DEVICE)
    lens = torch.tensor([20], device=DEVICE)
    with pytest.raises(ValueError, match="must divide block_size"):
        paged_quest_decode(q, key_cache, value_cache, tables, lens, torch.zeros(1, HKV, 1, dtype=torch.int32,
                           device=DEVICE), 24, backend="triton")
    with pytest.raises(ValueError, match="page_index must be"):
        paged_quest_decode(q, key_cache, value_cache, tables, lens, torch.zeros(1, 5, 1, dtype=torch.int32,
                           device=DEVICE), PAGE, backend="triton")
