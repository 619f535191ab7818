"""`lm_eval --model vllm` runs sf_ruler_niah end to end with `additional_config` choosing the method.

Nothing but CLI arguments: the `vllm.general_plugins` entry point installs the backend, the JSON `--model_args`
carry `additional_config`, and the worker's statistics file shows Quest acted on every layer.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")
pytest.importorskip("lm_eval")


@pytest.mark.slow
def test_lm_eval_vllm_sf_ruler_niah_with_quest(tmp_path):
    from sparse_attn.testing import build_tiny_model

    model = tmp_path / "tiny-llama"
    build_tiny_model(model, family="llama")
    stats_dir = tmp_path / "stats"
    model_args = {
        "pretrained": str(model), "dtype": "float32", "max_model_len": 2100, "enforce_eager": True,
        "additional_config": {"sparse_attn": {"method": "quest", "token_budget": 64, "stats_dir": str(stats_dir)}},
    }
    command = [
        sys.executable, "-m", "lm_eval", "--model", "vllm", "--model_args", json.dumps(model_args),
        "--tasks", "sf_ruler_niah", "--metadata", json.dumps({"max_seq_lengths": [2048], "num_samples": 2,
                                                              "num_queries": 1}),
        "--gen_kwargs", "max_gen_toks=8", "--limit", "2", "--output_path", str(tmp_path / "out"),
    ]
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_CPU_KVCACHE_SPACE="1")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    results = list((tmp_path / "out").rglob("results_*.json"))
    assert len(results) == 1
    payload = json.loads(results[0].read_text())
    metrics = payload["results"]["sf_ruler_niah"]
    assert "2048,none" in metrics and metrics["output_tokens,none"] > 0
    assert payload["config"]["model_args"]["additional_config"]["sparse_attn"]["method"] == "quest"

    from sparse_attn.integrations.vllm import get_stats

    stats = get_stats(stats_dir=str(stats_dir))
    assert stats["method"] == "quest"
    assert len(stats["per_layer"]) == 2 and stats["decode"]["sparsity"] > 0.5  # ~2048-token prompts, 64-token budget
    assert stats["counts"]["decode"] == 2 * 2 * 7  # layers x requests x (8 new tokens - 1)
