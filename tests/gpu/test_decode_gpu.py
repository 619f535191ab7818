"""Decode kernels on the GPU at real shapes (Llama-3.1-8B heads: 32 query, 8 KV, head dim 128, bf16), against the
PyTorch references: relative RMSE <= 5e-3 and every output element written (outputs poisoned with NaN).

Run on a CUDA machine, compiled (not interpreted):
    TRITON_INTERPRET=0 python -m pytest -q -m gpu tests/gpu/test_decode_gpu.py
"""

import pytest
import torch

from .common import GPU_MARKS, HKV, HQ, RATIO, D

pytestmark = GPU_MARKS

CONTEXTS = [16 * 1024, 32 * 1024, 64 * 1024, 128 * 1024]
BATCHES = [1, 8]


def rel_rmse(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.double(), out.double()
    return ((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()


def check(name, ref, out):
    assert not torch.isnan(out).any(), f"{name}: output elements left unwritten (NaN)"
    err = rel_rmse(ref, out)
    assert err <= RATIO, f"{name}: relative RMSE {err:.2e} > {RATIO}"


def ada_like_lens(batch, capacity, generator):
    """Per-head lengths as Ada-SnapKV produces them: floor 20% of the capacity, total capacity * Hkv."""
    weights = torch.rand(batch, HKV, generator=generator, device="cuda") + 0.05
    extra = capacity * HKV * 0.8 * weights / weights.sum(dim=1, keepdim=True)
    return (int(capacity * 0.2) + extra).floor().clamp(1).to(torch.int32)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("context", CONTEXTS, ids=lambda c: f"{c // 1024}K")
def test_compressed_decode_gpu(context, batch):
    from sparse_attn.kernels.decode import decode, naive_decode

    gen = torch.Generator(device="cuda").manual_seed(context + batch)
    capacity = context // 10
    lens = ada_like_lens(batch, capacity, gen)
    width = int(lens.max())
    q = torch.randn(batch, HQ, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    k = torch.randn(batch, HKV, width, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    v = torch.randn(batch, HKV, width, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    beyond = torch.arange(width, device="cuda") >= lens[..., None]
    k.masked_fill_(beyond[..., None], float("nan"))  # must never be read
    v.masked_fill_(beyond[..., None], float("nan"))
    out = torch.full_like(q, float("nan"))
    decode(q, k, v, lens, out=out, backend="triton")
    check("compressed decode", naive_decode(q, k, v, lens).float(), out.float())
    # dense decode over the whole context with the same kernel (our dense path)
    full_k = torch.randn(batch, HKV, context, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    full_v = torch.randn_like(full_k)
    full_lens = torch.full((batch, HKV), context, device="cuda", dtype=torch.int32)
    out.fill_(float("nan"))
    decode(q, full_k, full_v, full_lens, out=out, backend="triton")
    check("dense decode", naive_decode(q, full_k, full_v, full_lens).float(), out.float())


@pytest.mark.parametrize("share_pages", [True, False], ids=["shared", "per-q-head"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("context", CONTEXTS, ids=lambda c: f"{c // 1024}K")
def test_quest_step_gpu(context, batch, share_pages):
    from sparse_attn.kernels.quest import (
        build_page_meta,
        naive_quest_decode,
        naive_quest_page_scores,
        naive_quest_select_pages,
        quest_decode,
        quest_page_scores,
        quest_select_pages,
    )

    page_size = 16
    page_budget = context // 10 // page_size
    gen = torch.Generator(device="cuda").manual_seed(context * 3 + batch)
    # odd lengths: the last page is partial and the samples differ
    lens = (context - 1 - torch.arange(batch, device="cuda", dtype=torch.int32) * 977).clamp(min=page_size * 3)
    q = torch.randn(batch, HQ, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    k = torch.randn(batch, HKV, context, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    page_min, page_max = build_page_meta(k, lens, page_size)

    scores = quest_page_scores(q, page_min, page_max, lens, page_size, share_pages)
    ref_scores = naive_quest_page_scores(q, page_min, page_max, lens, page_size, share_pages)
    finite = torch.isfinite(ref_scores)
    assert torch.equal(finite, torch.isfinite(scores)), "candidate pages differ"
    assert rel_rmse(ref_scores[finite], scores[finite]) < 1e-5

    index = quest_select_pages(scores, lens, page_size, page_budget)
    ref_index = naive_quest_select_pages(ref_scores, lens, page_size, page_budget)
    # on the same scores the Triton selection is exact (ties to the lower page id, like the reference)
    assert torch.equal(index, naive_quest_select_pages(scores, lens, page_size, page_budget))
    # against the reference scores, fp32 summation order may swap pages whose bounds tie to the last ulp
    same = (index.unsqueeze(-1) == ref_index.unsqueeze(-2)).any(-1).float().mean().item()
    assert same >= 0.999, f"only {same:.4f} of the selected pages agree with the reference"
    assert (index[..., -1] >= 0).all() and (index.diff(dim=-1) > 0).all(), "pages must be sorted, unpadded here"

    out = torch.full_like(q, float("nan"))
    quest_decode(q, k, v, lens, index, page_size, out=out)
    check("quest decode", naive_quest_decode(q, k, v, lens, index, page_size).float(), out.float())


@pytest.mark.parametrize("reduce", ["mean_sum", "max"])
@pytest.mark.parametrize("context", [32 * 1024, 128 * 1024], ids=lambda c: f"{c // 1024}K")
def test_window_importance_gpu(context, reduce):
    from sparse_attn.kernels.decode.window_triton import triton_window_importance
    from sparse_attn.methods._kv import window_probs

    gen = torch.Generator(device="cuda").manual_seed(context)
    q_window = torch.randn(HQ, 256, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    k = torch.randn(HKV, context, D, device="cuda", generator=gen, dtype=torch.bfloat16)
    probs = window_probs(q_window, k)
    ref = probs.mean(dim=1).sum(dim=1) if reduce == "mean_sum" else probs.amax(dim=2).amax(dim=1)
    del probs
    check(f"window importance {reduce}", ref, triton_window_importance(q_window, k, reduce=reduce))


def test_quest_cache_decode_step_never_syncs():
    """One decode step of the Transformers Quest cache layer (append the new key / value, fold it into the page
    metadata, growing it by a page) and the method's step (scores, selection, attention): no device-to-host read
    (`torch.cuda.set_sync_debug_mode("error")` raises on any synchronising call)."""
    from sparse_attn.integrations.transformers.cache import QuestLayer
    from sparse_attn.methods.quest import Quest

    gen = torch.Generator(device="cuda").manual_seed(0)
    batch, prompt = 2, 4096
    keys = torch.randn(batch, HKV, prompt, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    values = torch.randn_like(keys)
    layer = QuestLayer()
    layer.update(keys, values)  # the prompt arrives whole ("pending")
    layer.commit(keys, values, torch.tensor([prompt, prompt - 5], device="cuda"), page_size=16)
    method = Quest(token_budget=512)
    pages_before = layer.pages.num_pages
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        k_new = torch.randn(batch, HKV, 1, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        layer.update(k_new, torch.randn_like(k_new))  # the first sample's token opens a new page
        q = torch.randn(batch, HQ, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        out, head_sparsity = layer.decode_step(method, q, D**-0.5)  # a new shape: the eager step
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert layer.pages.num_pages == pages_before + 64  # grown geometrically (at least 64 pages at a time)
    assert torch.equal(layer.lens.cpu(), torch.tensor([prompt + 1, prompt - 4], dtype=torch.int32))
    assert torch.isfinite(out).all() and float(head_sparsity.min()) > 0.8


def test_quest_scores_and_selection_compile_once_as_pages_grow():
    """A decode adds a page every page_size tokens: the page-count and score-stride arguments must not make Triton
    compile new specializations mid-generation (`GROWING_ARGS`; 0.3-0.6 s each). Steps over 4094..4101 pages (every
    divisibility class of 16) after one warm-up step: no compile."""
    import triton

    from sparse_attn.kernels.quest import build_page_meta, quest_page_scores, quest_select_pages

    if not hasattr(triton, "knobs"):
        pytest.skip("needs triton.knobs (Triton >= 3.4) to observe compiles")
    gen = torch.Generator(device="cuda").manual_seed(4)
    q = torch.randn(1, HQ, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    compiled = []

    def step(num_pages):
        lens = torch.tensor([num_pages * 16 - 3], device="cuda", dtype=torch.int32)
        keys = torch.randn(1, HKV, num_pages * 16, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        page_min, page_max = build_page_meta(keys, lens, 16)
        scores = quest_page_scores(q, page_min, page_max, lens, 16, True, backend="triton")
        return quest_select_pages(scores, lens, 16, 409, return_reads=True, backend="triton")[0]

    step(4099)  # warm-up: compiles once
    previous = triton.knobs.runtime.jit_post_compile_hook
    triton.knobs.runtime.jit_post_compile_hook = lambda **kw: compiled.append(kw["fn"].name)
    try:
        for num_pages in range(4100, 4114):
            assert step(num_pages).shape == (1, HKV, 410)
        torch.cuda.synchronize()
    finally:
        triton.knobs.runtime.jit_post_compile_hook = previous
    assert compiled == [], f"kernels compiled again as pages grew: {compiled}"


def test_quest_layer_step_is_four_launches_and_never_recompiles():
    """Transformers decode is host-bound (benchmarks/RESULTS.md, session 14): one eager Quest layer step is the
    cache append (K/V write, page fold, lens += 1: one kernel), page scores, selection (which also writes its
    sparsity) and the split attention with its fused combine: 4 launches, counted by the profiler. Over 40 steps
    that cross page boundaries and a cache / metadata growth, after one warm-up step, nothing compiles again."""
    import triton

    from sparse_attn.integrations.transformers.cache import QuestLayer
    from sparse_attn.methods.quest import Quest

    if not hasattr(triton, "knobs"):
        pytest.skip("needs triton.knobs (Triton >= 3.4) to observe compiles")
    gen = torch.Generator(device="cuda").manual_seed(5)
    batch, prompt = 2, 8200
    keys = torch.randn(batch, HKV, prompt, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    layer = QuestLayer(cuda_graphs=False)
    layer.update(keys, keys)
    layer.commit(keys, torch.randn_like(keys), torch.tensor([prompt, prompt - 9], device="cuda"), page_size=16)
    method = Quest(token_budget=1024)

    def step():
        k_new = torch.randn(batch, HKV, 1, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        q = torch.randn(batch, HQ, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        layer.update(k_new, k_new)
        return layer.decode_step(method, q, D**-0.5)

    step()  # warm-up: compiles
    capacity, pages = layer.keys.shape[2], layer.pages.num_pages
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out, head_sparsity = step()
        torch.cuda.synchronize()
    launch_names = ("cudaLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC", "cuLaunchKernel")
    launches = [e.name for e in prof.events() if e.name in launch_names]
    # + 2 for the random inputs of the step itself
    assert len(launches) <= 4 + 2, f"{len(launches)} launches per Quest layer step: {launches}"
    compiled = []
    previous = triton.knobs.runtime.jit_post_compile_hook
    triton.knobs.runtime.jit_post_compile_hook = lambda **kw: compiled.append(kw["fn"].name)
    try:
        for _ in range(40):
            out, head_sparsity = step()
        torch.cuda.synchronize()
    finally:
        triton.knobs.runtime.jit_post_compile_hook = previous
    assert compiled == [], f"kernels compiled again as the cache grew: {compiled}"
    assert layer.keys.shape[2] > capacity or layer.pages.num_pages > pages  # the steps did cross a growth
    assert layer.lens.tolist() == [prompt + 42, prompt - 9 + 42]
    assert torch.isfinite(out).all() and float(head_sparsity.min()) > 0.8


def test_quest_layer_graph_replay_equals_eager_steps():
    """The CUDA-graph step (`quest_graph.py`) against the eager one on twin layers, 60 steps from a prompt whose
    cache and page metadata both grow on the way (each growth: one eager step, one capture, then replays): the
    same outputs, statistics, lengths, cache and metadata bit for bit, and the graph really replayed."""
    from sparse_attn.integrations.transformers.cache import QuestLayer
    from sparse_attn.methods.quest import Quest

    gen = torch.Generator(device="cuda").manual_seed(8)
    batch, prompt = 3, 5000
    keys = torch.randn(batch, HKV, prompt, D, device="cuda", dtype=torch.bfloat16, generator=gen)
    values = torch.randn_like(keys)
    lens = torch.tensor([prompt, prompt - 17, 1000], device="cuda")
    layers = {}
    for graphs in (True, False):
        layer = QuestLayer(cuda_graphs=graphs)
        layer.update(keys, values)
        layer.commit(keys.clone(), values.clone(), lens, page_size=16)
        layers[graphs] = layer
    method = Quest(token_budget=512)
    capacity, pages = layers[True].keys.shape[2], layers[True].pages.num_pages
    for _ in range(700):  # the first append grows the cache by 1/8 (625 slots): 700 steps cross a second growth
        k_new = torch.randn(batch, HKV, 1, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        v_new = torch.randn_like(k_new)
        q = torch.randn(batch, HQ, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        results = {}
        for graphs, layer in layers.items():
            layer.update(k_new, v_new)
            out, sparsity = layer.decode_step(method, q, D**-0.5)
            results[graphs] = (out.clone(), sparsity)
        assert torch.equal(results[True][0], results[False][0]) and torch.equal(results[True][1], results[False][1])
    graph_layer, eager_layer = layers[True], layers[False]
    assert graph_layer.keys.shape[2] > capacity + 625 and graph_layer.pages.num_pages > pages  # both grew
    assert torch.equal(graph_layer.lens, eager_layer.lens) and graph_layer.lens.tolist() == [5700, 5683, 1700]
    assert torch.equal(graph_layer.keys, eager_layer.keys) and torch.equal(graph_layer.values, eager_layer.values)
    assert torch.equal(graph_layer.pages.page_min, eager_layer.pages.page_min)
    assert torch.equal(graph_layer.pages.page_max, eager_layer.pages.page_max)
    stepper = graph_layer.step_graph
    assert stepper.captures >= 3 and stepper.replays >= 700 - 2 * stepper.captures  # replayed, not eager
    assert float(results[True][1].min()) > 0.5  # the method is sparse at these lengths
