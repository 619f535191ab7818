"""The paper's cost model (performance-anchors.md section 7): formulas, shares it reports, per-method costs."""
import pytest

from sparse_attn import ConfigError
from sparse_attn.cost import (
    PAPER_MODELS, ModelShape, attention_share, decode_bytes, kv_elements, method_cost, prefill_flops,
    quest_indexing_elements, vertical_slash_indexing_flops, weights_elements,
)

TINY = ModelShape(hidden=8, heads=2, head_dim=4, kv_heads=1, layers=3, mlp=16, vocab=10)


def test_prefill_flops_by_hand():
    L, s = 5, TINY
    parts = prefill_flops(s, L, density=0.5, batch=2)
    assert parts["embedding"] == 2 * (2 * L * 8)
    assert parts["attention_projections"] == 2 * 3 * 2 * L * 8 * (8 + 2 * 4 * 1 + 8)
    assert parts["attention_scores"] == 2 * 3 * 0.5 * (2 * 2 * L * L * 4 + 3 * 2 * L * L + 2 * 2 * L * L * 4)
    assert parts["mlp"] == 2 * 3 * (6 * L * 8 * 16 + 2 * L * 16)
    assert parts["logits"] == 2 * 2 * L * 8 * 10
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")


def test_decode_and_indexing_by_hand():
    assert weights_elements(TINY) == 3 * (4 * 64 + 3 * 8 * 16) + 8 * 10 + 8
    assert kv_elements(TINY, 100, 0.25) == 3 * 2 * 100 * 4 * 1 * 0.25
    out = decode_bytes(TINY, 100, 0.25, batch=4, bytes_per_element=2)
    assert out["kv"] == 4 * 2 * kv_elements(TINY, 100, 0.25) and out["total"] == out["kv"] + out["weights"]
    assert quest_indexing_elements(TINY, 160, page_size=16, batch=2) == 2 * 3 * 1 * 2 * 4 * 160 / 16
    assert vertical_slash_indexing_flops(TINY, 128, 16, 8, 64) == pytest.approx(
        3 * 2 * (2 * 4 * 128 * 16 + 3 * 128 * 16 + 2 * 128 * 16 + 2 * 128 * 7 + 2 * (8 + 64)))


def test_attention_share_matches_the_paper():
    # paper: attention is 40% of prefill FLOPs at 16K, 68% at 64K, 80% at 128K (average over Qwen2.5 7B-72B)
    for length, expected in ((16384, 0.40), (65536, 0.68), (131072, 0.80)):
        mean = sum(attention_share(m, length) for m in PAPER_MODELS.values()) / len(PAPER_MODELS)
        assert mean == pytest.approx(expected, abs=0.01)


def test_kv_share_of_decode_bytes_matches_the_paper():
    # paper: KV is 35-80% of decode bytes at B=8 (16K-128K) and 80-97% at B=64
    m = PAPER_MODELS["qwen2.5-7b"]
    share = {(b, L): decode_bytes(m, L, 1.0, b)["kv"] / decode_bytes(m, L, 1.0, b)["total"]
             for b in (8, 64) for L in (16384, 131072)}
    assert share[8, 16384] == pytest.approx(0.33, abs=0.03) and share[8, 131072] == pytest.approx(0.80, abs=0.02)
    assert share[64, 16384] == pytest.approx(0.80, abs=0.02) and share[64, 131072] == pytest.approx(0.97, abs=0.01)


def test_method_cost_uses_budgets_and_measured_densities():
    m = PAPER_MODELS["qwen2.5-7b"]
    dense = method_cost("dense", m, 16384, output_tokens=10)
    quest = method_cost({"method": "quest", "token_budget": 1632}, m, 16384, output_tokens=10)
    assert quest["prefill_flops"] == dense["prefill_flops"]
    assert quest["decode_density"] == pytest.approx((1632 + 16) / 16384)
    assert 0 < quest["indexing_bytes"] < 0.1 * (dense["decode_bytes_per_token"] - quest["decode_bytes_per_token"])
    block = method_cost({"method": "block_sparse", "top_chunks": 53}, m, 16384, output_tokens=10)
    assert block["prefill_density"] == pytest.approx(1 / 10, rel=0.01)
    assert block["prefill_flops"] < dense["prefill_flops"] and block["decode_bytes"] == dense["decode_bytes"]
    with pytest.raises(ConfigError, match="measured prefill_density"):
        method_cost("vertical_slash", m, 16384)
    vs = method_cost("vertical_slash+quest", m, 16384, prefill_density=0.1)
    assert vs["indexing_flops"] > 0 and vs["prefill_density"] == 0.1
    with pytest.raises(ConfigError, match="density must be in"):
        prefill_flops(m, 100, density=1.5)


def test_model_shape_from_hf_config():
    from sparse_attn.testing import tiny_config

    shape = ModelShape.from_hf_config(tiny_config("qwen2"))
    assert shape == ModelShape(hidden=128, heads=4, head_dim=32, kv_heads=2, layers=2, mlp=256, vocab=1024)
    with pytest.raises(ConfigError, match="hidden_size"):
        ModelShape.from_hf_config({"num_attention_heads": 2})
