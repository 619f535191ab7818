"""`triton_stable_topk` on the GPU (compiled) at the Vertical-Slash shape (32 rows x 128K, k = 512) against
`stable_topk` entry for entry: random scores, heavy ties, -inf tails (varlen), forced +inf entries, counts 0 / n /
mixed, odd lengths; no host sync inside (`torch.cuda.set_sync_debug_mode("error")`); and `VerticalSlash.select`
(which now takes the Triton top-k) against the same pipeline with the reference top-k.

Run on a CUDA machine, compiled (not interpreted):
    TRITON_INTERPRET=0 python -m pytest -q -m gpu tests/gpu/test_topk_gpu.py
"""
import pytest
import torch

from .common import GPU_MARKS, HKV, HQ, D

pytestmark = GPU_MARKS

DEV = "cuda"
SENTINEL = 7777  # poison: every output slot must be written (an index or -1)


def check(scores, counts, kmax, descending):
    from sparse_attn.kernels.estimation.topk import stable_topk
    from sparse_attn.kernels.estimation.topk_triton import triton_stable_topk
    out = torch.full((*scores.shape[:-1], kmax), SENTINEL, dtype=torch.int32, device=DEV)
    torch.cuda.set_sync_debug_mode("error")  # a host sync inside raises
    try:
        got = triton_stable_topk(scores, counts, kmax, descending=descending, out=out)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    want = stable_topk(scores, counts, descending=descending)
    pad = torch.full((*scores.shape[:-1], kmax - want.shape[-1]), -1, dtype=torch.int32, device=DEV)
    want = torch.cat([want, pad], -1)
    bad = (got != want).any(-1).nonzero().flatten().tolist()
    assert not bad, f"rows {bad[:8]} differ (descending={descending}); first: {got[bad[0]][:16]} vs {want[bad[0]][:16]}"


def vs_like(rows, n, seed, ties):
    """Window-sum-like scores (non-negative, +inf on the 4 forced entries), optionally on few distinct values."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    scores = torch.rand(rows, n, device=DEV, generator=g) ** 8  # concentrated: few large, many tiny
    if ties:
        scores = (scores * 16).round() / 16  # most entries equal 0: the 512th best sits inside a huge tie
    scores[:, :4] = float("inf")
    return scores


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("descending", [False, True])
def test_vs_shape_k512(ties, descending):
    scores = vs_like(HQ, 131072, seed=int(ties), ties=ties)
    check(scores, torch.full((HQ,), 512, device=DEV, dtype=torch.long), 512, descending)


def test_varlen_tails_mixed_counts_and_signed_zeros():
    n = 131072
    g = torch.Generator(device=DEV).manual_seed(7)
    scores = torch.randn(HQ, n, device=DEV, generator=g).round(decimals=1)  # ties, and -0.0 next to 0.0
    lens = torch.randint(1, n + 1, (HQ,), device=DEV, generator=g)
    lens[:4] = torch.tensor([n, 1, 300, 511], device=DEV)
    scores = scores.masked_fill(torch.arange(n, device=DEV)[None] >= lens[:, None], float("-inf"))
    scores[5] = float("-inf")  # a row of -inf only
    scores[6] = 0.5  # an all-equal row
    counts = torch.minimum(torch.full((HQ,), 512, device=DEV, dtype=torch.long), lens)
    counts[7], counts[8], counts[9] = 0, 4096, 1000  # rows 8, 9 may have fewer finite entries: -inf ones fill in
    for descending in (False, True):
        check(scores, counts, 4096, descending)


@pytest.mark.parametrize("n", [100003, 131071, 1, 2049])
def test_odd_lengths_single_row_all_or_nothing(n):
    g = torch.Generator(device=DEV).manual_seed(n)
    scores = torch.randn(1, n, device=DEV, generator=g)
    check(scores, torch.tensor([n], device=DEV), n, False)  # counts == n: every index
    check(scores, torch.tensor([min(n, 512)], device=DEV), min(n, 512), True)
    check(scores, torch.tensor([0], device=DEV), min(n, 3), False)  # nothing: all -1


def test_vertical_slash_select_triton_topk_equals_reference():
    """VerticalSlash.select (Triton top-k via max_budget) vs the same window sums through the reference top-k."""
    from sparse_attn import VerticalSlash
    from sparse_attn.kernels.estimation import last_window_sums
    from sparse_attn.methods._prefill import select_vertical_slash
    lengths = (32768, 9000)
    g = torch.Generator(device=DEV).manual_seed(3)
    q = torch.randn(sum(lengths), HQ, D, device=DEV, generator=g, dtype=torch.bfloat16)
    k = torch.randn(sum(lengths), HKV, D, device=DEV, generator=g, dtype=torch.bfloat16)
    k[:4] += 2.0  # sinks
    cu = torch.tensor([0, lengths[0], sum(lengths)], device=DEV, dtype=torch.int32)
    method = VerticalSlash()
    got = method.select(q, k, cu)
    vertical, slash = last_window_sums(q, k, cu, method.approximation_size)

    def budget(size):
        return torch.full((len(lengths), HQ), size, device=DEV, dtype=torch.long)

    want = select_vertical_slash(cu, vertical, slash, budget(method.vertical_size), budget(method.slash_size))
    got, want = got.trimmed(), want.trimmed()  # the one-pass index may be wider (-1 padded), see trimmed()
    for name in ("vertical_idx", "vertical_count", "slash_offsets", "slash_count", "block_count", "block_offset",
                 "column_count", "column_index"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


@pytest.mark.parametrize("descending", [False, True])
def test_threshold_topk_flexprefill_shape(descending):
    """triton_threshold_topk (FlexPrefill's path) vs threshold_topk at 32 x 128K with heavy ties at the threshold,
    forced +inf entries and varlen -inf tails; per-row counts from 0 to 3000."""
    from sparse_attn.kernels.estimation.topk import kth_largest, threshold_topk
    from sparse_attn.kernels.estimation.topk_triton import triton_threshold_topk
    g = torch.Generator(device=DEV).manual_seed(11)
    n = 131072
    scores = (torch.rand(HQ, n, device=DEV, generator=g) * 64).floor() / 64  # 64 levels: many ties
    scores[:, :64] = float("inf")
    scores[HQ // 2:, n - 5000:] = float("-inf")
    counts = torch.randint(0, 3001, (HQ,), device=DEV, generator=g)
    counts[0] = 0
    kth = kth_largest(scores, counts)
    want = threshold_topk(scores, counts, kth, descending)
    got = triton_threshold_topk(scores, counts, kth, want.shape[-1], descending)
    assert torch.equal(got, want)
