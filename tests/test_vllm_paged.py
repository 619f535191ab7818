"""vLLM backend building blocks without an engine: paged writes/gathers, Quest metadata per physical block,
Quest over vLLM blocks vs the method's full-cache decode, in-place compaction, config handling. Fast (no vLLM
engine); the engine tests are in test_vllm_engine.py."""
import pytest
import torch

pytest.importorskip("vllm")

from sparse_attn import build_config  # noqa: E402
from sparse_attn.config import ConfigError  # noqa: E402
from sparse_attn.integrations.vllm import backend, compat, paged  # noqa: E402
from sparse_attn.kernels.quest import naive_build_page_meta  # noqa: E402
from sparse_attn.methods.quest import QuestPages  # noqa: E402

HKV, HQ, D, BS = 2, 4, 32, 32


def _scattered_cache(lengths, num_blocks=40, seed=0):
    """A plain-layout cache `[num_blocks, BS, HKV, 2D]`-backed with requests written to shuffled blocks.

    Returns (key_cache, value_cache, block_tables [B, max_blocks], dense k, v per request [B, HKV, S, D])."""
    gen = torch.Generator().manual_seed(seed)
    kv_cache = torch.full((num_blocks, HKV, BS, 2 * D), float("nan"))
    key_cache, value_cache = compat.kv_views(kv_cache, D)
    order = torch.randperm(num_blocks, generator=gen)
    max_blocks = max(-(-n // BS) for n in lengths)
    tables = torch.zeros(len(lengths), max_blocks, dtype=torch.int32)
    used = 0
    seq = max(lengths)
    dense_k = torch.zeros(len(lengths), HKV, seq, D)
    dense_v = torch.zeros(len(lengths), HKV, seq, D)
    slots_all, keys_all, values_all = [], [], []
    for b, n in enumerate(lengths):
        blocks = -(-n // BS)
        tables[b, :blocks] = order[used:used + blocks].int()
        used += blocks
        k = torch.randn(n, HKV, D, generator=gen)
        v = torch.randn(n, HKV, D, generator=gen)
        pos = torch.arange(n)
        slots_all.append(tables[b, pos // BS].long() * BS + pos % BS)
        keys_all.append(k)
        values_all.append(v)
        dense_k[b, :, :n] = k.transpose(0, 1)
        dense_v[b, :, :n] = v.transpose(0, 1)
    slots = torch.cat(slots_all)
    paged.write_kv(key_cache, value_cache, torch.cat(keys_all), torch.cat(values_all), slots)
    return kv_cache, key_cache, value_cache, tables, dense_k, dense_v, (torch.cat(keys_all), slots)


def test_kv_views_layouts():
    cache = torch.randn(3, HKV, BS, 2 * D)
    k, v = compat.kv_views(cache, D)
    assert k.shape == (3, BS, HKV, D)
    assert torch.equal(k[1, 5, 1], cache[1, 1, 5, :D]) and torch.equal(v[1, 5, 1], cache[1, 1, 5, D:])
    old = torch.randn(3, 2, BS, HKV, D)  # vLLM 0.25 GPU layout
    k, v = compat.kv_views(old, D)
    assert torch.equal(k, old[:, 0]) and torch.equal(v, old[:, 1])
    with pytest.raises(compat.UnsupportedVLLMError, match="unknown KV cache layout"):
        compat.kv_views(torch.randn(3, 4, 5), D)


def test_write_and_gather_roundtrip_skips_padding_slots():
    lengths = [70, 33, 100]
    kv_cache, kc, vc, tables, dense_k, dense_v, _ = _scattered_cache(lengths)
    for b, n in enumerate(lengths):
        got = paged.gather_request(kc, tables[b], n)
        assert torch.equal(got.transpose(0, 1), dense_k[b, :, :n])
    before = kv_cache.clone()
    paged.write_kv(kc, vc, torch.randn(2, HKV, D), torch.randn(2, HKV, D), torch.tensor([-1, -1]))
    assert torch.equal(before.nan_to_num(7.0), kv_cache.nan_to_num(7.0))


@pytest.mark.parametrize("page_size", [16, 32])
def test_page_meta_per_block_equals_reference(page_size):
    lengths = [70, 33, 100]
    kv_cache, kc, vc, tables, dense_k, _, (keys, slots) = _scattered_cache(lengths)
    meta = paged.PageMeta(kc, page_size)
    # write in two steps (prompt, then one token at a time for the tail) like prefill + decode
    meta.update(keys[:50], slots[:50])
    for i in range(50, keys.shape[0]):
        meta.update(keys[i:i + 1], slots[i:i + 1])
    lens = torch.tensor(lengths)
    ref_min, ref_max = naive_build_page_meta(dense_k, lens, page_size)
    got_min, got_max = meta.gather(tables.long(), ref_min.shape[2])
    for b, n in enumerate(lengths):
        pages = -(-n // page_size)
        assert torch.equal(got_min[b, :, :pages], ref_min[b, :, :pages])
        assert torch.equal(got_max[b, :, :pages], ref_max[b, :, :pages])


def test_page_meta_resets_reused_block():
    kv_cache, kc, vc, tables, _, _, (keys, slots) = _scattered_cache([64])
    meta = paged.PageMeta(kc, 16)
    meta.update(keys, slots)
    fresh = torch.full((3, HKV, D), -5.0)
    meta.update(fresh, slots[:3])  # the block is reused by a new request: page restarts at its first token
    got_min, got_max = meta.gather(tables.long(), 1)
    assert torch.equal(got_min[0, :, 0], torch.full((HKV, D), -5.0))
    assert torch.equal(got_max[0, :, 0], torch.full((HKV, D), -5.0))


@pytest.mark.parametrize("share_pages", [True, False])
@pytest.mark.parametrize("kernel", ["naive", "triton"])
def test_quest_over_vllm_blocks_equals_method_decode(share_pages, kernel, monkeypatch):
    """The backend's block-table Quest (metadata per physical page, page scores and attention read through the block
    table, no gathers) equals Quest.decode over the full contiguous cache and selects the same pages; with the
    reference kernels (CPU default) and with the Triton ones (interpreter here, compiled on GPU)."""
    import sparse_attn.kernels.quest as quest_kernels

    for name in ("paged_update_page_meta", "paged_page_scores", "paged_quest_decode", "quest_select_pages"):
        original = getattr(quest_kernels, name)
        monkeypatch.setattr(quest_kernels, name,
                            lambda *a, _f=original, **k: _f(*a, **{**k, "backend": kernel}))
    lengths = [150, 97, 33]
    kv_cache, kc, vc, tables, dense_k, dense_v, (keys, slots) = _scattered_cache(lengths, seed=1)
    cfg = build_config("quest", token_budget=32, page_size=16, share_pages=share_pages).decode
    q = torch.randn(len(lengths), HQ, D, generator=torch.Generator().manual_seed(2))
    lens = torch.tensor(lengths)
    ref_pages = QuestPages.from_cache(dense_k, lens, 16)
    ref_out, ref_sel = cfg.decode(q, dense_k, dense_v, lens, ref_pages, scale=D ** -0.5)

    impl = backend.SparseAttentionMixin.__new__(backend.SparseAttentionMixin)
    impl.quest = cfg
    impl.scale = D ** -0.5
    impl._pages = paged.PageMeta(kc, 16)
    impl._pages.update(keys, slots)
    out = torch.full((len(lengths), HQ, D), float("nan"))
    selection = impl._quest_decode(q, tables, lens, max(lengths), kc, vc, out, slice(0, len(lengths)))
    assert torch.equal(selection.page_index, ref_sel.page_index)
    assert selection.sparsity[0] > 0.5  # 150 tokens, 32-token budget + current page
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)


def test_row_plan_from_host_layout():
    """The builder's host copies give the same row plan as the device tensors, without a device sync."""
    from types import SimpleNamespace

    common = SimpleNamespace(query_start_loc_cpu=torch.tensor([0, 5, 6, 9, 9]), num_reqs=4,
                             seq_lens_cpu_upper_bound=torch.tensor([5, 40, 12, 0]))
    host = compat.host_batch_layout(common)
    assert host == ([0, 5, 6, 9, 9], [5, 40, 12, 0])
    plan = backend._Plan(*host)
    device = backend._Plan.from_metadata(SimpleNamespace(query_start_loc=torch.tensor([0, 5, 6, 9, 9]),
                                                         seq_lens=torch.tensor([5, 40, 12, 0])))
    assert (plan.prefill, plan.decode, plan.extend) == (device.prefill, device.decode, device.extend)
    assert (plan.prefill, plan.decode, plan.extend) == ([0], [1], [2])
    assert compat.host_batch_layout(common, SimpleNamespace(speculative_config=object())) is None  # inexact
    assert compat.host_batch_layout(SimpleNamespace(num_reqs=1)) is None


def test_compaction_writes_kept_tokens_in_place():
    kv_cache, kc, vc, tables, dense_k, dense_v, _ = _scattered_cache([90])
    kept_k = torch.randn(HKV, 40, D)
    kept_v = torch.randn(HKV, 40, D)
    lens = torch.tensor([40, 25])
    paged.write_compacted(kc, vc, tables[0], kept_k, kept_v, lens)
    got = paged.gather_request(kc, tables[0], 90).transpose(0, 1)  # [HKV, 90, D]
    assert torch.equal(got[0, :40], kept_k[0]) and torch.equal(got[1, :25], kept_k[1, :25])
    assert torch.equal(got[1, 25:90], dense_k[0, 1, 25:90])  # beyond the kept length: untouched


def test_method_spec_and_engine_kwargs():
    assert backend.method_spec(None) == (None, {})
    assert backend.method_spec({"other": 1}) == (None, {})
    comp, options = backend.method_spec({"sparse_attn": {"method": "quest", "token_budget": 64, "stats_dir": "/x"}})
    assert comp.name == "quest" and comp.decode.token_budget == 64 and options == {"stats_dir": "/x"}
    with pytest.raises(ConfigError, match="unknown method"):
        backend.method_spec({"sparse_attn": {"method": "nope"}})
    from sparse_attn.integrations.vllm import engine_kwargs

    kw = engine_kwargs("snapkv", max_model_len=2048, token_capacity=512)
    assert kw["enable_chunked_prefill"] is False and kw["enable_prefix_caching"] is False
    assert kw["max_num_batched_tokens"] == 2048
    assert kw["additional_config"]["sparse_attn"]["token_capacity"] == 512
    assert "enable_chunked_prefill" not in engine_kwargs("quest")  # Quest works with chunked prefill


def test_version_check(monkeypatch):
    assert compat.check_version().startswith("0.32")
    monkeypatch.setattr(compat, "vllm_version", lambda: (0, 20, "0.20.1"))
    with pytest.raises(compat.UnsupportedVLLMError, match="0.25.x"):
        compat.check_version()


def test_gpu_backend_choice_from_additional_config():
    """On GPU, additional_config alone selects the CUSTOM backend; another explicit backend is refused."""
    from types import SimpleNamespace

    enum = compat.backend_enum()

    def config(backend, spec):
        return SimpleNamespace(attention_config=SimpleNamespace(backend=backend), additional_config=spec)

    chosen = config(None, {"sparse_attn": {"method": "flexprefill"}})
    compat.choose_custom_backend(chosen)
    assert chosen.attention_config.backend == enum.CUSTOM
    for untouched in (config(None, None), config(None, {"sparse_attn": {"method": "dense"}})):
        compat.choose_custom_backend(untouched)
        assert untouched.attention_config.backend is None  # stock selection
    with pytest.raises(ConfigError, match="attention_backend='CUSTOM'"):
        compat.choose_custom_backend(config(enum.FLASH_ATTN, {"sparse_attn": {"method": "quest"}}))


def test_backend_choice_hook_runs_in_vllm_config(tmp_path):
    """The hook the GPU plugin installs is called by vLLM's own config construction (checked here on CPU, where
    the plugin does not install it: the CPU build has one backend slot)."""
    from vllm.config import VllmConfig
    from vllm.engine.arg_utils import EngineArgs

    from sparse_attn.testing import build_tiny_model

    path = build_tiny_model(tmp_path / "m", family="llama")
    original = VllmConfig.__post_init__
    try:
        compat.install_backend_choice_hook()
        compat.install_backend_choice_hook()  # idempotent
        assert getattr(VllmConfig.__post_init__, "_sparse_attn_hook", False)
        cfg = EngineArgs(model=str(path), max_model_len=256, enforce_eager=True,
                         additional_config={"sparse_attn": {"method": "quest"}}).create_engine_config()
        assert cfg.attention_config.backend == compat.backend_enum().CUSTOM
    finally:
        VllmConfig.__post_init__ = original
