"""PyTorch references of the KV-compression (snapkv, ada_snapkv) and sparse-decode (quest) methods.

Full budget must equal dense decode attention (torch SDPA); small budgets are checked on hand-made inputs where the
right selection is known. Shapes are tiny: CPU only, fp32.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sparse_attn import ConfigError, build_method
from sparse_attn.kernels.decode import naive_decode
from sparse_attn.kernels.quest import (
    naive_build_page_meta,
    naive_quest_page_scores,
    naive_quest_select_pages,
    selected_token_mask,
)
from sparse_attn.methods.quest import Quest, QuestPages

from .method_matrix import METHODS

LENGTHS = (37, 301, 1000)
GQA = {"gqa4": (8, 2), "mha": (2, 2)}  # (Hq, Hkv)
HEAD_DIMS = (64, 128)


def dense_decode(q, k, v):
    """SDPA oracle for one sample: `q [Hq, D]` over `k, v [Hkv, T, D]` -> `[Hq, D]`."""
    return F.scaled_dot_product_attention(q[None, :, None], k[None], v[None], enable_gqa=True)[0, :, 0]


def packed_prompts(lengths, num_q_heads, num_kv_heads, head_dim, seed=42):
    gen = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q = torch.randn(total, num_q_heads, head_dim, generator=gen)
    k = torch.randn(total, num_kv_heads, head_dim, generator=gen)
    v = torch.randn(total, num_kv_heads, head_dim, generator=gen)
    cu_seqlens = torch.tensor([0] + [sum(lengths[: i + 1]) for i in range(len(lengths))], dtype=torch.int32)
    return q, k, v, cu_seqlens


def padded_cache(lengths, num_kv_heads, head_dim, extra=0, seed=7):
    """Right-padded `k, v [B, Hkv, S, D]` with NaN beyond each sample's length (never to be read)."""
    gen = torch.Generator().manual_seed(seed)
    size = max(lengths) + extra
    k = torch.randn(len(lengths), num_kv_heads, size, head_dim, generator=gen)
    v = torch.randn(len(lengths), num_kv_heads, size, head_dim, generator=gen)
    for b, length in enumerate(lengths):
        k[b, :, length:] = float("nan")
        v[b, :, length:] = float("nan")
    return k, v, torch.tensor(lengths)


def snap(name, **overrides):
    return build_method(name, **{**METHODS[name]["small"], **overrides})


# -- full budget equals dense ----------------------------------------------------------------------------------
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("heads", list(GQA), ids=list(GQA))
@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv"])
def test_compressed_decode_at_full_budget_equals_dense(name, heads, head_dim):
    num_q_heads, num_kv_heads = GQA[heads]
    method = build_method(name, **METHODS[name]["full"])
    q, k, v, cu_seqlens = packed_prompts(LENGTHS, num_q_heads, num_kv_heads, head_dim)
    cache = method.compress(q, k, v, cu_seqlens)

    assert cache.lens.tolist() == [[t] * num_kv_heads for t in LENGTHS]
    assert torch.all(cache.sparsity == 0)
    # Poison the padding: decoding must not read beyond lens.
    for b, length in enumerate(LENGTHS):
        cache.k[b, :, length:] = float("nan")
        cache.v[b, :, length:] = float("nan")
    q_new = torch.randn(len(LENGTHS), num_q_heads, head_dim)
    out = method.decode(q_new, cache.k, cache.v, cache.lens)
    for b, (start, end) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
        expected = dense_decode(q_new[b], k[start:end].transpose(0, 1), v[start:end].transpose(0, 1))
        torch.testing.assert_close(out[b], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("heads", list(GQA), ids=list(GQA))
@pytest.mark.parametrize("share_pages", [True, False], ids=["shared", "per_qhead"])
def test_quest_at_full_budget_equals_dense(share_pages, heads, head_dim):
    num_q_heads, num_kv_heads = GQA[heads]
    method = build_method("quest", **{**METHODS["quest"]["full"], "share_pages": share_pages})
    k, v, lens = padded_cache(LENGTHS, num_kv_heads, head_dim, extra=5)
    pages = QuestPages.from_cache(k, lens, method.page_size)
    q = torch.randn(len(LENGTHS), num_q_heads, head_dim)
    out, selection = method.decode(q, k, v, lens, pages)

    assert torch.all(selection.sparsity == 0)
    assert selection.tokens_read.tolist() == list(LENGTHS)
    for b, length in enumerate(LENGTHS):
        torch.testing.assert_close(out[b], dense_decode(q[b], k[b, :, :length], v[b, :, :length]), atol=1e-5,
                                   rtol=1e-5)


def test_naive_decode_per_head_lengths_equal_sdpa_per_head_and_write_out_and_lse():
    num_q_heads, num_kv_heads, head_dim = 8, 2, 64
    lens = torch.tensor([[5, 17], [1, 9], [17, 3]], dtype=torch.int32)
    k = torch.randn(3, num_kv_heads, 17, head_dim)
    v = torch.randn_like(k)
    valid = torch.arange(17) < lens[..., None]
    k[~valid] = float("nan")
    v[~valid] = float("nan")
    q = torch.randn(3, num_q_heads, head_dim)
    out = torch.full_like(q, float("nan"))
    result, lse = naive_decode(q, k, v, lens, scale=0.3, out=out, return_lse=True)
    assert result is out and not out.isnan().any()
    for b in range(3):
        for h in range(num_q_heads):
            kv, n = h // 4, int(lens[b, h // 4])
            scores = (k[b, kv, :n] @ q[b, h]) * 0.3
            torch.testing.assert_close(lse[b, h], torch.logsumexp(scores, 0))
            torch.testing.assert_close(out[b, h], torch.softmax(scores, 0) @ v[b, kv, :n])


def test_naive_decode_keeps_the_input_dtype_and_accumulates_in_fp32():
    q, k, v = torch.randn(2, 4, 64), torch.randn(2, 2, 50, 64), torch.randn(2, 2, 50, 64)
    lens = torch.tensor([[50, 20], [3, 50]])
    reference = naive_decode(q, k, v, lens)
    low = naive_decode(q.bfloat16(), k.bfloat16(), v.bfloat16(), lens)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), reference, atol=2e-2, rtol=2e-2)


