"""Session 8: launch of the Triton radix top-k (`triton_stable_topk`) on the real VS scores at 128K (H200).

For each (programs per row, BLOCK): the device time of its kernels per call (torch.profiler: histogram zero fill,
4 radix passes, compaction), for the vertical (k = 512 of 128K, ascending) and slash (descending) rows of
`VerticalSlash().select`'s own last-window sums, and whether the output equals the default launch's.
Usage: python benchmarks/results/s8/topk_sweep.py
(Its own profiler loop, as run for logs/call3/topk_sweep.log, was replaced by profile_select_kernels.kernel_table,
which does the same.)
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench_prefill import structured_qkv  # noqa: E402
from profile_select_kernels import kernel_table  # noqa: E402

from sparse_attn.kernels.estimation import last_window_sums  # noqa: E402
from sparse_attn.kernels.estimation.topk_triton import triton_stable_topk  # noqa: E402


def device_ms(fn):
    """(total device ms per call, {kernel: ms}) over 5 calls (profile_select_kernels.kernel_table)."""
    table = kernel_table(fn, calls=5)
    return sum(ms for ms, _ in table.values()), {name[:40]: ms for name, (ms, _) in table.items()}


def main():
    length = 131072
    q, k, _ = structured_qkv(length)
    cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
    vertical, slash = last_window_sums(q, k, cu, 256, backend="triton", max_len=length)
    lens = torch.tensor([length], device="cuda")
    counts = torch.full((1, 32), 512, device="cuda", dtype=torch.long)
    cases = {"vertical": (vertical, 4, False), "slash": (slash, 64, True)}
    print(f"device={torch.cuda.get_device_name()} rows=32 n={length} k=512", flush=True)
    for name, (scores, forced, desc) in cases.items():
        ref = triton_stable_topk(scores, counts, 512, desc, lens=lens, num_forced=forced)
        for parts in (None, 4, 8, 33, 64):
            for block in (1024, 2048, 4096):
                fn = lambda: triton_stable_topk(scores, counts, 512, desc, block=block, programs_per_row=parts,
                                                lens=lens, num_forced=forced)
                same = torch.equal(fn(), ref)
                ms, parts_ms = device_ms(fn)
                detail = ", ".join(f"{n} {v * 1000:.0f} us" for n, v in parts_ms.items())
                print(f"{name} programs/row {parts or 'default'} block {block}: {ms * 1000:.1f} us "
                      f"(same {same}; {detail})", flush=True)


if __name__ == "__main__":
    main()
