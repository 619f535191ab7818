"""lm-eval front-end: discovery with no flags, the real `lm_eval` CLI end to end on a tiny local model with a
sparse attention method, and the pre-built dataset (scripts/build_dataset.py) giving the same prompts as generating.
"""
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_tasks_generation import QUALITY_FILE, TOEFL_FILE, write_squad_fixture

REPO = Path(__file__).resolve().parents[1]
ALL_TASKS = ["ruler_niah", "ruler_vt", "ruler_cwe", "qa_squad", "qa_toefl", "qa_quality", "story_retrieval",
             "story_multihop", "story_filtering"]
LENGTH = 8192  # QuALITY passages need ~6.5K tokens with the 1K-vocabulary test tokenizer
# A sparse method registered by sparse_attn.integrations.transformers, with its default budget. Quest (sparse
# decoding: 1024 of the 8K cached tokens per step) keeps the CPU run short; vertical_slash's CPU reference prefill
# takes ~30 s per 8K batch of 2 (measured), too slow for the CI share. Override with SPARSE_ATTN_LM_EVAL_TEST_ATTN.
ATTN_IMPLEMENTATION = os.environ.get("SPARSE_ATTN_LM_EVAL_TEST_ATTN", "quest")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from sparse_attn.testing import build_tiny_model

    root = tmp_path_factory.mktemp("lm_eval")
    model = build_tiny_model(root / "tiny-llama", family="llama")
    env = {**os.environ, "SPARSE_ATTN_SQUAD_PATH": write_squad_fixture(root / "squad.json"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("TRITON_INTERPRET", None)
    tasks = list(ALL_TASKS)
    if TOEFL_FILE.exists():
        env["SPARSE_ATTN_TOEFLQA_PATH"], env["SPARSE_ATTN_QUALITY_PATH"] = str(TOEFL_FILE), str(QUALITY_FILE)
    else:  # a clone without ../shared: the two tasks on real data are left out (see test below)
        tasks = [t for t in tasks if t not in ("qa_toefl", "qa_quality")]
    return {"root": root, "model": str(model), "env": env, "tasks": tasks}


def run_lm_eval(workspace, tasks, out, metadata, attn=ATTN_IMPLEMENTATION):
    # no --include_path: the sf_* tasks are found through the autoload hook, as after a normal install
    command = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
               f"pretrained={workspace['model']},attn_implementation={attn},dtype=float32",
               "--tasks", ",".join(f"sf_{t}" for t in tasks), "--limit", "2", "--device", "cpu",
               "--batch_size", "2", "--gen_kwargs", "max_gen_toks=8", "--metadata", json.dumps(metadata),
               "--output_path", str(out), "--log_samples"]
    result = subprocess.run(command, capture_output=True, text=True, env=workspace["env"], timeout=900,
                            cwd=workspace["root"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    results = json.loads(Path(glob.glob(f"{out}/**/results_*.json", recursive=True)[0]).read_text())
    samples = {}
    for task in tasks:
        path = glob.glob(f"{out}/**/samples_sf_{task}_*.jsonl", recursive=True)[0]
        samples[task] = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return results, samples


def test_register_tasks_patches_task_manager_once():
    """Indexing itself is proven by the CLI run below, which passes no --include_path (building a TaskManager
    here would index all of lm-eval's tasks once more: ~25 s)."""
    from lm_eval.tasks import TaskManager

    from sparse_attn.integrations.lm_eval import TASK_NAMES, TASKS_DIR, register_tasks, tasks_dir

    register_tasks()  # the autoload hook already did this when lm_eval.tasks was imported; again is a no-op
    patched = TaskManager.__init__
    register_tasks()
    assert TaskManager.__init__ is patched and patched._sparse_attn
    assert {f"{name}.yaml" for name in TASK_NAMES} | {"sparse_frontier.yaml"} == \
        {p.name for p in TASKS_DIR.glob("*.yaml")}
    assert subprocess.run([sys.executable, "-m", "sparse_attn.integrations.lm_eval"], capture_output=True,
                          text=True, check=True).stdout.strip() == tasks_dir()


def test_real_qa_files_present():
    """The real TOEFL / QuALITY files the CLI run below uses load through our QA source reader."""
    if not TOEFL_FILE.exists():
        pytest.skip(f"{TOEFL_FILE} absent: sf_qa_toefl and sf_qa_quality were left out of the CLI run; CI has it")
    from sparse_attn.tasks.qa_sources import load_qa_source

    toefl = load_qa_source("toeflqa", str(TOEFL_FILE))
    assert toefl.is_mcq and (len(toefl.contexts), len(toefl.questions)) == (198, 962)  # reference-system 3.4
    quality = load_qa_source("quality", str(QUALITY_FILE))
    assert quality.is_mcq and len(quality.contexts) == 15 and quality.questions


@pytest.mark.slow
def test_lm_eval_cli_all_tasks_with_sparse_attention_then_from_prebuilt_dataset(workspace):
    from transformers import AttentionInterface

    import sparse_attn.integrations.transformers  # noqa: F401  (registers the methods, as the autoload hook does)

    assert ATTN_IMPLEMENTATION in AttentionInterface._global_mapping
    if ATTN_IMPLEMENTATION == "quest":  # the method must really select: its budget is below the context
        import sparse_attn

        assert sparse_attn.build_method("quest").token_budget < LENGTH // 2
    tasks = workspace["tasks"]
    metadata = {"max_seq_lengths": [LENGTH], "num_samples": 2, "num_queries": 8}
    results, samples = run_lm_eval(workspace, tasks, workspace["root"] / "generated", metadata)
    assert results["config"]["model_args"]["attn_implementation"] == ATTN_IMPLEMENTATION
    from sparse_attn.tasks import get_task_class

    for task in tasks:
        metrics = results["results"][f"sf_{task}"]
        metric = get_task_class(task).metric
        for key in (str(LENGTH), metric, "output_tokens"):
            assert isinstance(metrics[f"{key},none"], float), (task, key, metrics)
            assert f"{key}_stderr,none" in metrics
        assert 0.0 <= metrics[f"{metric},none"] <= 1.0 and metrics["output_tokens,none"] > 0
        assert len(samples[task]) == 2
        for record in samples[task]:  # what the sweep tool needs: prediction, score, output length, sizes
            assert isinstance(record["resps"][0][0], str)
            assert record[str(LENGTH)] == record[metric] and record["output_tokens"] > 0
            assert 0.95 * LENGTH <= record["doc"]["length"] <= LENGTH
            assert record["arguments"]["gen_args_0"]["arg_0"] == record["doc"]["input"]

    # the same prompts from the pre-built dataset (local folder, loaded offline by datasets)
    subset = ["ruler_vt", "story_filtering"]
    folder = workspace["root"] / "dataset"
    build = subprocess.run([sys.executable, str(REPO / "scripts" / "build_dataset.py"), "--tokenizer",
                            workspace["model"], "--out", str(folder), "--tasks", *subset, "--lengths", str(LENGTH),
                            "--num-samples", "3"], capture_output=True, text=True, env=workspace["env"], timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    import datasets

    assert sorted(datasets.get_dataset_config_names(str(folder))) == [f"{t}-{LENGTH}" for t in subset]
    loaded = datasets.load_dataset(str(folder), f"ruler_vt-{LENGTH}", split="test")
    assert len(loaded) == 3 and "ruler_vt" in (folder / "README.md").read_text()
    _, from_data = run_lm_eval(workspace, subset, workspace["root"] / "prebuilt",
                               {"max_seq_lengths": [LENGTH], "data": str(folder)})
    for task in subset:
        assert [r["arguments"] for r in from_data[task]] == [r["arguments"] for r in samples[task]]
        assert [r["doc"]["sample"] for r in from_data[task]] == [r["doc"]["sample"] for r in samples[task]]
