"""The append-only record store: durable lines, no duplicates, a killed writer's partial line is dropped."""
import json

from sparse_attn.cli.store import RecordStore


def _record(task, doc_id, **extra):
    return {"task": task, "doc_id": doc_id, "prediction": f"p{doc_id}", "score": 1.0, **extra}


def test_append_read_and_refuse_duplicates(tmp_path):
    store = RecordStore(tmp_path)
    with store.writer("job") as writer:
        assert writer.append(_record("a", 0)) and writer.append(_record("a", 1)) and writer.append(_record("b", 0))
        assert not writer.append(_record("a", 1, prediction="again"))
    with store.writer("job") as writer:  # a later run sees what is stored
        assert not writer.append(_record("b", 0))
        assert writer.append(_record("b", 1))
    assert store.done("job") == {("a", 0), ("a", 1), ("b", 0), ("b", 1)}
    assert [r["prediction"] for r in store.read("job")] == ["p0", "p1", "p0", "p1"]
    assert store.count() == 4


def test_partial_line_of_a_killed_writer_is_dropped_and_cut(tmp_path):
    store = RecordStore(tmp_path)
    with store.writer("job") as writer:
        writer.append(_record("a", 0))
    path = store.record_path("job")
    with open(path, "ab") as handle:  # what a SIGKILL in the middle of a write leaves
        handle.write(json.dumps(_record("a", 1))[:17].encode())
    assert store.done("job") == {("a", 0)}  # the half line is not a finished record
    with store.writer("job") as writer:
        assert writer.append(_record("a", 1))
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["task"] == "a" for line in lines)


def test_jobs_are_saved_atomically(tmp_path):
    store = RecordStore(tmp_path)
    store.save_job({"id": "j1", "method": "quest"})
    store.save_job({"id": "j1", "method": "quest", "length": 8})
    assert store.jobs() == [{"id": "j1", "method": "quest", "length": 8}]


def test_primary_score_and_phase_sparsity():
    from sparse_attn.cli.recording import primary_score
    from sparse_attn.cli.report import phase_sparsity

    # lm-eval RULER style: the metric keyed by the sample's length wins; -1 marks other lengths
    assert primary_score({"2048": 1.0, "4096": -1, "accuracy": 0.5}, 2048) == 1.0
    assert primary_score({"accuracy": 0.25, "4096": -1}, 2048) == 0.25
    assert primary_score({"note": "text"}, 2048) is None
    hf = {"sparsity": 0.8, "prefill": {"sparsity": 0.8}, "decode": {"sparsity": 0.7}, "compression": None}
    assert phase_sparsity(hf, "prefill") == 0.8 and phase_sparsity(hf, "decode") == 0.7
    assert phase_sparsity({"compression": {"sparsity": 0.6}}, "decode") == 0.6
    assert phase_sparsity({"decode_sparsity": 0.5}, "decode") == 0.5 and phase_sparsity({}, "prefill") is None


def test_paired_test_against_dense():
    from sparse_attn.cli.report import paired_test

    dense = [1.0] * 30
    worse = [1.0] * 10 + [0.0] * 20
    mean, low, high, p = paired_test(worse, dense)
    assert mean == -20 / 30 and low <= mean <= high < 0 and p < 0.001
    mean, low, high, p = paired_test(dense, dense)  # identical: nothing to reject
    assert mean == 0 and low == high == 0 and p == 1.0
    mixed = [1.0, 0.0] * 10
    _, low, high, p = paired_test(mixed, [0.0, 1.0] * 10)  # as many wins as losses
    assert low < 0 < high and p > 0.4
    assert paired_test([1.0], [0.0]) == (1.0, None, None, None)


def test_a_job_has_one_writer_at_a_time(tmp_path):
    import pytest

    from sparse_attn.cli.store import JobBusy

    store = RecordStore(tmp_path)
    with store.writer("job") as first:
        first.append(_record("a", 0))
        with pytest.raises(JobBusy, match="another process"):
            store.writer("job")  # a second sweep on the same folder would skip this job
    with store.writer("job") as again:  # released on close
        assert again.append(_record("a", 1))
