"""SnapKV / Ada-SnapKV compression on the GPU at real shapes (Llama-3.1-8B heads, bf16): the fast selection keeps
exactly the reference's tokens, SnapKV's `compress` makes no host sync (host `seq_lens`), the window kernel's
launch configurations and the decode split counts agree with the PyTorch references (outputs poisoned with NaN);
Ada-SnapKV's radix-select cuts (`ada_cuts`, `allocation = "radix"`) equal the sort reference and the "topk" path.

    TRITON_INTERPRET=0 python -m pytest -q -m gpu tests/gpu/test_kv_selection_gpu.py
"""
import warnings

import pytest
import torch

from .common import GPU_MARKS, HKV, HQ, RATIO, D

pytestmark = GPU_MARKS


def rel_rmse(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.double(), out.double()
    return ((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()


def prompt(context, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(context, HQ, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    k = torch.randn(context, HKV, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    v = torch.randn(context, HKV, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    return q, k, v


@pytest.mark.parametrize("name", ["snapkv", "ada_snapkv"])
@pytest.mark.parametrize("context", [32 * 1024 + 37, 128 * 1024], ids=lambda c: f"{c}")
def test_compress_keeps_the_reference_tokens_gpu(name, context):
    from sparse_attn import build_method

    method = build_method(name, token_capacity=context // 10)
    q, k, v = prompt(context, context)
    q_window = q[-256:].transpose(0, 1)
    k_heads = k.transpose(0, 1)
    scores = method.importance(q_window, k_heads)
    fast, reference = method._allocate(scores), method.reference_allocate(scores)
    assert torch.equal(fast.index, reference.index) and torch.equal(fast.lens, reference.lens)

    cu_seqlens = torch.tensor([0, context], device="cuda", dtype=torch.int32)
    cache = method.compress(q, k, v, cu_seqlens)
    assert torch.equal(cache.index[0], reference.index) and torch.equal(cache.lens[0], reference.lens)
    for h in (0, HKV - 1):
        n = int(cache.lens[0, h])
        assert torch.equal(cache.k[0, h, :n], k[cache.index[0, h, :n], h])
        assert torch.equal(cache.v[0, h, :n], v[cache.index[0, h, :n], h])
        assert torch.all(cache.k[0, h, n:] == 0) and torch.all(cache.v[0, h, n:] == 0)


def test_snapkv_compress_makes_no_host_sync_with_host_lengths():
    from sparse_attn import build_method

    context = 16 * 1024 + 5
    method = build_method("snapkv", token_capacity=context // 10)
    q, k, v = prompt(context, 1)
    cu_seqlens = torch.tensor([0, context], device="cuda", dtype=torch.int32)
    expected = method.compress(q, k, v, cu_seqlens)  # warm-up (Triton compiles, which may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        cache = method.compress(q, k, v, cu_seqlens, seq_lens=[context])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(cache.index, expected.index) and torch.equal(cache.k, expected.k)


@pytest.mark.parametrize("reduce", ["mean_sum", "max"])
@pytest.mark.parametrize("config", [None, (64, 64, 4, 3), (128, 128, 8, 2), (64, 256, 8, 2)], ids=str)
def test_window_kernel_configs_gpu(reduce, config):
    from sparse_attn.kernels.decode import naive_window_importance
    from sparse_attn.kernels.decode.window_triton import triton_window_importance

    context = 16 * 1024 + 37  # ragged last tile
    gen = torch.Generator(device="cuda").manual_seed(3)
    q_window = torch.randn(HQ, 256, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    k = torch.randn(HKV, context, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    ref = naive_window_importance(q_window, k, reduce=reduce)
    kw = {} if config is None else {"stats_config": config, "scores_config": config}
    out = triton_window_importance(q_window, k, reduce=reduce, **kw)
    assert not out.isnan().any()
    assert rel_rmse(ref, out) <= RATIO


@pytest.mark.parametrize("fused", [True, False], ids=["fused-combine", "two-launch"])
@pytest.mark.parametrize("factor", [1, 2, 4])
def test_decode_split_factors_gpu(factor, fused):
    from sparse_attn.kernels.decode import naive_decode
    from sparse_attn.kernels.decode.triton import choose_num_splits, triton_decode

    gen = torch.Generator(device="cuda").manual_seed(factor)
    batch, width = 3, 13107
    lens = torch.randint(1, width + 1, (batch, HKV), device="cuda", generator=gen, dtype=torch.int32)
    lens[0, 0] = width
    q = torch.randn(batch, HQ, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    k = torch.randn(batch, HKV, width, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    beyond = torch.arange(width, device="cuda") >= lens[..., None]
    k.masked_fill_(beyond[..., None], float("nan"))
    v.masked_fill_(beyond[..., None], float("nan"))
    splits = choose_num_splits(batch * HKV, width, q.device) * factor
    for block_n in (32, 64):
        out = torch.full_like(q, float("nan"))
        triton_decode(q, k, v, lens, out=out, num_splits=splits, block_n=block_n, fuse_combine=fused)
        assert not out.isnan().any()
        assert rel_rmse(naive_decode(q, k, v, lens).float(), out.float()) <= RATIO


def test_fused_combine_under_a_cuda_graph_gpu():
    """Replays of a captured fused decode (ticket counters reset by the kernel itself) match the reference."""
    from sparse_attn.kernels.decode import naive_decode
    from sparse_attn.kernels.decode.triton import triton_decode

    gen = torch.Generator(device="cuda").manual_seed(9)
    batch, width = 4, 20000
    lens = torch.randint(1, width + 1, (batch, HKV), device="cuda", generator=gen, dtype=torch.int32)
    q = torch.randn(batch, HQ, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    k = torch.randn(batch, HKV, width, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    out = torch.full_like(q, float("nan"))
    triton_decode(q, k, v, lens, out=out, num_splits=16, fuse_combine=True)  # warm-up: compiles, counters
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        triton_decode(q, k, v, lens, out=out, num_splits=16, fuse_combine=True)
    for _ in range(3):
        out.fill_(float("nan"))
        q.copy_(torch.randn(q.shape, device="cuda", generator=gen, dtype=q.dtype))
        graph.replay()
        torch.cuda.synchronize()
        assert not out.isnan().any()
        assert rel_rmse(naive_decode(q, k, v, lens).float(), out.float()) <= RATIO


@pytest.mark.parametrize("context", [32 * 1024 + 37])
def test_pool_and_pack_kernels_gpu(context):
    """The fused pooling / key and pack kernels against their PyTorch references at a real shape."""
    from sparse_attn.kernels.decode import flat_ordered_keys, naive_pack_kept, naive_pool_keys, pack_kept, pool_keys

    gen = torch.Generator(device="cuda").manual_seed(4)
    raw = torch.rand(HKV, context, device="cuda", generator=gen)
    ref_pooled, _ = naive_pool_keys(raw, 21, 128, 4)
    pooled, keys = pool_keys(raw, 21, 128, 4)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-7, rtol=1e-6)
    assert torch.equal(keys, flat_ordered_keys(pooled))
    _, k, v = prompt(context, 5)
    width = context // 10
    index = torch.sort(torch.randperm(context, device="cuda", generator=gen)[: HKV * width].view(HKV, width)).values
    lens = torch.full((1, HKV), width, device="cuda", dtype=torch.int32)
    lens[0, 1] = width - 100
    index[1, width - 100:] = -1
    cu_seqlens = torch.tensor([0, context], device="cuda", dtype=torch.int32)
    expected = naive_pack_kept(k, v, index[None], lens, cu_seqlens)
    got = pack_kept(k, v, index[None], lens, cu_seqlens)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    torch.testing.assert_close(got[2], expected[2])


@pytest.mark.parametrize("context", [32 * 1024 + 37, 128 * 1024])
@pytest.mark.parametrize("levels", [3, 1 << 20])
def test_keep_top_kernel_gpu(context, levels):
    """SnapKV's selection kernel (fp32 topk cut + tie-aware compaction) against a stable sort, many exact ties."""
    from sparse_attn.kernels.decode import keep_top
    from sparse_attn.methods._kv import reference_top_positions

    gen = torch.Generator(device="cuda").manual_seed(levels)
    scores = torch.randint(0, levels, (HKV, context), device="cuda", generator=gen).float() / levels
    scores[:, :4] = float("inf")
    count = context // 10
    index, lens = keep_top(scores, count)
    assert torch.equal(index, torch.sort(reference_top_positions(scores, count), dim=-1).values)
    assert torch.all(lens == count)


@pytest.mark.parametrize("context", [32 * 1024 + 37, 128 * 1024])
@pytest.mark.parametrize("levels", [3, 1 << 20, 0], ids=["ties", "fine", "continuous"])
@pytest.mark.parametrize("ratio", [0.2, 0.0, 1.0], ids=["floor", "no-floor", "no-shared"])
def test_ada_cuts_kernel_gpu(context, levels, ratio):
    """Ada-SnapKV's radix-select cuts (8 launches, atomic-ticket decisions) against the sort reference at real
    shapes: same cuts, same width, the kept set holds exactly the budget."""
    from sparse_attn.kernels.decode import ada_cuts, flat_ordered_keys, naive_ada_cuts

    gen = torch.Generator(device="cuda").manual_seed(levels + context)
    if levels:
        scores = torch.randint(0, levels, (HKV, context), device="cuda", generator=gen).float() / levels - 0.25
    else:
        spread = torch.rand(HKV, 1, device="cuda", generator=gen)
        scores = torch.rand(HKV, context, device="cuda", generator=gen) * spread
    scores[:, :4] = float("inf")
    scores[:, -128:] = float("inf")
    keys = flat_ordered_keys(scores)
    capacity = context // 10
    floor = max(int(capacity * ratio), 132) if ratio else 0
    total = capacity * HKV
    ref_cut, ref_width = naive_ada_cuts(keys, floor, total)
    for _ in range(2):  # twice: the scratch and the ticket start from zero every call
        cut, width = ada_cuts(keys, floor, total)
        assert torch.equal(cut, ref_cut) and int(width) == int(ref_width)
    assert int((keys >= cut[:, None]).sum()) == total


@pytest.mark.parametrize("context", [32 * 1024 + 37, 128 * 1024], ids=lambda c: f"{c}")
def test_ada_radix_compress_keeps_the_reference_tokens_gpu(context):
    """`allocation = "radix"` end to end: the same kept tokens as `reference_allocate` and as the "topk" path,
    and only one host sync (the cache width) with host `seq_lens`."""
    from sparse_attn import build_method

    method = build_method("ada_snapkv", token_capacity=context // 10)
    method.allocation = "radix"
    q, k, v = prompt(context, context + 1)
    scores = method.importance(q[-256:].transpose(0, 1), k.transpose(0, 1))
    fast, reference = method._allocate(scores), method.reference_allocate(scores)
    assert torch.equal(fast.index, reference.index) and torch.equal(fast.lens, reference.lens)
    cu_seqlens = torch.tensor([0, context], device="cuda", dtype=torch.int32)
    cache = method.compress(q, k, v, cu_seqlens, seq_lens=[context])
    method.allocation = "topk"
    expected = method.compress(q, k, v, cu_seqlens, seq_lens=[context])
    for field in ("k", "v", "lens", "index", "sparsity"):
        assert torch.equal(getattr(cache, field), getattr(expected, field)), field
    method.allocation = "radix"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")  # count the syncs: only the width read-back may remain
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method.compress(q, k, v, cu_seqlens, seq_lens=[context])
    torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 1, [str(w.message) for w in syncs]
