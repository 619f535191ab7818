"""The sparse KV caches: memory really shrinks (snapkv / ada_snapkv), Quest pages stay up to date, positions and
unpadding are right, the generate hook creates them, and misuse raises."""
import inspect

import pytest
import torch
from transformers import DynamicCache
from transformers.generation.utils import GenerationMixin

import sparse_attn
from sparse_attn.config import ConfigError
from sparse_attn.integrations.transformers import generate_hook
from sparse_attn.integrations.transformers.cache import CompressedKVLayer, QuestLayer
from sparse_attn.methods.quest import QuestPages
from sparse_attn.testing import build_tiny_model, random_prompts
from tests.method_matrix import METHODS

SNAP_SMALL = METHODS["snapkv"]["small"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path_factory.mktemp("tiny-llama-cache"), family="llama")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    return model, tokenizer


def _greedy(model, inputs, new_tokens, **kwargs):
    return model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, return_dict_in_generate=True,
                          **kwargs)


def test_generate_hook_installed():
    """Fails loudly when transformers changes the private method our automatic cache creation wraps."""
    assert generate_hook.is_installed(), generate_hook.hook_status()
    wrapped = GenerationMixin._prepare_cache_for_generation
    assert getattr(wrapped, "_sparse_attn_hook", False)
    assert list(inspect.signature(wrapped.__wrapped__).parameters) == generate_hook.EXPECTED_PARAMETERS


@pytest.mark.parametrize("method", ["snapkv", "ada_snapkv"])
def test_compressed_cache_memory_is_capacity_over_length(llama, method):
    """At token_capacity C and prompt length L the compressed cache's tensors total about C / L of the dense one's."""
    model, tokenizer = llama
    capacity, length = 40, 400
    prompts = random_prompts(tokenizer, [length, length], seed=3)
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    assert inputs["input_ids"].shape[1] == length

    model.set_attn_implementation("sdpa")
    dense = _greedy(model, inputs, 1).past_key_values  # max_new_tokens=1: the cache right after prefill
    dense_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in dense.layers)

    sparse_attn.configure(model, method=method, **{**SNAP_SMALL, "token_capacity": capacity})
    cache = sparse_attn.make_cache(model)  # the explicit route: generate(past_key_values=...)
    assert type(cache) is sparse_attn.CompressedKVCache
    out = _greedy(model, inputs, 1, past_key_values=cache)
    assert out.past_key_values is cache
    assert cache.dense_bytes() == dense_bytes
    widest = max(layer.keys.shape[2] for layer in cache.layers)  # [B, Hkv, C, D]: C = the longest head's kept length
    for layer in cache.layers:
        assert layer.keys.shape[2] == int(layer.lens.max())
        assert int(layer.lens.sum()) == capacity * layer.lens.numel()  # the budget, exactly (per head or shared)
    if method == "snapkv":
        assert widest == capacity
    else:  # ada_snapkv: heads keep different counts; the padded layout costs the longest head (documented)
        assert capacity < widest <= 1.25 * capacity
    # K + V dominate; lens and the kept positions (int64) add ~3% at head_dim 32 in fp32
    assert cache.stored_bytes() / dense_bytes == pytest.approx(widest / length, rel=0.05)
    stats = sparse_attn.get_stats(model)["compression"]
    assert stats["kept_ratio"] == pytest.approx(capacity / length, abs=1e-6)
    assert stats["cache_bytes"] == cache.stored_bytes() and stats["memory_saved"]


