"""generate() with every method on tiny random models of every family, left-padded batches of 3 prompts.

- full budgets (tests/method_matrix.py "full"): tokens equal attn_implementation="sdpa" exactly (fp32), logits agree
  to 1e-4, and the measured sparsity is 0 (the method kept everything);
- small budgets: get_stats shows the method acted (sparsity > 0 where it acts), and the batch equals its samples
  run one by one (tokens exactly, logits to 1e-4, per-sample statistics).

One model per family (session fixture); the method is switched with `sparse_attn.configure(model, method=...)`.
"""
from dataclasses import dataclass

import pytest
import torch

import sparse_attn
from sparse_attn.integrations.transformers.cache import CompressedKVLayer
from sparse_attn.testing import FAMILIES, build_tiny_model, random_prompts
from tests.method_matrix import METHODS

PROMPT_LENGTHS = [61, 143, 257]  # odd lengths; the longest is where small budgets bite
NEW_TOKENS = 3
TOL = dict(rtol=1e-4, atol=1e-4)


@dataclass
class Family:
    model: object
    tokenizer: object
    inputs: dict
    prompts: list
    reference: object  # sdpa generate output


@pytest.fixture(scope="session")
def families(tmp_path_factory):
    built = {}

    def get(family: str) -> Family:
        if family not in built:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = build_tiny_model(tmp_path_factory.mktemp(f"tiny-{family}"), family=family)
            tokenizer = AutoTokenizer.from_pretrained(path)
            tokenizer.padding_side = "left"
            prompts = random_prompts(tokenizer, PROMPT_LENGTHS, seed=7)
            inputs = tokenizer(prompts, return_tensors="pt", padding=True)
            assert (inputs["attention_mask"] == 0).any(), "the batch must be left-padded"
            model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32)
            model.eval()
            built[family] = Family(model, tokenizer, inputs, prompts, _generate(model, inputs))
        return built[family]

    return get


def _generate(model, inputs, **kwargs):
    return model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, **kwargs)


def _assert_same_generation(out, reference, rows=slice(None)):
    assert torch.equal(out.sequences, reference.sequences[rows]), "generated tokens differ"
    for step, (logits, expected) in enumerate(zip(out.logits, reference.logits)):
        torch.testing.assert_close(logits, expected[rows], **TOL, msg=lambda m: f"step {step}: {m}")


def _params(method: str, budget: str) -> dict:
    params = {}
    for part in method.split("+"):
        params.update(METHODS[part][budget])
    return params


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", list(METHODS))
def test_full_budget_equals_sdpa(families, family, method):
    setup = families(family)
    sparse_attn.configure(setup.model, method=method, **_params(method, "full"))
    out = _generate(setup.model, setup.inputs)
    _assert_same_generation(out, setup.reference)
    stats = sparse_attn.get_stats(setup.model)
    assert stats["method"] == method
    assert stats["sparsity"] == pytest.approx(0.0, abs=1e-6), stats
    expected_sparse_layers = [1] if family == "gemma3" else [0, 1]  # gemma3 layer 0 is a sliding-window layer
    assert stats["sparse_layers"] == expected_sparse_layers


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", [m for m in METHODS if m != "dense"])
def test_small_budget_acts_and_batch_equals_samples(families, family, method):
    setup = families(family)
    config = sparse_attn.configure(setup.model, method=method, **_params(method, "small"))
    batch = _generate(setup.model, setup.inputs)
    stats = sparse_attn.get_stats(setup.model)
    assert stats["sparsity"] > 0.05, f"{method} did not act: {stats}"
    for layer in stats["sparse_layers"]:
        assert stats["per_layer"][layer] > 0.0
    cache = batch.past_key_values
    if config.decode is not None:  # generate created our cache by itself (no past_key_values argument)
        expected = sparse_attn.CompressedKVCache if config.decode.phase == "compression" else sparse_attn.QuestCache
        assert type(cache) is expected
    if config.decode is not None and config.decode.phase == "compression":
        _check_compressed_cache(cache, config.decode, setup, stats)
    if config.decode is not None and config.decode.phase == "decode":
        assert stats["decode"]["steps"] == NEW_TOKENS - 1 == len(stats["decode"]["per_step"])
        assert 0.0 < stats["decode"]["sparsity"] < 1.0
        assert stats["cache"]["memory_saved"] is False  # quest keeps the full cache (+ pages) by design

    # The batch equals each sample run alone (no padding): tokens exactly, logits to 1e-4, and the selections
    # measured per sample (prefill index sparsity, kept tokens, Quest pages read at every step) are the same.
    batch_selections = _per_sample_selections(setup.model)
    width = setup.inputs["input_ids"].shape[1]
    for row, prompt in enumerate(setup.prompts):
        single_inputs = setup.tokenizer([prompt], return_tensors="pt")
        single = _generate(setup.model, single_inputs)
        pad = width - single_inputs["input_ids"].shape[1]
        assert torch.equal(single.sequences[0], batch.sequences[row, pad:])
        for logits, expected in zip(single.logits, batch.logits):
            torch.testing.assert_close(logits[0], expected[row], **TOL)
        for (layer, kind), value in _per_sample_selections(setup.model).items():
            torch.testing.assert_close(value[0], batch_selections[layer, kind][row], msg=f"layer {layer} {kind}")


