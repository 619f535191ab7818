"""Regression check for the 128K flexprefill crash (CUDA illegal memory access in the vertical-slash index).

One layer of flexprefill at its defaults on random bf16 q/k/v (Llama-3.1-8B heads: 32 q / 8 KV, head dim 128), where
near-uniform attention makes the coverage budgets keep nearly every key. It must either run (output fully written
and equal, on the last 64-query row, to fp32 attention under the index's own mask) or raise the memory guard's
ValueError; a CUDA error is the bug. Prints budgets, index widths / GiB, sparsity and wall times (one run with
syncs, for orientation only: speed comes from bench_prefill.py).

    TRITON_INTERPRET=0 python benchmarks/check_flexprefill_long.py --length 131072
"""
import argparse
import time

import torch

from sparse_attn.kernels.vertical_slash import index_widths
from sparse_attn.kernels.vertical_slash.naive import index_bytes
from sparse_attn.methods._prefill import run_vertical_slash
from sparse_attn.registry import build_method


def last_row_reference(q, k, v, selection, length, scale):
    """fp32 attention of the last index row (<= 64 queries, all heads) under the mask the index selects: [M, Hq, D]."""
    s = selection
    row = (length - 1) // 64
    q_pos = torch.arange(row * 64, length, device=q.device)
    group = q.shape[1] // k.shape[1]
    outs = []
    for h in range(q.shape[1]):
        nb, nc = int(s.block_count[0, h, row]), int(s.column_count[0, h, row])
        keys = (s.block_offset[0, h, row, :nb].long()[:, None] + torch.arange(64, device=q.device)).flatten()
        keys = torch.cat([keys[keys < length], s.column_index[0, h, row, :nc].long()])
        mask = torch.zeros(len(q_pos), length, dtype=torch.bool, device=q.device)
        mask[:, keys] = True
        mask &= torch.arange(length, device=q.device)[None] <= q_pos[:, None]
        logits = (q[q_pos, h].float() @ k[:, h // group].float().T) * scale
        probs = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
        outs.append(probs @ v[:, h // group].float())
    return torch.stack(outs, dim=1), q_pos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=131072)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    length, dev = args.length, args.device
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    q = torch.randn(length, 32, 128, device=dev, dtype=dtype)
    k = torch.randn(length, 8, 128, device=dev, dtype=dtype)
    v = torch.randn(length, 8, 128, device=dev, dtype=dtype)
    cu = torch.tensor([0, length], device=dev, dtype=torch.int32)
    method = build_method("flexprefill")
    print(f"flexprefill defaults {method}, L={length}, device={torch.cuda.get_device_name() if dev == 'cuda' else dev}")

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    try:
        selection = method.select(q, k, cu)
        sync()
    except ValueError as error:
        print(f"GUARD RAISED (no crash): {error}")
        return
    t1 = time.perf_counter()
    s = selection
    bounds = index_widths(length, s.slash_offsets.shape[-1], s.vertical_idx.shape[-1])
    print(f"budgets per head: verticals mean {s.vertical_count.float().mean():.0f} max {int(s.vertical_count.max())},"
          f" slashes mean {s.slash_count.float().mean():.0f} max {int(s.slash_count.max())}")
    n_rows = s.block_count.shape[-1]
    size = index_bytes(1, 32, n_rows, s.block_offset.shape[-1], s.column_index.shape[-1]) / 2**30
    uncapped = index_bytes(1, 32, n_rows, s.slash_offsets.shape[-1], s.vertical_idx.shape[-1]) / 2**30
    print(f"pattern widths NV={s.vertical_idx.shape[-1]} NS={s.slash_offsets.shape[-1]}; index block_offset "
          f"{tuple(s.block_offset.shape)} column_index {tuple(s.column_index.shape)} (bounds {bounds}), "
          f"{size:.2f} GiB; the uncapped index would be {uncapped:.2f} GiB")
    out = torch.full_like(q, float("nan"))
    result = run_vertical_slash(selection, q, k, v, None, "auto")
    out.copy_(result.out)
    sync()
    t2 = time.perf_counter()
    assert not torch.isnan(out).any(), "output elements left unwritten"
    want, rows = last_row_reference(q, k, v, selection, length, 128 ** -0.5)
    err = float((out[rows].float() - want).norm() / want.norm())
    print(f"sparsity mean {float(result.sparsity.mean()):.4f} min {float(result.sparsity.min()):.4f}; "
          f"select+index {t1 - t0:.2f} s, attention+sparsity {t2 - t1:.2f} s (one synced run, first call incl. "
          f"compilation); last row rel. error vs fp32 masked reference {err:.2e}")
    if dev == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    assert err < 5e-3, err
    print("OK: no crash")


if __name__ == "__main__":
    main()
