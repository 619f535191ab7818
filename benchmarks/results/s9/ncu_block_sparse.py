"""block_sparse at 128K (chunk 128, random index of bench_prefill.py), p = 0.035 then p = 0.1, two calls each (the
first compiles), for Nsight Compute: why rows of ~19 blocks run at 442 TFLOP/s and rows of ~53 at 499.
Usage: ncu --kernel-name regex:_block_sparse_fwd_tma --launch-skip 1 --launch-count 3 [sections] \
           python benchmarks/results/s9/ncu_block_sparse.py   (profiles p=0.035 call 2, p=0.1 calls 1-2)"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from bench_prefill import random_block_index, random_qkv  # noqa: E402

from sparse_attn.kernels.block_sparse.triton import triton_block_sparse_attention  # noqa: E402

length = 131072
q, k, v = random_qkv(length)
cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
for p in (0.035, 0.1):
    index, count, _ = random_block_index(length, 128, p)
    for _ in range(2):
        triton_block_sparse_attention(q, k, v, cu, index, count, 128, max_seqlen=length)
    torch.cuda.synchronize()
    print(f"p={p} done", flush=True)
