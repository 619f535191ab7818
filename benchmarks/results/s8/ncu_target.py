"""One VerticalSlash select at 128K (structured inputs) for Nsight Compute: run under `ncu --kernel-name ...`.
Usage: ncu [sections] python benchmarks/results/s8/ncu_target.py"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench_prefill import structured_qkv  # noqa: E402

from sparse_attn.methods.vertical_slash import VerticalSlash  # noqa: E402

length = 131072
q, k, _ = structured_qkv(length)
cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
VerticalSlash().select(q, k, cu, backend="triton", seq_lens=[length])
torch.cuda.synchronize()
print("done", flush=True)
