"""Attention primitives (`sparse_attn.kernels`): a readable PyTorch reference (`naive.py`) beside a Triton kernel
(`triton.py`) with the same signature, and a dispatcher per package taking `backend="auto" | "naive" | "triton"`
("auto": Triton for CUDA tensors, the reference otherwise; "triton" on CPU tensors needs `TRITON_INTERPRET=1`).

Prefill (varlen packed `q [N, Hq, D]`, `k, v [N, Hkv, D]`, `cu_seqlens [B+1]`):
    `block_sparse`    block-sparse attention over a per-query-block key-block index
    `vertical_slash`  MInference index builder + mixed 64-wide block / single-column attention
    `estimation`      last-window vertical / slash sums, pooled block scores, stable top-k
    `dense`           causal dense attention (SDPA per sample: cuDNN first, Flash second)
Decode (`q [B, Hq, D]`): `decode` (compressed caches with per-head lengths), `quest` (page scores and paged decode).

Signatures and index formats: docs/architecture.md ("Prefill primitives", "Decode primitives"). Subpackages are
imported on demand, so `import sparse_attn` never pulls in Triton.
"""
