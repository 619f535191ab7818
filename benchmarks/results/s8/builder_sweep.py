"""Session 8: rows per program of the VS index builder (`BUILD_ROWS`, one lane per row, warps = rows / 32) on the
library's own 128K VerticalSlash / FlexPrefill selections (H200): do_bench median of the build (allocation
included) and a check that every launch gives the same canonical index.
Usage: python benchmarks/results/s8/builder_sweep.py"""
import os
import sys

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench_prefill import structured_qkv  # noqa: E402

import sparse_attn.kernels.vertical_slash.triton as vst  # noqa: E402
from sparse_attn.kernels.vertical_slash import canonical_index  # noqa: E402
from sparse_attn.methods.flexprefill import FlexPrefill  # noqa: E402
from sparse_attn.methods.vertical_slash import VerticalSlash  # noqa: E402

length = 131072
q, k, _ = structured_qkv(length)
cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
print(f"device={torch.cuda.get_device_name()} L={length} default BUILD_ROWS={vst.BUILD_ROWS}", flush=True)
for name, method in (("vertical_slash", VerticalSlash()), ("flexprefill", FlexPrefill())):
    sel = method.select(q, k, cu, backend="triton", seq_lens=[length])
    pattern = (sel.vertical_idx, sel.vertical_count, sel.slash_offsets, sel.slash_count)
    ref = canonical_index(*vst.triton_build_vertical_slash_index(cu, *pattern, max_len=length))
    for rows in (128, 64, 32, 16, 128, 64, 32):
        vst.BUILD_ROWS = rows
        got = canonical_index(*vst.triton_build_vertical_slash_index(cu, *pattern, max_len=length))
        same = all(torch.equal(a, b) for a, b in zip(got, ref))
        ms = do_bench(lambda: vst.triton_build_vertical_slash_index(cu, *pattern, max_len=length), warmup=25, rep=100)
        print(f"{name} BUILD_ROWS {rows}: {ms:.3f} ms (same {same})", flush=True)
