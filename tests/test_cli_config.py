"""Bad sweep files fail before any model loads, with a message naming the field; good ones expand into jobs."""
import pytest
import yaml

from sparse_attn.cli import main
from sparse_attn.cli import runner
from sparse_attn.cli.spec import SweepConfigError, build_sweep, load_sweep
from sparse_attn.testing import build_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", family="llama"))


def _config(model_dir, tmp_path, **changes):
    raw = {"output": str(tmp_path / "out"), "models": [model_dir], "tasks": ["sf_ruler_niah", "sf_ruler_vt"],
           "lengths": [2048], "samples": 2,
           "methods": [{"method": "block_sparse", "ratios": [2, 4]}, {"method": "quest", "ratios": [2, 4]}]}
    raw.update(changes)
    return raw


def test_good_config_expands_into_jobs(model_dir, tmp_path):
    sweep = build_sweep(_config(model_dir, tmp_path))
    # dense baseline added first, then 2 methods x 2 ratios at one length; budgets from the ratio helpers
    assert [(j.method, j.ratio) for j in sweep.jobs] == [
        ("dense", None), ("block_sparse", 2.0), ("block_sparse", 4.0), ("quest", 2.0), ("quest", 4.0)]
    assert sweep.jobs[2].params == {"chunk_size": 16, "top_chunks": 17}
    assert sweep.jobs[4].params == {"token_budget": 512, "page_size": 16, "share_pages": True}
    assert len({j.id for j in sweep.jobs}) == 5
    assert all(j.tasks == ["sf_ruler_niah", "sf_ruler_vt"] for j in sweep.jobs)


def test_job_ids_are_stable_and_depend_on_what_changes_results(model_dir, tmp_path):
    a = build_sweep(_config(model_dir, tmp_path), check_tasks=False).jobs
    b = build_sweep(_config(model_dir, tmp_path, samples=50, tasks=["sf_ruler_cwe"]), check_tasks=False).jobs
    c = build_sweep(_config(model_dir, tmp_path, seed=1), check_tasks=False).jobs
    assert [j.id for j in a] == [j.id for j in b]  # more samples or other tasks only add records
    assert not {j.id for j in a} & {j.id for j in c}


@pytest.mark.parametrize("changes,field,message", [
    ({"methods": [{"method": "bogus_sparse"}]}, "methods[0].method", "unknown method 'bogus_sparse'"),
    ({"methods": [{"method": "quest", "params": {"tokens": 3}}]}, "methods[0].params", "'tokens' is unknown"),
    ({"methods": [{"method": "quest", "ratios": [2, 400]}]}, "methods[0].ratios[1]", "less than one page"),
    ({"methods": [{"method": "snapkv", "ratios": [20]}]}, "methods[0].ratios[0]", "local_window"),
    ({"methods": [{"method": "quest", "params": {"token_budget": 4096}}]}, "methods[0]", "keeps every token"),
    ({"methods": [{"method": "quest", "ratio": [2]}]}, "methods[0].ratio", "unknown field"),
    ({"methods": [{"method": "vertical_slash", "params": {"vertical_size": 2048, "slash_size": 4096}}]},
     "methods[0]", "would be dense"),
    ({"methods": [{"method": "flexprefill", "grid": {"min_budget": [256, 2048]}}]}, "methods[0]", "min_budget"),
    ({"tasks": ["sf_ruler_niah", "sf_no_such_task"]}, "tasks[1]", "unknown lm-eval task 'sf_no_such_task'"),
    ({"models": ["/nonexistent/model-dir"]}, "models[0].path", "does not exist"),
    ({"lengths": [2048, 0]}, "lengths[1]", "at least 1"),
    ({"backend": "tgi"}, "backend", "not one of"),
    ({"samples": "many"}, "samples", "integer"),
    ({"epochs": 3}, "epochs", "unknown field"),
])
def test_bad_config_fails_before_any_model_loads(model_dir, tmp_path, monkeypatch, capsys, changes, field, message):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for an invalid sweep")

    monkeypatch.setattr(runner.ModelCache, "get", no_model)
    monkeypatch.setattr(runner, "run_sweep", no_model)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_config(model_dir, tmp_path, **changes)))
    with pytest.raises(SweepConfigError) as error:
        load_sweep(path)
    assert error.value.field == field and message in str(error.value)
    # the command prints one line naming the field and exits with 2
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{field}:" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_required_field(model_dir, tmp_path):
    raw = _config(model_dir, tmp_path)
    del raw["tasks"]
    with pytest.raises(SweepConfigError, match="tasks: is required"):
        build_sweep(raw)


def test_dry_run_lists_jobs(model_dir, tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_config(model_dir, tmp_path, methods=[{"method": "quest", "ratios": "paper"}],
                                           lengths=[16384])))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "11 jobs x 2 tasks x 2 samples" in out and '"token_budget": 816' in out  # the paper's 20x at 16K
    assert not (tmp_path / "out").exists()


def test_eval_is_a_one_job_sweep_per_ratio_and_length(model_dir, tmp_path, capsys):
    args = ["eval", "--model", model_dir, "--method", "vertical_slash+quest", "--ratio", "10", "--ratio", "5",
            "--param", "page_size=32", "--tasks", "sf_ruler_niah", "--lengths", "16384,32768",
            "--output", str(tmp_path / "out"), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 jobs x 1 tasks x 100 samples" in out and "dense" not in out  # no baseline for eval
    assert '"page_size": 32' in out and '"vertical_size": 315' in out and '"token_budget": 1632' in out
    assert main(args[:-1] + ["--param", "bogus=1", "--dry-run"]) == 2
    assert "methods[0].params" in capsys.readouterr().err


def test_ratio_and_methods_commands(capsys):
    assert main(["ratio", "block_sparse", "20", "16384"]) == 0
    assert '"top_chunks": 26' in capsys.readouterr().out
    assert main(["ratio", "quest", "0.5", "16384"]) == 2
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("vertical_slash", "flexprefill", "ada_snapkv", "quest"))


def test_cost_command(model_dir, capsys):
    import json

    assert main(["cost", "--model", "qwen2.5-7b", "--method", "block_sparse", "--ratio", "5", "--length",
                 "65536"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"]["top_chunks"] == 432 and out["prefill_density"] == pytest.approx(0.2, abs=0.001)
    assert 1.9 < out["prefill_speedup"] < 2.3 and out["decode_speedup"] == 1.0  # paper: ~2.2x at 64K, 5x
    assert main(["cost", "--model", model_dir, "--method", "vertical_slash", "--length", "4096"]) == 2
    assert "prefill_density" in capsys.readouterr().err
    assert main(["cost", "--model", model_dir, "--method", "vertical_slash", "--length", "4096",
                 "--prefill-density", "0.1"]) == 0
    assert json.loads(capsys.readouterr().out)["indexing_flops"] > 0