# -- SnapKV / Ada-SnapKV selection ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv"])
def test_importance_matches_the_reference_definition(name):
    """Last-window softmax reduced per KV head (snapkv: mean over the group's query heads, sum over the window;
    ada: max over both), avg-pooled (zero padding counted), prefix and local window forced; computed here the slow
    way with repeated K and a full T x T mask. One forced token at each end leaves the zero-padded pooling edges
    (tokens 1 and T - 2) visible."""
    method = snap(name, prefix_tokens=1, local_window=1)
    num_q_heads, num_kv_heads, seq_len, head_dim, window = 4, 2, 90, 16, 16
    q = torch.randn(num_q_heads, seq_len, head_dim)
    k = torch.randn(num_kv_heads, seq_len, head_dim)
    logits = q @ k.repeat_interleave(2, 0).transpose(1, 2) / head_dim**0.5
    logits = logits.masked_fill(torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1), float("-inf"))
    probs = torch.softmax(logits, -1)[:, -window:]  # [Hq, W, T]
    grouped = probs.view(num_kv_heads, 2, window, seq_len)
    scores = grouped.mean(1).sum(1) if name == "snapkv" else grouped.amax(2).amax(1)
    padded = F.pad(scores, (2, 2))
    pooled = torch.stack([padded[:, i:i + 5].mean(-1) for i in range(seq_len)], -1)
    pooled[:, :1] = float("inf")
    pooled[:, -1:] = float("inf")
    torch.testing.assert_close(method.importance(q[:, -window:], k), pooled)