def _per_sample_selections(model) -> dict:
    """{(layer, kind): tensor with the batch first} of what each sparse layer recorded in the last generate."""
    found = {}
    for module in model.modules():
        stats = getattr(module, "_sparse_attn_stats", None)
        if stats is None or stats.kind != "sparse":
            continue
        if stats.prefill is not None:
            found[stats.layer_idx, "prefill"] = stats.prefill  # [B, Hq]
        if stats.kv is not None:
            found[stats.layer_idx, "kept"] = stats.kv  # [B, Hkv]
        if stats.decode_steps:
            found[stats.layer_idx, "quest"] = torch.stack(stats.decode_steps, dim=1)  # [B, steps, Hsel]
    assert found, "no selection recorded"
    return found


def _check_compressed_cache(cache, method, setup, stats):
    """Each full-attention layer holds at most the budget per KV head (snapkv) / per layer (ada), plus the appended
    decode tokens, and stores far less than a dense cache."""
    lengths = setup.inputs["attention_mask"].sum(dim=1)
    appended = NEW_TOKENS - 1  # the last token is sampled, never fed back
    for layer in cache.layers:
        if not isinstance(layer, CompressedKVLayer):
            continue  # a sliding-window layer (gemma3) keeps transformers' own layer
        kept = layer.lens.long() - appended  # [B, Hkv] prompt tokens kept
        heads = kept.shape[1]
        for b, length in enumerate(lengths.tolist()):
            if method.name == "snapkv":
                assert kept[b].tolist() == [min(method.token_capacity, length)] * heads
            else:  # ada_snapkv shares token_capacity * Hkv over the heads of the layer
                assert int(kept[b].sum()) == min(method.token_capacity, length) * heads
            positions = layer.index[b]  # original positions of the kept tokens, ascending per head
            for h in range(heads):
                valid = positions[h, : kept[b, h]]
                assert bool((valid[1:] > valid[:-1]).all()) and int(valid.max()) < length
        assert layer.get_seq_length() == setup.inputs["input_ids"].shape[1] + appended  # logical length
    compression = stats["compression"]
    assert compression["cache_bytes"] < compression["dense_cache_bytes"]
    assert compression["memory_saved"] is True


@pytest.mark.parametrize("method", ["vertical_slash+quest", "block_sparse+snapkv", "flexprefill+ada_snapkv"])
def test_compositions(families, method):
    """A prefill method composed with a decode / compression method: full budget = sdpa, small budget = both parts
    act (prefill index sparsity and the decode-phase statistic)."""
    setup = families("llama")
    sparse_attn.configure(setup.model, method=method, **_params(method, "full"))
    _assert_same_generation(_generate(setup.model, setup.inputs), setup.reference)
    config = sparse_attn.configure(setup.model, method=method, **_params(method, "small"))
    out = _generate(setup.model, setup.inputs)
    stats = sparse_attn.get_stats(setup.model)
    assert stats["method"] == method and stats["prefill"]["sparsity"] > 0.05
    assert stats["sparsity"] == stats["prefill"]["sparsity"]  # compositions report their prefill part on top
    if config.decode.phase == "compression":
        assert stats["compression"]["sparsity"] > 0.3 and type(out.past_key_values) is sparse_attn.CompressedKVCache
    else:
        assert stats["decode"]["sparsity"] > 0.1 and type(out.past_key_values) is sparse_attn.QuestCache