def test_quest_cache_unpads_and_keeps_pages_up_to_date(llama):
    model, tokenizer = llama
    prompts = random_prompts(tokenizer, [45, 110], seed=5)
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    lengths = inputs["attention_mask"].sum(dim=1)
    width = inputs["input_ids"].shape[1]
    model.set_attn_implementation("sdpa")
    dense = _greedy(model, inputs, 1).past_key_values

    quest = METHODS["quest"]["small"]
    sparse_attn.configure(model, method="quest", **quest)
    new_tokens = 6
    out = _greedy(model, inputs, new_tokens)
    cache = out.past_key_values
    assert type(cache) is sparse_attn.QuestCache
    for layer, dense_layer in zip(cache.layers, dense.layers):
        assert isinstance(layer, QuestLayer)
        assert layer.lens.tolist() == (lengths + new_tokens - 1).tolist()
        assert layer.get_seq_length() == width + new_tokens - 1
        for b, length in enumerate(lengths.tolist()):  # the prompt sits at 0..len-1, padding removed
            torch.testing.assert_close(layer.keys[b, :, :length], dense_layer.keys[b, :, width - length:])
            torch.testing.assert_close(layer.values[b, :, :length], dense_layer.values[b, :, width - length:])
        rebuilt = QuestPages.from_cache(layer.keys, layer.lens, quest["page_size"])  # pages after every append
        pages = min(layer.pages.num_pages, rebuilt.num_pages)  # the metadata grows ahead, by empty pages
        torch.testing.assert_close(layer.pages.page_min[:, :, :pages], rebuilt.page_min[:, :, :pages])
        torch.testing.assert_close(layer.pages.page_max[:, :, :pages], rebuilt.page_max[:, :, :pages])
        assert torch.all(layer.pages.page_min[:, :, pages:] == float("inf"))
        used = -(-int(layer.lens.max()) // quest["page_size"])
        assert torch.all(rebuilt.page_min[:, :, used:] == float("inf"))  # no token beyond what both hold
    stats = sparse_attn.get_stats(model)["decode"]
    assert stats["steps"] == new_tokens - 1 and stats["sparsity"] > 0.1


def test_snapkv_beam_search_full_budget_equals_sdpa(llama):
    model, tokenizer = llama
    inputs = tokenizer(random_prompts(tokenizer, [30, 70], seed=9), return_tensors="pt", padding=True)
    model.set_attn_implementation("sdpa")
    reference = _greedy(model, inputs, 4, num_beams=2).sequences
    sparse_attn.configure(model, method="snapkv", **METHODS["snapkv"]["full"])
    assert torch.equal(_greedy(model, inputs, 4, num_beams=2).sequences, reference)


def test_cache_misuse_raises(llama):
    model, tokenizer = llama
    inputs = tokenizer(random_prompts(tokenizer, [40], seed=11), return_tensors="pt")
    sparse_attn.configure(model, method="snapkv", **SNAP_SMALL)
    with pytest.raises(ConfigError, match="QuestCache serves"):
        sparse_attn.QuestCache(model)
    with pytest.raises(RuntimeError, match="make_cache"):  # transformers' own cache cannot run snapkv decode
        _greedy(model, inputs, 3, past_key_values=DynamicCache(config=model.config))
    with pytest.raises(NotImplementedError, match="use_cache=True"):
        _greedy(model, inputs, 3, use_cache=False)
    cache = sparse_attn.make_cache(model)
    _greedy(model, inputs, 2, past_key_values=cache)
    with pytest.raises(NotImplementedError, match="fresh cache"):  # a second prompt over a compressed cache
        _greedy(model, {k: torch.cat([v, v], dim=1) for k, v in inputs.items()}, 2, past_key_values=cache)
    with pytest.raises(NotImplementedError, match="cropped"):
        cache.crop(-1)
    sparse_attn.configure(model, method="flexprefill")
    with pytest.raises(ConfigError, match="prefill only"):
        sparse_attn.make_cache(model)
    assert isinstance(cache.layers[0], CompressedKVLayer)


def test_quest_layer_decode_step_order_is_enforced(llama):
    """The Quest layer holds a decode token until the attention function's `decode_step` writes it (with the page
    selection and the attention): a second token before it, or a step without a token, raises; `cuda_graphs=False`
    is accepted (the CPU always runs the eager step) and a step appends exactly once."""
    model, tokenizer = llama
    sparse_attn.configure(model, method="quest", **METHODS["quest"]["small"])
    inputs = tokenizer(random_prompts(tokenizer, [70], seed=12), return_tensors="pt")
    cache = sparse_attn.QuestCache(model, cuda_graphs=False)
    _greedy(model, inputs, 3, past_key_values=cache)
    layer = cache.layers[0]
    assert isinstance(layer, QuestLayer) and layer.cuda_graphs is False and layer.pending is None
    length = int(layer.lens[0])
    k_new = torch.randn(1, layer.keys.shape[1], 1, layer.keys.shape[3])
    layer.update(k_new, k_new)
    with pytest.raises(RuntimeError, match="attention never ran"):
        layer.update(k_new, k_new)
    q = torch.randn(1, model.config.num_attention_heads, layer.keys.shape[3])
    out, head_sparsity = layer.decode_step(sparse_attn.build_method("quest", **METHODS["quest"]["small"]), q, 0.125)
    assert int(layer.lens[0]) == length + 1 and torch.equal(layer.keys[0, :, length], k_new[0, :, 0])
    assert out.shape == q.shape and head_sparsity.shape == (1, layer.keys.shape[1])
    with pytest.raises(RuntimeError, match="without a new token"):
        layer.decode_step(sparse_attn.build_method("quest", **METHODS["quest"]["small"]), q, 0.125)
