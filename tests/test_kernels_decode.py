"""Triton decode kernels (compressed-cache decode, Quest scores / selection / decode / metadata update) against the
PyTorch references, on the CPU through the Triton interpreter (TRITON_INTERPRET=1, set in conftest).

Fresh random inputs, odd and per-head different lengths, GQA 4:1 and 1:1, B = 3, head dims 64 and 128; outputs are
poisoned with NaN before the run and cache entries the kernels must not read hold NaN too.
"""
import pytest
import torch

from sparse_attn.kernels.decode import decode, naive_decode
from sparse_attn.kernels.decode.triton import _COUNTERS, triton_decode
from sparse_attn.kernels.quest import (
    append_token,
    naive_append_token,
    naive_build_page_meta,
    naive_quest_decode,
    naive_quest_page_scores,
    naive_quest_select_pages,
    naive_selection_reads,
    naive_update_page_meta,
    quest_decode,
    quest_page_scores,
    quest_select_pages,
    update_page_meta,
)
from sparse_attn.kernels.quest.triton import (
    _topk_select_pages,
    triton_append_token,
    triton_quest_decode,
    triton_quest_page_scores,
    triton_quest_select_pages,
    triton_update_page_meta,
)

PAGE = 16
SHAPES = [  # (B, Hq, Hkv, D): GQA 4:1 and 1:1, head dims 64 and 128
    pytest.param(3, 8, 2, 64, id="gqa4-d64"),
    pytest.param(3, 2, 2, 128, id="mha-d128"),
]


def assert_close(name, ref, out, ratio):
    """No NaN / unwritten element, and relative RMSE <= ratio."""
    assert not torch.isnan(out).any(), f"{name}: NaN in the output (element not written or NaN read)"
    ref64, out64 = ref.double(), out.double()
    err = ((out64 - ref64).pow(2).mean().sqrt() / ref64.pow(2).mean().sqrt().clamp_min(1e-12)).item()
    assert err <= ratio, f"{name}: relative RMSE {err:.3g} > {ratio}"


def poisoned_cache(batch, heads, length, dim, valid, dtype, generator):
    """Random `[B, H, length, D]` cache whose entries past `valid [B, H]` are NaN (must never be read)."""
    cache = torch.randn(batch, heads, length, dim, generator=generator).to(dtype)
    beyond = torch.arange(length)[None, None, :] >= valid[..., None]
    return cache.masked_fill(beyond[..., None], float("nan"))


@pytest.mark.parametrize("batch,num_q_heads,num_kv_heads,head_dim", SHAPES)
@pytest.mark.parametrize("num_splits", [None, 3], ids=["auto-splits", "3-splits"])
def test_triton_decode_per_head_lengths(batch, num_q_heads, num_kv_heads, head_dim, num_splits):
    gen = torch.Generator().manual_seed(42)
    capacity = 77
    lens = torch.randint(1, capacity + 1, (batch, num_kv_heads), generator=gen, dtype=torch.int32)
    lens[0, 0] = capacity  # a full head
    lens[-1, -1] = 1  # a single-token head
    q = torch.randn(batch, num_q_heads, head_dim, generator=gen)
    k = poisoned_cache(batch, num_kv_heads, capacity, head_dim, lens, torch.float32, gen)
    v = poisoned_cache(batch, num_kv_heads, capacity, head_dim, lens, torch.float32, gen)

    ref, ref_lse = naive_decode(q, k, v, lens, return_lse=True)
    out = torch.full_like(q, float("nan"))
    got, lse = triton_decode(q, k, v, lens, out=out, return_lse=True, num_splits=num_splits, block_n=16)
    assert got is out
    assert_close("decode", ref, out, 1e-5)
    assert_close("decode lse", ref_lse, lse, 1e-5)