def planted_prompt(seq_len=300, planted=150, num_q_heads=4, num_kv_heads=2, head_dim=32, seed=0):
    """Random prompt whose window queries all point at key `planted` (strongly, in every KV head)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(num_q_heads, 16, head_dim, generator=gen) * 0.1
    k = torch.randn(num_kv_heads, seq_len, head_dim, generator=gen) * 0.1
    direction = torch.randn(head_dim, generator=gen)
    q += direction
    k[:, planted] = 3 * direction
    return q, k


@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv"])
def test_planted_key_prefix_and_local_window_are_kept_in_positional_order(name):
    method = snap(name)
    seq_len, planted = 300, 150
    q, k = planted_prompt(seq_len, planted)
    kept = method.select_kept(q, k)
    for head in range(k.shape[0]):
        index = kept.index[head, : kept.lens[head]]
        assert planted in index.tolist()
        assert set(range(4)) <= set(index.tolist())  # prefix_tokens
        assert set(range(seq_len - 8, seq_len)) <= set(index.tolist())  # local_window
        assert torch.all(index[1:] > index[:-1])  # positional order, no duplicates
        assert torch.all(kept.index[head, kept.lens[head]:] == -1)
    if name == "snapkv":
        assert kept.lens.tolist() == [method.token_capacity] * k.shape[0]


def test_snapkv_drops_the_tokens_nobody_attends_to():
    """Window queries point at keys 100..139 (40 tokens); with capacity 52 = 40 + 8 local + 4 prefix, the kept set
    is exactly prefix + planted block + local window."""
    method = snap("snapkv", token_capacity=52, kernel_size=1)
    q, k = planted_prompt(300, 120)
    direction = k[0, 120] / 3
    k[:, 100:140] = 3 * direction
    kept = method.select_kept(q, k)
    expected = list(range(4)) + list(range(100, 140)) + list(range(292, 300))
    assert kept.index.tolist() == [expected, expected]


def test_ada_budgets_sum_to_the_total_and_respect_the_floor_on_hand_made_scores():
    """Head 0 scores beat head 1 everywhere: head 1 keeps only its floor, head 0 takes the rest."""
    method = snap("ada_snapkv", token_capacity=20, local_window=2, prefix_tokens=1, min_head_capacity_ratio=0.25)
    assert method.head_floor == 5
    scores = torch.stack([torch.linspace(10, 11, 50), torch.linspace(0, 1, 50)])
    kept = method._allocate(scores)
    assert kept.lens.tolist() == [35, 5]
    assert kept.index[0, :35].tolist() == list(range(15, 50))
    assert kept.index[1, :5].tolist() == list(range(45, 50))
    assert kept.index[1, 5:].tolist() == [-1] * 30


def test_ada_compress_budgets_per_head_on_random_prompts():
    method = snap("ada_snapkv")
    q, k, v, cu_seqlens = packed_prompts((120, 301, 77), 8, 4, 32)
    cache = method.compress(q, k, v, cu_seqlens)
    assert torch.all(cache.lens.sum(1) == method.token_capacity * 4)
    assert torch.all(cache.lens >= method.head_floor)
    assert cache.lens.unique().numel() > 1  # budgets really adapt per head


@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv"])
def test_compress_gathers_the_kept_tokens_and_reports_their_count_as_sparsity(name):
    method = snap(name)
    lengths = (37, 301, 130)
    q, k, v, cu_seqlens = packed_prompts(lengths, 8, 2, 64)
    cache = method.compress(q, k, v, cu_seqlens)
    for b, (start, length) in enumerate(zip(cu_seqlens[:-1].tolist(), lengths)):
        kept_count = (cache.index[b] >= 0).sum(-1)
        assert cache.lens[b].tolist() == kept_count.tolist()
        torch.testing.assert_close(cache.sparsity[b], 1 - kept_count.float() / length)
        for h in range(2):
            index = cache.index[b, h, : cache.lens[b, h]]
            torch.testing.assert_close(cache.k[b, h, : cache.lens[b, h]], k[start + index, h])
            torch.testing.assert_close(cache.v[b, h, : cache.lens[b, h]], v[start + index, h])
    assert cache.sparsity[0].eq(0).all()  # 37 tokens <= capacity 48: nothing dropped
    assert cache.sparsity[1].gt(0.5).all()  # the method really acts


def test_selection_is_deterministic_on_ties():
    method = snap("snapkv", kernel_size=1)
    q = torch.ones(2, 16, 8)
    k = torch.ones(2, 200, 8)  # every token scores the same
    first, second = method.select_kept(q, k), method.select_kept(q, k)
    assert torch.equal(first.index, second.index)
    expected = list(range(40)) + list(range(192, 200))  # ties go to the earliest tokens
    assert first.index[0].tolist() == expected


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for item in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel())
        return result


@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv"])
def test_estimation_never_materialises_a_length_squared_matrix(name):
    method = snap(name)
    seq_len = 3000
    q, k, v, cu_seqlens = packed_prompts((seq_len,), 2, 1, 8)
    with LargestTensor() as tracker:
        method.compress(q, k, v, cu_seqlens)
    assert tracker.largest <= 2 * 16 * seq_len  # [Hq, W, T] at most, far below T * T


# -- Quest -----------------------------------------------------------------------------------------------------
def test_quest_bound_is_at_least_the_true_max_score_of_each_page():
    page_size, num_q_heads, num_kv_heads = 16, 8, 2
    k, _, lens = padded_cache((37, 301, 160), num_kv_heads, 32, seed=3)
    q = torch.randn(3, num_q_heads, 32)
    page_min, page_max = naive_build_page_meta(k, lens, page_size)
    bound = naive_quest_page_scores(q, page_min, page_max, lens, page_size, share_pages=False)
    shared = naive_quest_page_scores(q, page_min, page_max, lens, page_size, share_pages=True)
    for b, length in enumerate(lens.tolist()):
        cur = (length - 1) // page_size
        for h in range(num_q_heads):
            true = (k[b, h // 4, : cur * page_size] @ q[b, h]).view(cur, page_size).amax(-1)
            assert torch.all(bound[b, h, :cur] >= true - 1e-5)
        assert torch.all(bound[b, :, cur:] == float("-inf"))
    torch.testing.assert_close(shared[:, :, :2], bound.view(3, 2, 4, -1).sum(2)[:, :, :2])


@pytest.mark.parametrize("share_pages", [True, False], ids=["shared", "per_qhead"])
def test_quest_selects_the_planted_page_and_always_the_current_page(share_pages):
    method = build_method("quest", token_budget=32, page_size=16, share_pages=share_pages)
    lengths = (301, 250, 1000)
    k, v, lens = padded_cache(lengths, 2, 32, seed=5)
    k[:, :, :] *= 0.1
    q = torch.randn(3, 8, 32)
    planted = [40, 200, 517]
    for b, position in enumerate(planted):
        k[b, :, position] = 5 * q[b].view(2, 4, 32).mean(1)  # aligned with the queries of each group
    selection = method.select_pages(q, QuestPages.from_cache(k, lens, 16), lens)
    heads = 2 if share_pages else 8
    assert selection.page_index.shape == (3, heads, method.page_budget + 1)
    for b, (length, position) in enumerate(zip(lengths, planted)):
        for h in range(heads):
            pages = selection.page_index[b, h].tolist()
            assert position // 16 in pages
            assert pages[-1] == (length - 1) // 16  # the current page, always read
            assert pages == sorted(pages)


def test_quest_current_page_is_read_for_any_length_and_selection_shapes():
    method = build_method("quest", token_budget=48, page_size=16, share_pages=False)
    for length in (1, 15, 16, 17, 48, 64, 65, 200):
        k, v, lens = padded_cache((length, 200), 1, 8, seed=length)
        q = torch.randn(2, 3, 8)
        out, selection = method.decode(q, k, v, lens, QuestPages.from_cache(k, lens, 16))
        assert selection.page_index.shape == (2, 3, 4)
        cur = (length - 1) // 16
        assert torch.all((selection.page_index[0] == cur).any(-1))
        assert not out.isnan().any()
        if cur <= 3:  # short context: every page is read, the step is dense
            assert selection.sparsity[0] == 0
            torch.testing.assert_close(out[0], dense_decode(q[0], k[0, :, :length], v[0, :, :length]))


def test_quest_short_context_with_default_budget_reads_everything():
    method = build_method("quest")  # 1024 tokens: 64 pages + current
    k, v, lens = padded_cache((37, 301), 2, 64)
    q = torch.randn(2, 8, 64)
    out, selection = method.decode(q, k, v, lens, QuestPages.from_cache(k, lens, 16))
    assert selection.page_index.shape == (2, 2, 19)
    assert selection.page_index[0, 0].tolist() == [0, 1, 2] + [-1] * 16
    assert selection.sparsity.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("share_pages", [True, False], ids=["shared", "per_qhead"])
def test_quest_decode_equals_sdpa_masked_to_the_selected_tokens_and_sparsity_counts_them(share_pages):
    method = build_method("quest", token_budget=32, page_size=16, share_pages=share_pages)
    lengths = (301, 37, 1000)
    k, v, lens = padded_cache(lengths, 2, 64, seed=11)
    q = torch.randn(3, 8, 64)
    out, selection = method.decode(q, k, v, lens, QuestPages.from_cache(k, lens, 16))
    mask = selected_token_mask(selection.page_index, lens, 16, k.shape[2])  # [B, Hsel, S]
    if share_pages:
        mask = mask.repeat_interleave(4, dim=1)
    for b, length in enumerate(lengths):
        read = mask[b].sum(-1).float()
        torch.testing.assert_close(selection.sparsity[b], 1 - read.mean() / length)
        for h in range(8):
            keys, values = k[b, h // 4, mask[b, h]], v[b, h // 4, mask[b, h]]
            expected = torch.softmax(keys @ q[b, h] / 8, 0) @ values
            torch.testing.assert_close(out[b, h], expected, atol=1e-5, rtol=1e-5)
    assert selection.tokens_read.tolist() == [32 + 13, 37, 32 + 8]  # two full pages + the partial current page


def test_quest_ties_are_deterministic_and_go_to_the_lower_page():
    k = torch.ones(1, 1, 200, 4)
    lens = torch.tensor([200])
    page_min, page_max = naive_build_page_meta(k, lens, 16)
    scores = naive_quest_page_scores(torch.ones(1, 2, 4), page_min, page_max, lens, 16, share_pages=True)
    first = naive_quest_select_pages(scores, lens, 16, page_budget=3)
    second = naive_quest_select_pages(scores.clone(), lens, 16, page_budget=3)
    assert torch.equal(first, second)
    assert first.tolist() == [[[0, 1, 2, 12]]]


def test_page_metadata_update_on_append_equals_rebuilding_from_scratch():
    page_size = 16
    prompt = (37, 16, 90)
    k, _, lens = padded_cache(prompt, 2, 8, extra=0, seed=13)
    full = torch.randn(3, 2, 140, 8)  # the cache after 50 decode steps (grows past the prompt's pages)
    for b, length in enumerate(prompt):
        full[b, :, :length] = k[b, :, :length]
    pages = QuestPages.from_cache(k, lens, page_size)
    positions = lens.clone()
    for _ in range(50):
        pages.append(full[torch.arange(3), :, positions], positions)
        positions += 1
    page_min, page_max = naive_build_page_meta(full, positions, page_size)
    assert page_min.shape[2] == 9  # the cache grew from 6 pages (90 tokens) to 9 (140 tokens)
    assert pages.num_pages == 6 + 64  # the metadata grew once, geometrically (at least 64 pages)
    torch.testing.assert_close(pages.page_min[:, :, :9], page_min)
    torch.testing.assert_close(pages.page_max[:, :, :9], page_max)
    assert torch.all(pages.page_min[1, :, 5:] == float("inf"))  # sample 1 ends at token 65: pages 5.. are empty
    assert torch.all(pages.page_min[:, :, 9:] == float("inf")) and torch.all(pages.page_max[:, :, 9:] == -float("inf"))
    # the spare empty pages are never candidates: the same pages are chosen as over the exact metadata
    q = torch.randn(3, 4, 8)
    quest = Quest(token_budget=48, page_size=page_size)
    exact = quest.select_pages(q, QuestPages(page_min, page_max, page_size), positions)
    grown = quest.select_pages(q, pages, positions)
    assert torch.equal(grown.page_index, exact.page_index) and torch.equal(grown.head_sparsity, exact.head_sparsity)


# -- invalid configs and inputs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, params, fragment",
    [
        ("snapkv", {"token_capacity": 64, "local_window": 60, "prefix_tokens": 4}, "token_capacity=64 must exceed"),
        ("ada_snapkv", {"token_capacity": 132}, "token_capacity=132 must exceed local_window + prefix_tokens"),
        ("snapkv", {"kernel_size": 4}, "kernel_size=4 must be odd"),
        ("ada_snapkv", {"min_head_capacity_ratio": 1.5}, "min_head_capacity_ratio"),
        ("snapkv", {"window": 8}, "unknown parameter(s) ['window']"),
        ("quest", {"token_budget": 100, "page_size": 16}, "token_budget=100 must be a multiple of page_size=16"),
        ("quest", {"page_budget": 4}, "unknown parameter(s) ['page_budget']"),
        ("quest", {"page_size": 0}, "quest.page_size=0 is too small"),
    ],
)
def test_invalid_configs_raise_errors_naming_the_parameter(name, params, fragment):
    with pytest.raises(ConfigError) as error:
        build_method(name, **params)
    assert fragment in str(error.value)


def test_invalid_inputs_raise_clear_errors():
    method = snap("snapkv")
    with pytest.raises(ValueError, match=r"pass q\[-16:\]"):
        method.select_kept(torch.randn(2, 10, 8), torch.randn(2, 100, 8))
    with pytest.raises(ValueError, match="multiple of KV heads"):
        method.select_kept(torch.randn(3, 16, 8), torch.randn(2, 100, 8))
    with pytest.raises(ValueError, match="lens must lie in"):
        naive_decode(torch.randn(1, 2, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), torch.tensor([[4, 5]]))
    quest = build_method("quest", token_budget=32, page_size=16)
    k = torch.randn(1, 1, 40, 8)
    with pytest.raises(ValueError, match="page_size=8"):
        quest.select_pages(torch.randn(1, 1, 8), QuestPages.from_cache(k, torch.tensor([40]), 8), torch.tensor([40]))
