"""Session 10: first contact of the Gluon kernel with the GPU: tiny varlen inputs, each launch variant once, compared
with the TMA kernel (rel-RMSE, NaN-poisoned output). Run under `timeout`: a synchronisation bug shows as a hang."""
import sys
import time

import torch

from sparse_attn.kernels.block_sparse.triton import triton_block_sparse_attention

torch.manual_seed(0)
lens = [1024 + 77, 512 + 5]
n = sum(lens)
q = torch.randn(n, 32, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(n, 8, 128, device="cuda", dtype=torch.bfloat16)
v = torch.randn(n, 8, 128, device="cuda", dtype=torch.bfloat16)
cu = torch.tensor([0, lens[0], n], device="cuda", dtype=torch.int32)
nb = -(-max(lens) // 128)
r = torch.arange(nb, device="cuda")
keep = (torch.rand(2, 32, nb, nb, device="cuda") < 0.5) & (r[None, :] <= r[:, None])
keep |= torch.eye(nb, dtype=torch.bool, device="cuda")
count = keep.sum(-1).to(torch.int32)
index = torch.where(keep, r, nb).sort(-1).values
index = torch.where(index == nb, -1, index).to(torch.int32).contiguous()
want = triton_block_sparse_attention(q, k, v, cu, index, count, 128, path="tma")
for launch in (dict(programs=1), None, dict(sorted=True), dict(sorted=True, programs=5), dict(k_stages=4, v_stages=2),
               dict(k_stages=2, v_stages=2, q_bufs=2),
               dict(pingpong=True), dict(pingpong=True, programs=3)):
    t = time.time()
    got = torch.full_like(q, float("nan"))
    triton_block_sparse_attention(q, k, v, cu, index, count, 128, out=got, path="gluon", launch=launch)
    torch.cuda.synchronize()
    err = float((got.float() - want.float()).pow(2).sum() / want.float().pow(2).sum()) ** 0.5
    print(f"gluon {launch}: NaN left {int(got.isnan().sum())}, rel-RMSE vs tma {err:.2e} ({time.time() - t:.1f} s)",
          flush=True)
    sys.stdout.flush()