def test_triton_decode_bf16_and_dispatch():
    gen = torch.Generator().manual_seed(7)
    batch, num_q_heads, num_kv_heads, head_dim, capacity = 3, 8, 2, 64, 45
    lens = torch.randint(1, capacity + 1, (batch, num_kv_heads), generator=gen, dtype=torch.int32)
    q = torch.randn(batch, num_q_heads, head_dim, generator=gen).bfloat16()
    k = poisoned_cache(batch, num_kv_heads, capacity, head_dim, lens, torch.bfloat16, gen)
    v = poisoned_cache(batch, num_kv_heads, capacity, head_dim, lens, torch.bfloat16, gen)
    ref = naive_decode(q, k, v, lens)
    out = torch.full_like(q, float("nan"))
    decode(q, k, v, lens, out=out, backend="triton")
    assert out.dtype == torch.bfloat16
    assert_close("decode bf16", ref.float(), out.float(), 5e-3)
    # "auto" on CPU tensors is the reference; an unknown backend raises
    torch.testing.assert_close(decode(q, k, v, lens), ref)
    with pytest.raises(ValueError, match="backend"):
        decode(q, k, v, lens, backend="cuda")


def test_triton_decode_rejects_unsupported_head_dim():
    q, k = torch.randn(1, 4, 96), torch.randn(1, 1, 8, 96)
    with pytest.raises(ValueError, match="head dims"):
        triton_decode(q, k, k, torch.tensor([[8]], dtype=torch.int32))


def quest_inputs(batch, num_q_heads, num_kv_heads, head_dim, gen, seq_len=203):
    """Full cache with per-sample lengths (odd, one shorter than the page budget), NaN past them."""
    lens = torch.tensor([seq_len, 150, 37][:batch], dtype=torch.int32)
    q = torch.randn(batch, num_q_heads, head_dim, generator=gen)
    head_lens = lens[:, None].expand(batch, num_kv_heads)
    k = poisoned_cache(batch, num_kv_heads, seq_len, head_dim, head_lens, torch.float32, gen)
    v = poisoned_cache(batch, num_kv_heads, seq_len, head_dim, head_lens, torch.float32, gen)
    return q, k, v, lens


