"""Session 7: `triton_stable_topk` launch sweep at the Vertical-Slash shape (32 rows x 128K, k = 512, forced
sinks / lens on the fly): programs per row x tile size, do_bench medians; every result checked entry for entry
against the default launch. Usage: python benchmarks/results/sums_s7/topk_sweep.py"""
import torch
from triton.testing import do_bench

from sparse_attn.kernels.estimation.topk_triton import triton_stable_topk


def main():
    g = torch.Generator(device="cuda").manual_seed(0)
    n, rows, k = 131072, 32, 512
    scores = torch.rand(1, rows, n, device="cuda", generator=g) ** 8  # heavy-tailed, like attention sums
    counts = torch.full((1, rows), k, device="cuda", dtype=torch.long)
    lens = torch.tensor([n], device="cuda")
    for forced, desc in ((4, False), (64, True)):
        ref = triton_stable_topk(scores, counts, k, desc, lens=lens, num_forced=forced)
        base = do_bench(lambda: triton_stable_topk(scores, counts, k, desc, lens=lens, num_forced=forced),
                        warmup=25, rep=100)
        print(f"forced {forced} desc {desc}: default {base * 1000:.1f} us", flush=True)
        for block in (1024, 2048, 4096):
            for ppr in (8, 17, 33, 64):
                try:
                    fn = lambda: triton_stable_topk(scores, counts, k, desc, lens=lens, num_forced=forced,
                                                    block=block, programs_per_row=ppr)
                    same = torch.equal(fn(), ref)
                    t = do_bench(fn, warmup=25, rep=100)
                    print(f"  block {block} programs/row {ppr}: {t * 1000:.1f} us, same {same}", flush=True)
                except Exception as error:
                    print(f"  block {block} programs/row {ppr}: {type(error).__name__}: {error}"[:160], flush=True)


if __name__ == "__main__":
    main()
