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


def budget_compare():
    """FlexPrefill's budget_and_threshold at 32 x 128K: the torch scans against the Triton prefix scan."""
    from sparse_attn.methods.flexprefill import budget_and_threshold

    g = torch.Generator(device="cuda").manual_seed(1)
    n = 131072
    dist = torch.rand(1, 32, n, device="cuda", generator=g) ** 12
    dist = dist / dist.sum(-1, keepdim=True)
    lens = torch.tensor([n], device="cuda")
    for forced in (4, 64):
        want = budget_and_threshold(dist, 0.65, 512, lens, forced, backend="naive")
        got = budget_and_threshold(dist, 0.65, 512, lens, forced, backend="triton")
        same = torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
        times = [do_bench(lambda: budget_and_threshold(dist, 0.65, 512, lens, forced, backend=b), warmup=25, rep=100)
                 for b in ("naive", "triton")]
        print(f"budget_and_threshold forced {forced}: torch {times[0] * 1000:.1f} us, triton {times[1] * 1000:.1f} us "
              f"(sort included in both), budgets {int(got[0].min())}..{int(got[0].max())}, same {same}", flush=True)


if __name__ == "__main__":
    budget_compare()
    main()
