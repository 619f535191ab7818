"""Session 9: both VS top-k selections in one set of launches (`triton_stable_topk_pair`) against two
`triton_stable_topk` calls, on the real VS window sums at 128K (H200, structured inputs, k = 512 of 128K each).

Call 2 measured the pair with its default launch: 64 rows at 5 programs per row = 320 programs, more than the 264
that fit at 2 per SM, so a second wave. Here the pair runs at 2, 3, 4 (256 programs, one wave) and 5 programs per
row and two block sizes. Each line: device time of all kernels per call (torch.profiler, 5 calls) and whether both
outputs equal the two single calls'.
Ran once (logs/call5/topk_pair_sweep.log) with paired_topk.patch applied (not on main; call 2 ran it without the int64
fix for a specialised half_rows that is now in the patch). Two single calls 275.9 us; the pair 270.8-348.1 us (best: 4 programs per
row, 2048-key tiles), every output equal: at best 5 us of a 2.95 ms select, so the pair was not kept.

Usage (patch applied): python benchmarks/results/s9/topk_pair_sweep.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench_prefill import structured_qkv  # noqa: E402
from profile_select_kernels import kernel_table  # noqa: E402

from sparse_attn.kernels.estimation import last_window_sums  # noqa: E402
from sparse_attn.kernels.estimation.topk_triton import stacked_view, triton_stable_topk, triton_stable_topk_pair  # noqa: E402,E501


def device_us(fn):
    table = kernel_table(fn, calls=5)
    return 1000 * sum(ms for ms, _ in table.values()), {name[:24]: round(1000 * ms) for name, (ms, _) in table.items()}


def main():
    length = 131072
    q, k, _ = structured_qkv(length)
    cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
    vertical, slash = last_window_sums(q, k, cu, 256, backend="triton", max_len=length)
    both = stacked_view(vertical, slash)
    assert both is not None, "the window sums no longer share one buffer"
    lens = torch.tensor([length], device="cuda")
    counts = torch.full((1, 32), 512, device="cuda", dtype=torch.long)
    counts2 = torch.stack([counts, counts])

    def singles():
        return (triton_stable_topk(vertical, counts, 512, False, lens=lens, num_forced=4),
                triton_stable_topk(slash, counts, 512, True, lens=lens, num_forced=64))
    ref = singles()
    us, detail = device_us(singles)
    print(f"device={torch.cuda.get_device_name()} 2 x 32 rows, n={length}, k=512", flush=True)
    print(f"two single calls (shipped): {us:.1f} us {detail}", flush=True)
    for parts in (None, 2, 3, 4, 5):
        for block in (2048, 4096):
            fn = lambda: triton_stable_topk_pair(both, counts2, (512, 512), (False, True), (4, 64), lens=lens,
                                                 block=block, programs_per_row=parts)
            got = fn()
            same = all(torch.equal(a, b) for a, b in zip(got, ref))
            us, detail = device_us(fn)
            print(f"pair programs/row {parts or 'default'} block {block}: {us:.1f} us (same {same}) {detail}",
                  flush=True)


if __name__ == "__main__":
    main()
