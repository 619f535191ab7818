"""Registration, configuration (configure / SPARSE_ATTN_CONFIG / model.config.sparse_attn), statistics, dtypes and
the errors for unsupported cases of the transformers integration."""
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer
from transformers.masking_utils import AttentionMaskInterface

import sparse_attn
from sparse_attn.config import ConfigError
from sparse_attn.integrations.transformers import ENV_VAR, register
from sparse_attn.integrations.transformers.layout import padding_mask
from sparse_attn.testing import build_tiny_model, random_prompts
from tests.method_matrix import METHODS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("tiny-llama-api"), family="llama")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    inputs = tokenizer(random_prompts(tokenizer, [150, 223], seed=2), return_tensors="pt", padding=True)
    return path, tokenizer, inputs


def _load(path, name, **kwargs):
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=name, dtype=torch.float32, **kwargs).eval()


def test_every_composition_name_is_registered_and_accepted(tiny):
    path, _, _ = tiny
    model = _load(path, "vertical_slash+quest")  # from_pretrained validation accepts a composition name
    assert model.config._attn_implementation == "vertical_slash+quest"
    for name in sparse_attn.composition_names():
        assert name in AttentionInterface._global_mapping
        assert AttentionMaskInterface._global_mapping[name] is padding_mask  # else transformers drops the padding
        model.set_attn_implementation(name)
        assert model.config._attn_implementation == name
        assert sparse_attn.method_config(model).name == name
    before = dict(AttentionInterface._global_mapping)
    register()  # idempotent
    assert dict(AttentionInterface._global_mapping) == before


def test_autoload_registers_without_importing_sparse_attn():
    """`lm_eval --model hf --model_args attn_implementation=...` never imports us: the .pth hook must register."""
    code = ("import sys, transformers.modeling_utils\n"
            "from transformers import AttentionInterface\n"
            "assert 'flexprefill' in AttentionInterface._global_mapping\n"
            "assert 'vertical_slash+quest' in AttentionInterface._global_mapping\n")
    env = {**os.environ, "SPARSE_ATTN_AUTOLOAD": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "autoload" not in result.stderr, result.stderr[-2000:]


def test_configure_validates_and_persists(tiny, tmp_path):
    path, _, inputs = tiny
    model = _load(path, "block_sparse")
    with pytest.raises(ConfigError, match="unknown"):
        sparse_attn.configure(model, alpha=0.5)  # a flexprefill parameter
    with pytest.raises(ConfigError):
        sparse_attn.configure(model, chunk_size=12)  # not a power of two
    config = sparse_attn.configure(model, **METHODS["block_sparse"]["small"])
    assert config.prefill.top_chunks == 3 and model.config.sparse_attn == METHODS["block_sparse"]["small"]
    sparse_attn.configure(model, top_chunks=4)  # later calls update, earlier values stay
    assert sparse_attn.method_config(model).prefill.chunk_size == 16
    assert sparse_attn.method_config(model).prefill.top_chunks == 4

    model.save_pretrained(tmp_path)  # model.config.sparse_attn is saved with the model
    reloaded = _load(tmp_path, "block_sparse")
    assert sparse_attn.method_config(reloaded).prefill.top_chunks == 4

    composed = sparse_attn.configure(model, method="vertical_slash+quest", vertical_size=64, token_budget=32)
    assert model.config._attn_implementation == "vertical_slash+quest"
    assert (composed.prefill.vertical_size, composed.decode.token_budget) == (64, 32)
    with pytest.raises(ConfigError, match="unknown"):
        sparse_attn.configure(model, method="not_a_method")
    sdpa_model = _load(path, "sdpa")
    with pytest.raises(ConfigError, match="not a sparse_attn method"):
        sparse_attn.configure(sdpa_model, alpha=0.5)
    with pytest.raises(RuntimeError, match="no sparse_attn forward"):
        sparse_attn.get_stats(sdpa_model)


def test_environment_variable_sets_parameters(tiny, tmp_path, monkeypatch):
    """The string-only route for CLIs: SPARSE_ATTN_CONFIG holds JSON (or a JSON file path)."""
    path, _, inputs = tiny
    model = _load(path, "block_sparse")
    monkeypatch.setenv(ENV_VAR, json.dumps({"method": "block_sparse", **METHODS["block_sparse"]["small"]}))
    assert sparse_attn.method_config(model).prefill.top_chunks == 3
    with torch.no_grad():
        model(**inputs)
    assert sparse_attn.get_stats(model)["sparsity"] > 0.1  # a plain forward (lm-eval loglikelihood) is sparse too

    config_file = tmp_path / "sparse.json"
    config_file.write_text(json.dumps({"top_chunks": 512, "chunk_size": 16}))
    monkeypatch.setenv(ENV_VAR, str(config_file))
    with torch.no_grad():
        model(**inputs)
    assert sparse_attn.get_stats(model)["sparsity"] == 0.0

    monkeypatch.setenv(ENV_VAR, json.dumps({"method": "flexprefill"}))
    with pytest.raises(ConfigError, match="attn_implementation='flexprefill'"):
        with torch.no_grad():
            model(**inputs)
    monkeypatch.setenv(ENV_VAR, "{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        sparse_attn.method_config(model)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_generate(tiny, dtype):
    path, _, inputs = tiny
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="flexprefill", dtype=dtype).eval()
    sparse_attn.configure(model, **METHODS["flexprefill"]["small"])
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert all(torch.isfinite(logits).all() for logits in out.logits)
    assert sparse_attn.get_stats(model)["prefill"]["sparsity"] > 0.0
    sparse_attn.configure(model, method="ada_snapkv", **METHODS["ada_snapkv"]["small"])
    out = model.generate(**inputs, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    assert out.past_key_values.layers[0].keys.dtype == dtype
    assert sparse_attn.get_stats(model)["compression"]["memory_saved"]


def test_unsupported_cases_raise(tiny, tmp_path):
    path, _, inputs = tiny
    model = _load(path, "flexprefill")
    with pytest.raises(NotImplementedError, match="output_attentions"):
        with torch.no_grad():
            model(**inputs, output_attentions=True)

    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.1
    model.train()
    with pytest.raises(NotImplementedError, match="model.eval"):
        model(**inputs)

    # A model whose every layer is sliding-window would never run the method.
    sliding = build_tiny_model(tmp_path / "mistral-sliding", family="mistral")
    mistral = AutoModelForCausalLM.from_pretrained(sliding, attn_implementation="quest", sliding_window=32).eval()
    with pytest.raises(NotImplementedError, match="sliding window"):
        with torch.no_grad():
            mistral(**inputs)


def test_plain_forward_of_a_kv_method_is_dense_and_says_so(tiny):
    """lm-eval's loglikelihood runs model(...) without generate: snapkv's prompt attention is dense by definition."""
    path, _, inputs = tiny
    model = _load(path, "snapkv")
    reference = _load(path, "sdpa")
    with torch.no_grad():
        logits = model(**inputs).logits
        expected = reference(**inputs).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(logits[real], expected[real], rtol=1e-4, atol=1e-4)
    stats = sparse_attn.get_stats(model)
    assert stats["compression"] is None and any("nothing compressed" in note for note in stats["notes"])
