"""Session 14: the Quest decode kernel with its combine fused into the split kernel (one launch) against the split
kernel + separate combine (two launches), at Llama-3.1-8B heads (32 q / 8 KV, head dim 128, bf16), 128K context,
B = 1 and 8, the method's default budget (1024 tokens) and 10 % of the context; pages shared per KV head.
Per row: do_bench median (GPU time), host microseconds per call (perf_counter over 200 calls, no sync), relative
RMSE of each against the fp32 reference, and whether every output element was written (NaN-poisoned).

python benchmarks/results/s14/quest_fused_probe.py
"""
import time

import torch
import triton

from sparse_attn.kernels.quest import build_page_meta, naive_quest_decode, quest_page_scores, quest_select_pages
from sparse_attn.kernels.quest.triton import triton_quest_decode

HQ, HKV, D, PAGE, L = 32, 8, 128, 16, 131072


def host_us(fn, n=200):
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def rel_rmse(ref, out):
    ref, out = ref.double(), out.double()
    return ((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()


def main():
    gen = torch.Generator(device="cuda").manual_seed(0)
    for batch in (1, 8):
        k = torch.randn(batch, HKV, L, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        v = torch.randn_like(k)
        q = torch.randn(batch, HQ, D, device="cuda", dtype=torch.bfloat16, generator=gen)
        lens = torch.full((batch,), L - 5, device="cuda", dtype=torch.int32)
        page_min, page_max = build_page_meta(k, lens, PAGE)
        scores = quest_page_scores(q, page_min, page_max, lens, PAGE, True)
        for budget in (1024, L // 10):
            index = quest_select_pages(scores, lens, PAGE, budget // PAGE)
            ref = naive_quest_decode(q.float(), k.float(), v.float(), lens, index, PAGE)
            row = []
            for fused in (False, True):
                out = torch.full_like(q, float("nan"))
                triton_quest_decode(q, k, v, lens, index, PAGE, out=out, fuse_combine=fused)
                written = not bool(torch.isnan(out).any())
                err = rel_rmse(ref, out)
                ms = triton.testing.do_bench(lambda: triton_quest_decode(q, k, v, lens, index, PAGE, out=out,
                                                                         fuse_combine=fused), warmup=25, rep=100)
                host = host_us(lambda: triton_quest_decode(q, k, v, lens, index, PAGE, out=out, fuse_combine=fused))
                row.append(f"{'fused' if fused else 'separate'}: {ms * 1e3:.1f} us GPU, {host:.1f} us host, "
                           f"rel-RMSE {err:.2e}, all written {written}")
            print(f"B={batch} budget={budget}: " + " | ".join(row), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
