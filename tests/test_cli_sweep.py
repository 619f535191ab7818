"""End to end on the CPU: a sweep of 2 methods x 2 ratios x 2 tasks x 1 length on a tiny model, killed with
SIGKILL mid-way, resumed, reported; a further run does no new work."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from sparse_attn.cli import main, runner
from sparse_attn.cli.store import RecordStore
from sparse_attn.testing import build_tiny_model

TASKS = ["sf_ruler_niah", "sf_ruler_vt"]
CONFIGS = [("dense", None), ("block_sparse", 2.0), ("block_sparse", 4.0), ("quest", 2.0), ("quest", 4.0)]
SAMPLES = 2
EXPECTED = len(CONFIGS) * len(TASKS) * SAMPLES


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", family="llama"))


def _records(out):
    return list(RecordStore(out).all_records())


def _kill_mid_way(config, out, at_least=3, timeout=420):
    """Run the real command in its own process group and SIGKILL it once `at_least` samples are recorded."""
    proc = subprocess.Popen([sys.executable, "-m", "sparse_attn.cli", "sweep", str(config), "--no-progress",
                             "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "records").is_dir() and RecordStore(out).count() >= at_least:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode


def test_sweep_survives_sigkill_resumes_and_reports(model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "output": str(out), "models": [{"path": model_dir, "name": "tiny", "model_args": {"dtype": "float32"}}],
        "methods": [{"method": "block_sparse", "ratios": [2, 4]}, {"method": "quest", "ratios": [2, 4]}],
        "tasks": TASKS, "lengths": [2048], "samples": SAMPLES, "generation": {"max_gen_toks": 4}, "device": "cpu",
    }))

    # 1. killed mid-way: some finished records, not all
    code = _kill_mid_way(config, out)
    assert code == -signal.SIGKILL, "the sweep finished before it could be killed"
    before = _records(out)
    assert 3 <= len(before) < EXPECTED

    # 2. the rerun completes: nothing lost, nothing duplicated, earlier records untouched
    assert main(["sweep", str(config), "--no-progress"]) == 0
    records = _records(out)
    keys = [(r["job_id"], r["task"], r["doc_id"]) for r in records]
    assert len(keys) == EXPECTED == len(set(keys))
    by_key = {(r["job_id"], r["task"], r["doc_id"]): r for r in records}
    assert all(by_key[(r["job_id"], r["task"], r["doc_id"])] == r for r in before)
    assert {(r["method"], r["ratio"]) for r in records} == set(CONFIGS)
    assert {(r["task"], r["doc_id"]) for r in records} == {(t, i) for t in TASKS for i in range(SAMPLES)}

    # every record: prediction, score, achieved sparsity, output tokens and provenance
    for r in records:
        assert isinstance(r["prediction"], str) and 0.0 <= r["score"] <= 1.0
        assert isinstance(r["output_tokens"], int) and r["input_tokens"] > 0.9 * 2048
        assert r["provenance"]["versions"]["torch"] and r["provenance"]["versions"]["lm_eval"]
        assert r["provenance"]["git_commit"] and r["provenance"]["device"].startswith("cpu")
        assert r["config"]["model"]["path"] == model_dir and (r["method"] == "dense") == (not r["config"]["params"])
        # the method really acted: achieved sparsity follows the target ratio (dense: 0)
        target = 0.0 if r["ratio"] is None else 1 - 1 / r["ratio"]
        assert r["sparsity"] == pytest.approx(target, abs=0.06), r["job_id"]
    quest = [r for r in records if r["method"] == "quest"]
    assert all(r["stats"]["decode"]["steps"] >= 1 for r in quest)  # quest sparsity is measured per decode step

    # 3. report: markdown + CSV tables, PNG + SVG plots, dense baseline on every plot
    report = out / "report"
    rows = list(csv.DictReader(open(report / "summary.csv")))
    assert len(rows) == len(CONFIGS) * len(TASKS)
    assert {(r["method"], r["compression"]) for r in rows} == {
        ("dense", "1.0"), ("block_sparse", "2.0"), ("block_sparse", "4.0"), ("quest", "2.0"), ("quest", "4.0")}
    assert all(int(r["samples"]) == SAMPLES and r["prefill_flops"] and r["decode_bytes_per_token"] for r in rows)
    dense_flops = {float(r["prefill_flops"]) for r in rows if r["method"] == "dense"}
    sparse_flops = {float(r["prefill_flops"]) for r in rows if r["method"] == "block_sparse"}
    assert max(sparse_flops) < min(dense_flops)  # cost model sees the measured prefill sparsity
    markdown = (report / "summary.md").read_text()
    for method, ratio in (("dense", 1), ("block_sparse", 2), ("block_sparse", 4), ("quest", 2), ("quest", 4)):
        assert f"| {method} | {ratio}x |" in markdown
    assert all(task in markdown for task in TASKS)
    assert "## Tolerable compression" in markdown and f"- {EXPECTED} records: cpu" in markdown  # provenance
    import matplotlib.image

    stems = [f"tiny_L2048_compression_{t}" for t in TASKS] + ["tiny_L2048_compression_all_tasks", "tiny_L2048_cost"]
    for stem in stems:
        image = matplotlib.image.imread(report / f"{stem}.png")
        assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 0.01
        svg = (report / f"{stem}.svg").read_text()
        assert "dense" in svg and "quest" in svg  # legend entries (dense baseline on every plot)
        if "cost" not in stem:
            assert "block_sparse" in svg

    # 4. a further run does no new work: no task data built, no model loaded, no record added
    def forbidden(*args, **kwargs):
        raise AssertionError("a finished sweep did new work")

    monkeypatch.setattr(runner, "_build_tasks", forbidden)
    monkeypatch.setattr(runner.ModelCache, "get", forbidden)
    capsys.readouterr()
    assert main(["sweep", str(config), "--no-progress", "--no-report"]) == 0
    assert "recorded 0 new samples" in capsys.readouterr().out
    assert _records(out) == records


def test_parallel_workers_one_job_per_device_slot(model_dir, tmp_path):
    """`parallel: {gpus: 2}` runs jobs in two worker processes, each with its own CUDA_VISIBLE_DEVICES (the
    jobs run on the CPU here; on a GPU machine each worker sees one GPU)."""
    out = tmp_path / "out"
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "output": str(out), "models": [{"path": model_dir, "name": "tiny", "model_args": {"dtype": "float32"}}],
        "methods": [{"method": "quest", "ratios": [2]}], "tasks": ["sf_ruler_vt"], "lengths": [2048],
        "samples": 1, "generation": {"max_gen_toks": 2}, "device": "cpu", "parallel": {"gpus": 2},
    }))
    assert main(["sweep", str(config), "--no-progress", "--no-report"]) == 0
    records = _records(out)
    assert sorted(r["method"] for r in records) == ["dense", "quest"]
    assert {r["provenance"]["cuda_visible_devices"] for r in records} == {"0", "1"}
    assert len({r["provenance"]["pid"] for r in records}) == 2
    assert len(list((out / "logs").glob("*.log"))) == 2


def test_prompt_that_lm_eval_would_truncate_fails_the_job(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "output": str(out), "models": [{"path": model_dir, "model_args": {"dtype": "float32", "max_length": 2100}}],
        "methods": ["dense"], "tasks": ["sf_ruler_vt"], "lengths": [2048], "samples": 1, "device": "cpu",
    }))
    assert main(["sweep", str(config), "--no-progress", "--no-report"]) == 1  # the failed job is reported
    err = capsys.readouterr().err
    assert "prompts would be truncated" in err and "models[].model_args.max_length: 3072" in err
    assert _records(out) == []