@pytest.mark.parametrize("batch,num_q_heads,num_kv_heads,head_dim", SHAPES)
@pytest.mark.parametrize("share_pages", [True, False], ids=["shared", "per-q-head"])
def test_triton_quest_step(batch, num_q_heads, num_kv_heads, head_dim, share_pages):
    """Scores, selected pages and the output of one Quest step match the reference."""
    gen = torch.Generator().manual_seed(42)
    q, k, v, lens = quest_inputs(batch, num_q_heads, num_kv_heads, head_dim, gen)
    page_min, page_max = naive_build_page_meta(k, lens, PAGE)
    page_budget = 4  # sample 0 has 12 past pages, sample 2 only 2 (short context: every page, -1 padding)

    ref_scores = naive_quest_page_scores(q, page_min, page_max, lens, PAGE, share_pages)
    scores = triton_quest_page_scores(q, page_min, page_max, lens, PAGE, share_pages)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-4)  # -inf at the same places
    looped = triton_quest_page_scores(q, page_min, page_max, lens, PAGE, share_pages, block_p=4,
                                      blocks_per_program=2)
    torch.testing.assert_close(looped, ref_scores, rtol=1e-5, atol=1e-4)
    # metadata at and past the current page does not reach the scores (the kernel masks its loads there)
    past = torch.arange(page_min.shape[2])[None, None, :, None] >= ((lens.long() - 1) // PAGE)[:, None, None, None]
    poisoned = [meta.masked_fill(past, float("nan")) for meta in (page_min, page_max)]
    torch.testing.assert_close(triton_quest_page_scores(q, *poisoned, lens, PAGE, share_pages), scores, rtol=0, atol=0)

    ref_index = naive_quest_select_pages(ref_scores, lens, PAGE, page_budget)
    index = triton_quest_select_pages(scores, lens, PAGE, page_budget)
    assert torch.equal(index, ref_index), f"selected pages differ:\n{index}\n{ref_index}"
    assert (index[2] == -1).any() and (index[0] >= 0).all()

    ref_out, ref_lse = naive_quest_decode(q, k, v, lens, ref_index, PAGE, return_lse=True)
    for num_splits, prefetch, fused in ((None, True, True), (2, True, True), (2, False, False), (3, False, True)):
        out = torch.full_like(q, float("nan"))
        _, lse = triton_quest_decode(q, k, v, lens, index, PAGE, out=out, return_lse=True, num_splits=num_splits,
                                     pages_per_block=2, prefetch_index=prefetch, fuse_combine=fused)
        name = f"quest decode ({num_splits} splits, {'fused' if fused else 'separate'} combine)"
        assert_close(name, ref_out, out, 1e-5)
        assert_close(f"{name} lse", ref_lse, lse, 1e-5)
    # the fused combine's ticket counters are back to zero after the launch (ready for the next step)
    assert all(int(buffer.abs().sum()) == 0 for buffer in _COUNTERS.values())
    # the method really is sparse: it differs from dense decode over the whole cache
    dense = naive_decode(q, k, v, lens[:, None].expand(batch, num_kv_heads).contiguous())
    assert (dense[0] - ref_out[0]).abs().max() > 1e-3


def test_triton_quest_unsorted_pages_and_dispatch():
    """The kernel does not rely on the order of the selection; the dispatcher reaches the same kernels."""
    gen = torch.Generator().manual_seed(3)
    q, k, v, lens = quest_inputs(3, 8, 2, 64, gen)
    page_min, page_max = naive_build_page_meta(k, lens, PAGE)
    scores = quest_page_scores(q, page_min, page_max, lens, PAGE, True, backend="triton")
    index = quest_select_pages(scores, lens, PAGE, 3, backend="triton")
    shuffled = index.flip(-1).contiguous()  # -1 slots first, pages descending
    ref = naive_quest_decode(q, k, v, lens, index, PAGE)
    out = torch.full_like(q, float("nan"))
    quest_decode(q, k, v, lens, shuffled, PAGE, out=out, backend="triton")
    assert_close("quest decode (shuffled)", ref, out, 1e-5)


def test_triton_update_page_meta_equals_rebuild():
    gen = torch.Generator().manual_seed(5)
    batch, num_kv_heads, head_dim, seq_len = 3, 2, 64, 64
    k = torch.randn(batch, num_kv_heads, seq_len, head_dim, generator=gen)
    lens = torch.tensor([33, 16, 47], dtype=torch.int32)  # next tokens open page 2, open page 1, extend page 2
    page_min, page_max = naive_build_page_meta(k, lens, PAGE)
    k_new = torch.randn(batch, num_kv_heads, head_dim, generator=gen)
    ref_min, ref_max = naive_update_page_meta(page_min.clone(), page_max.clone(), k_new, lens, PAGE)
    got_min, got_max = triton_update_page_meta(page_min.clone(), page_max.clone(), k_new, lens, PAGE)
    assert torch.equal(got_min, ref_min) and torch.equal(got_max, ref_max)
    k[torch.arange(batch), :, lens.long()] = k_new
    rebuilt_min, rebuilt_max = naive_build_page_meta(k, lens + 1, PAGE)
    assert torch.equal(got_min, rebuilt_min) and torch.equal(got_max, rebuilt_max)
    via_dispatch = update_page_meta(page_min.clone(), page_max.clone(), k_new, lens, PAGE, backend="triton")
    assert torch.equal(via_dispatch[0], ref_min)


@pytest.mark.parametrize("lens_dtype", [torch.int32, torch.int64])
def test_triton_append_token_writes_kv_meta_and_length(lens_dtype):
    """One launch per decode step: K/V land at each sample's own position (strided k_new, as transformers passes
    it), the key is folded into its page (a fresh page, a page being filled), lens moves on; nothing else changes."""
    gen = torch.Generator().manual_seed(9)
    batch, num_kv_heads, head_dim, capacity = 3, 2, 64, 70
    lens = torch.tensor([33, 16, 47], dtype=lens_dtype)  # next tokens open page 2, open page 1, extend page 2
    keys = poisoned_cache(batch, num_kv_heads, capacity, head_dim, lens[:, None].expand(-1, num_kv_heads),
                          torch.bfloat16, gen)
    values = poisoned_cache(batch, num_kv_heads, capacity, head_dim, lens[:, None].expand(-1, num_kv_heads),
                            torch.bfloat16, gen)
    page_min, page_max = naive_build_page_meta(keys.nan_to_num(0.0), lens, PAGE)
    page_min, page_max = torch.cat([page_min, page_min[:, :, :1]], 2), torch.cat([page_max, page_max[:, :, :1]], 2)
    page_min[:, :, -1], page_max[:, :, -1] = float("inf"), float("-inf")  # a spare empty page
    new = torch.randn(batch, num_kv_heads, 2, head_dim, generator=gen).to(torch.bfloat16)
    k_new, v_new = new[:, :, 0], new[:, :, 1]  # strided views, like key_states[:, :, 0]
    ref = [t.clone() for t in (keys, values, page_min, page_max, lens)]
    naive_append_token(*ref[:4], k_new, v_new, ref[4], PAGE)
    for fn in (triton_append_token, lambda *a: append_token(*a, backend="triton")):
        got = [t.clone() for t in (keys, values, page_min, page_max, lens)]
        fn(*got[:4], k_new, v_new, got[4], PAGE)
        for name, r, g in zip(("keys", "values", "page_min", "page_max", "lens"), ref, got):
            assert torch.equal(r.nan_to_num(7.0), g.nan_to_num(7.0)), name  # NaN beyond the lengths on both
    assert ref[4].tolist() == [34, 17, 48] and ref[4].dtype == lens_dtype
    rows = torch.arange(batch)
    assert torch.equal(ref[0][rows, :, lens.long()], k_new) and torch.equal(ref[1][rows, :, lens.long()], v_new)
    assert torch.isnan(ref[0][rows, :, lens.long() + 1]).all()  # the next slot is still unwritten
    rebuilt = naive_build_page_meta(ref[0].nan_to_num(0.0), ref[4], PAGE)
    assert torch.equal(ref[2][:, :, :-1], rebuilt[0]) and torch.equal(ref[3][:, :, :-1], rebuilt[1])
    with pytest.raises(ValueError, match="grow it first"):
        naive_append_token(keys, values, page_min, page_max, k_new, v_new, torch.full_like(lens, capacity), PAGE)


def test_triton_select_pages_ties_short_rows_and_long_row_path():
    """Exact top-k: ties at the threshold go to the lower page id (as in the reference), negative scores, rows with
    fewer past pages than the budget; the torch.topk path for very long rows agrees on tie-free scores."""
    gen = torch.Generator().manual_seed(11)
    batch, rows, pages = 3, 2, 45
    lens = torch.tensor([pages * PAGE, 20 * PAGE + 3, 3 * PAGE], dtype=torch.int32)  # cur = 44, 20, 2
    scores = torch.randint(-3, 4, (batch, rows, pages), generator=gen).float()  # many ties, negatives
    current = (lens.long() - 1) // PAGE
    scores = scores.masked_fill(torch.arange(pages)[None, None] >= current[:, None, None], float("-inf"))
    for budget in (1, 7, 60):
        ref = naive_quest_select_pages(scores, lens, PAGE, budget)
        got = triton_quest_select_pages(scores, lens, PAGE, budget)
        assert torch.equal(got, ref), f"budget {budget}:\n{got}\n{ref}"
        # what the selection reads, written by the selection kernel itself, equals the count over the pages
        ref_tokens, ref_sparsity = naive_selection_reads(ref, lens, PAGE)
        index, tokens, sparsity = triton_quest_select_pages(scores, lens, PAGE, budget, return_reads=True)
        assert torch.equal(index, ref) and torch.equal(tokens, ref_tokens)
        torch.testing.assert_close(sparsity, ref_sparsity, rtol=0, atol=1e-6)
        taken = torch.minimum(current, torch.tensor(budget))  # full past pages + the partial current page
        assert tokens[:, 0].tolist() == (taken * PAGE + lens - current * PAGE).tolist()
        assert torch.equal(quest_select_pages(scores, lens, PAGE, budget, return_reads=True, backend="naive")[1],
                           ref_tokens)
    distinct = torch.randn(batch, rows, pages, generator=gen).masked_fill(scores == float("-inf"), float("-inf"))
    assert torch.equal(_topk_select_pages(distinct, lens, PAGE, 7), naive_quest_select_pages(distinct, lens, PAGE, 7))


@pytest.mark.parametrize("spread", [1e-6, 1.0, 1e4])
def test_triton_select_pages_long_rows_every_budget(spread):
    """Rows of thousands of pages with distinct scores (tightly packed, spread, or over many exponents), plus a few
    exact ties and -0.0 / 0.0 (which tie, as in the reference's float sort); every budget from 1 to all past pages;
    the same pages as the reference."""
    gen = torch.Generator().manual_seed(int(spread * 7) + 1)
    batch, rows, pages = 2, 3, 3001
    lens = torch.tensor([pages * PAGE, 1234 * PAGE + 5], dtype=torch.int32)
    current = (lens.long() - 1) // PAGE
    scores = 30 + spread * torch.randn(batch, rows, pages, generator=gen)
    scores[0, 0, 10:20] = scores[0, 0, 5]  # exact ties
    scores[1, 1, 100:104] = -0.0
    scores[1, 1, 104:108] = 0.0
    scores = scores.masked_fill(torch.arange(pages)[None, None] >= current[:, None, None], float("-inf"))
    for budget in (1, 9, 300, 1233, 2999, 5000):
        ref = naive_quest_select_pages(scores, lens, PAGE, budget)
        got = triton_quest_select_pages(scores, lens, PAGE, budget)
        assert torch.equal(got, ref), f"budget {budget}"


def test_triton_select_pages_adversarial_rows():
    """Rows that defeat the search's guesses (the first trial from mean / std, regula falsi on the counts): one huge
    outlier, two far clusters, values over many exponents, all equal, +-inf scores, heavy ties, Quest's own page
    bounds; every budget; the same pages as the reference."""
    from sparse_attn.kernels.quest import build_page_meta, naive_quest_page_scores

    gen = torch.Generator().manual_seed(5)
    pages = 700
    lens = torch.tensor([pages * PAGE], dtype=torch.int32)
    noise = torch.randn(pages, generator=gen)
    q = torch.randn(1, 8, 32, generator=gen)
    k = torch.randn(1, 2, pages * PAGE, 32, generator=gen)
    quest = naive_quest_page_scores(q, *build_page_meta(k, lens, PAGE), lens, PAGE, True)[0]  # [2, P]
    rows = [
        torch.cat([noise[:-1], torch.tensor([1e30])]),                         # one outlier
        torch.where(noise > 0, 50.0, -50.0) + noise * 1e-3,                     # two far clusters
        noise * 10.0 ** (8 * torch.rand(pages, generator=gen) - 4),             # many exponents
        torch.ones(pages),                                                      # all equal
        torch.where(noise > 1.5, float("inf"), torch.where(noise < -1.5, float("-inf"), noise)),  # +-inf
        torch.randint(0, 3, (pages,), generator=gen).float(),                   # three values
        torch.exp(3 * noise),                                                   # log-normal
        quest[0], quest[1],
    ]
    scores = torch.stack(rows)[None]  # [1, rows, P]
    current = (lens.long() - 1) // PAGE
    scores = scores.masked_fill(torch.arange(pages) >= current, float("-inf"))
    for budget in (1, 2, 37, 69, 350, 698, 699, 1000):
        ref = naive_quest_select_pages(scores, lens, PAGE, budget)
        got = triton_quest_select_pages(scores, lens, PAGE, budget)
        assert torch.equal(got, ref), f"budget {budget}: rows {(got != ref).any(-1).nonzero().flatten().tolist()}"


@pytest.mark.parametrize("reduce", ["mean_sum", "max"])
def test_triton_window_importance(reduce):
    """SnapKV (mean over the group, sum over the window) and Ada-SnapKV (max) scores without the probability
    tensor, against the method code's window_probs; GQA 4:1, odd prompt length, several key splits."""
    from sparse_attn.kernels.decode import naive_window_importance, window_importance
    from sparse_attn.kernels.decode.window_triton import triton_window_importance
    from sparse_attn.methods._kv import window_probs

    gen = torch.Generator().manual_seed(42)
    q_window = torch.randn(8, 16, 64, generator=gen)
    k = torch.randn(2, 77, 64, generator=gen)
    probs = window_probs(q_window, k)
    ref = probs.mean(dim=1).sum(dim=1) if reduce == "mean_sum" else probs.amax(dim=2).amax(dim=1)
    torch.testing.assert_close(naive_window_importance(q_window, k, reduce=reduce), ref)
    torch.testing.assert_close(window_importance(q_window, k, reduce=reduce), ref)  # auto on CPU = reference
    out = triton_window_importance(q_window, k, reduce=reduce, block_m=16, block_n=16)
    assert_close(f"window importance {reduce}", ref, out, 1e-5)
    assert torch.equal(torch.topk(out, 20).indices.sort().values, torch.topk(ref, 20).indices.sort().values)
