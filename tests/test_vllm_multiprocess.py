"""The plugin reaches vLLM's worker process in the default multi-process mode (no in-process shortcut).

A child Python runs `vllm.LLM` with default settings (engine core + worker in separate processes): the only way
our backend can run there is the `vllm.general_plugins` entry point. Its statistics files, written by the worker,
carry the worker's pid (not the driver's) and a Quest decode sparsity > 0; `get_stats(llm)` in the driver reads
them back (collective_rpc cannot ship a function to another process without VLLM_ALLOW_INSECURE_SERIALIZATION),
and `reset_stats(llm)` works there too (the driver subtracts the readings at reset time).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

pytest.importorskip("vllm")

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from vllm import LLM, SamplingParams
    from sparse_attn.integrations.vllm import engine_kwargs, get_stats, reset_stats
    from sparse_attn.testing import build_tiny_model

    if __name__ == "__main__":
        path, stats_dir = sys.argv[1], sys.argv[2]
        build_tiny_model(path, family="qwen2")
        llm = LLM(path, dtype="float32", max_model_len=512, enforce_eager=True, seed=0,
                  **engine_kwargs("quest", token_budget=32, page_size=16, stats_dir=stats_dir))
        reset_stats(llm)  # no collective_rpc to another process: the driver subtracts the files' current readings
        prompt = {"prompt_token_ids": list(range(5, 305))}
        out = llm.generate([prompt], SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True))
        stats = get_stats(llm)
        print("RESULT " + json.dumps({"driver_pid": os.getpid(), "tokens": len(out[0].outputs[0].token_ids),
                                      "stats": stats}))
""")


@pytest.mark.slow
def test_plugin_runs_in_worker_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    # ZMQ ipc socket paths must stay under 107 characters: pytest's tmp_path (longer still under xdist) is too deep
    rpc_dir = tempfile.mkdtemp(prefix="sa-rpc-", dir="/tmp")
    env.update(VLLM_CPU_KVCACHE_SPACE="1", VLLM_RPC_BASE_PATH=rpc_dir)
    env.pop("VLLM_ALLOW_INSECURE_SERIALIZATION", None)
    stats_dir = tmp_path / "stats"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "model"), str(stats_dir)], env=env,
                          capture_output=True, text=True, timeout=300)
    shutil.rmtree(rpc_dir, ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["tokens"] == 48
    files = list(stats_dir.glob("stats-rank0-pid*.json"))
    assert len(files) == 1
    worker = json.loads(files[0].read_text())
    assert worker["pid"] != result["driver_pid"]  # written by another process: the worker
    assert worker["method"] == "quest"
    stats = result["stats"]
    assert stats["method"] == "quest" and stats["processes"][0]["pid"] == worker["pid"]
    assert stats["decode"]["sparsity"] > 0.5  # 300-token prompt, 32-token budget + current page
    assert stats["counts"]["decode"] == 2 * 47  # layers x decode steps of this generate call only
