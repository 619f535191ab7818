"""One launch of each kernel to profile under ncu (run from benchmarks/): block_sparse TMA at 32K p=0.1 (chunk 128),
then the VS select at 128K (statistics, skew_gather sums, top-k, index)."""
import sys
import torch
from bench_prefill import random_qkv, random_block_index, structured_qkv, triton_block_sparse_attention
from sparse_attn.methods.vertical_slash import VerticalSlash

what = sys.argv[1]
if what == "block":
    length = 32768
    cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
    q, k, v = random_qkv(length)
    index, count, _ = random_block_index(length, 128, 0.1)
    for _ in range(2):
        triton_block_sparse_attention(q, k, v, cu, index, count, 128)
else:
    length = 131072
    cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
    q, k, _ = structured_qkv(length)
    for _ in range(2):
        VerticalSlash().select(q, k, cu, backend="triton")
torch.cuda.synchronize()
