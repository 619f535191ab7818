"""The report on a hand-built results folder with known scores: statistics, tolerance table, length plots."""
import csv

from sparse_attn.cli.report import tolerable_compression, summarize, write_report
from sparse_attn.cli.store import RecordStore


def _job(method, ratio, length, params):
    ratio_tag = f"-{ratio}x" if ratio else ""
    return {"id": f"m-{method}{ratio_tag}-L{length}", "model": {"name": "m", "path": "/nonexistent/model"},
            "method": method, "label": method, "ratio": ratio, "length": length, "params": params}


def _fill(tmp_path, scores):
    """scores: {(method, ratio, length): [per-document scores]}."""
    store = RecordStore(tmp_path)
    for (method, ratio, length), values in scores.items():
        params = {} if method == "dense" else {"token_budget": length // ratio, "page_size": 16, "share_pages": True}
        job = _job(method, ratio, length, params)
        store.save_job(job)
        with store.writer(job["id"]) as writer:
            for doc_id, score in enumerate(values):
                writer.append({"job_id": job["id"], "task": "sf_ruler_niah", "group": "sf_ruler_niah",
                               "doc_id": doc_id, "score": score, "sparsity": 0.0 if ratio is None else 1 - 1 / ratio,
                               "output_tokens": 5, "input_tokens": length, "stats": {},
                               "provenance": {"device": "cpu", "git_commit": "abc", "versions": {"torch": "x"}}})
    return store


def test_statistics_tolerance_and_length_plots(tmp_path):
    n = 40
    _fill(tmp_path, {
        ("dense", None, 4096): [1.0] * n, ("quest", 2, 4096): [1.0] * n,
        ("quest", 8, 4096): [1.0] * 10 + [0.0] * 30,
        ("dense", None, 8192): [1.0] * n, ("quest", 2, 8192): [1.0] * 39 + [0.0],
        ("quest", 8, 8192): [1.0] * 34 + [0.0] * 6,
    })
    rows = {(r["length"], r["compression"]): r for r in summarize(tmp_path)}
    assert rows[(4096, 8)]["delta_vs_dense"] == -0.75 and rows[(4096, 8)]["retained"] is False
    assert rows[(4096, 2)]["retained"] is True and rows[(8192, 2)]["retained"] is True
    # 6 documents lost, none won: one-sided sign-flip p = 1/64 < 0.05 (4 lost would be 1/16: not significant)
    assert rows[(8192, 8)]["retained"] is False and rows[(8192, 8)]["p_worse"] < 0.03
    tolerance = {t["length"]: t["max_retained_compression"] for t in tolerable_compression(list(rows.values()))}
    assert tolerance == {4096: 2, 8192: 2}
    result = write_report(tmp_path)
    names = {p.name for p in result["files"]}
    assert {"m_lengths.png", "m_lengths.svg", "m_L4096_compression_sf_ruler_niah.png"} <= names
    assert "m_L4096_cost.png" not in names  # no model config to read: no cost columns, no cost plot
    table = list(csv.DictReader(open(tmp_path / "report" / "summary.csv")))
    assert {r["retained"] for r in table if r["method"] == "quest"} == {"True", "False"}
    markdown = (tmp_path / "report" / "summary.md").read_text()
    assert "0.25* (" in markdown and "| m | 4096 | sf_ruler_niah | quest | 2 | 2, 8 |" in markdown
