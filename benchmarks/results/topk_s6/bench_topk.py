"""stable_topk (torch.topk on int64 keys + sort, host sync) vs triton_stable_topk (radix select + compaction, no
sync) at the Vertical-Slash shape, and VerticalSlash().select before (reference top-k) vs after (Triton top-k) at
128K on bench_prefill's structured inputs, with the selections checked identical.

Prints one JSON line per measurement (do_bench medians, ms). Run from the repo root with PYTHONPATH=$PWD.
"""
import json
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))  # benchmarks/
from bench_prefill import structured_qkv  # noqa: E402

from sparse_attn import VerticalSlash  # noqa: E402
from sparse_attn.kernels.estimation import last_window_sums  # noqa: E402
from sparse_attn.kernels.estimation.topk import stable_topk  # noqa: E402
from sparse_attn.kernels.estimation.topk_triton import triton_stable_topk  # noqa: E402
from sparse_attn.methods import vertical_slash as vs_module  # noqa: E402
from sparse_attn.methods._prefill import select_vertical_slash  # noqa: E402

DEV = "cuda"
ROWS, K = 32, 512
FIELDS = ("vertical_idx", "vertical_count", "slash_offsets", "slash_count", "block_count", "block_offset",
          "column_count", "column_index")


def bench(fn):
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def topk_rows():
    for n in (131072, 65536, 32768):
        g = torch.Generator(device=DEV).manual_seed(n)
        scores = torch.rand(ROWS, n, device=DEV, generator=g) ** 8
        scores[:, :4] = float("inf")
        counts = torch.full((ROWS,), K, device=DEV, dtype=torch.long)
        row = {"what": "topk", "rows": ROWS, "n": n, "k": K}
        for descending in (False, True):
            tag = "desc" if descending else "asc"
            want = stable_topk(scores, counts, descending)
            got = triton_stable_topk(scores, counts, K, descending)
            row[f"equal_{tag}"] = bool(torch.equal(got, want))
            row[f"stable_{tag}_ms"] = round(bench(lambda: stable_topk(scores, counts, descending)), 4)
            row[f"triton_{tag}_ms"] = round(bench(lambda: triton_stable_topk(scores, counts, K, descending)), 4)
            row[f"speedup_{tag}"] = round(row[f"stable_{tag}_ms"] / row[f"triton_{tag}_ms"], 2)
        print(json.dumps(row), flush=True)


def select_rows(length=131072):
    q, k, _ = structured_qkv(length)
    cu = torch.tensor([0, length], device=DEV, dtype=torch.int32)
    method = VerticalSlash()

    def before():  # VerticalSlash.select with max_budget dropped: the reference top-k (host syncs), all else equal
        def without_budget(*args, **kwargs):
            kwargs.pop("max_budget", None)
            return select_vertical_slash(*args, **kwargs)

        vs_module.select_vertical_slash = without_budget
        try:
            return method.select(q, k, cu)
        finally:
            vs_module.select_vertical_slash = select_vertical_slash

    def after():
        return method.select(q, k, cu)

    a, b = before(), after()
    identical = all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)
    sums_ms = bench(lambda: last_window_sums(q, k, cu, method.approximation_size))
    before_ms, after_ms = bench(before), bench(after)
    print(json.dumps({"what": "VerticalSlash.select", "L": length, "identical": identical,
                      "window_sums_ms": round(sums_ms, 4), "before_ms": round(before_ms, 4),
                      "after_ms": round(after_ms, 4), "saved_ms": round(before_ms - after_ms, 4)}), flush=True)
    if not identical:
        raise SystemExit("selections differ: see the fields above")


if __name__ == "__main__":
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "triton": __import__("triton").__version__}), flush=True)
    topk_rows()
    select_rows()
