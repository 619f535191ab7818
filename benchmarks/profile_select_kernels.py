"""Where the time of a sparse-prefill selection goes, kernel by kernel (torch.profiler on the GPU).

Runs `VerticalSlash().select` and `FlexPrefill().select` (reference defaults) on the structured inputs of
bench_prefill.py, prints the do_bench median of the whole select and a table of the CUDA kernels it launches
(total device time per kernel name over one call, and the number of launches), so the estimation / top-k / index
stages can be told apart without guessing. `select` gets the host lengths (`seq_lens=[length]`), as the
integrations call it, so no cu_seqlens read-back stalls the GPU at its start.

Usage: python benchmarks/profile_select_kernels.py [--lengths 131072] [--methods vertical_slash flexprefill]
"""
import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

from bench_prefill import structured_qkv
from sparse_attn.methods.flexprefill import FlexPrefill
from sparse_attn.methods.vertical_slash import VerticalSlash

METHODS = {"vertical_slash": VerticalSlash, "flexprefill": FlexPrefill}


def kernel_table(fn, calls=3):
    """{kernel name: (device ms per call, launches per call)} over `calls` calls of fn."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    totals, counts = defaultdict(float), defaultdict(int)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name] += event.device_time / 1000 / calls  # us -> ms
            counts[event.name] += 1
    return {name: (totals[name], counts[name] / calls) for name in totals}


def host_enqueue_ms(fn, calls=10):
    """Median host (CPU) time of one call that starts on an idle GPU: if it is close to the do_bench time, the
    call is bound by Python / launch overhead, not by its kernels."""
    times = []
    for _ in range(calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    torch.cuda.synchronize()
    return sorted(times)[len(times) // 2]


def timeline(fn, path):
    """One call of fn, after a sync, with CPU and CUDA activity: a chrome trace at `path`, and a printed summary of
    when the GPU waited on the host (gaps between consecutive kernels larger than 10 us)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    prof.export_chrome_trace(path)
    kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    if not kernels:
        return
    gaps = [(b[0] - a[1], a[2], b[2]) for a, b in zip(kernels, kernels[1:]) if b[0] - a[1] > 10]
    span = (kernels[-1][1] - kernels[0][0]) / 1000
    busy = sum(e - s for s, e, _ in kernels) / 1000
    print(f"  timeline: first to last kernel {span:.3f} ms, kernels busy {busy:.3f} ms, idle gaps > 10 us: "
          f"{sum(g for g, _, _ in gaps) / 1000:.3f} ms in {len(gaps)}")
    for gap, before, after in sorted(gaps, reverse=True)[:8]:
        print(f"    {gap / 1000:.3f} ms idle after {before[:50]} before {after[:50]}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[131072])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--trace-dir", default=None, help="write a chrome trace of one call per method here")
    args = parser.parse_args()
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__} "
          f"date={time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    for length in args.lengths:
        cu = torch.tensor([0, length], device="cuda", dtype=torch.int32)
        q, k, _ = structured_qkv(length)
        for name in args.methods:
            method = METHODS[name]()
            select = lambda: method.select(q, k, cu, backend="triton", seq_lens=[length])  # host lengths
            total = do_bench(select, warmup=10, rep=50, return_mode="median")
            host = host_enqueue_ms(select)
            table = kernel_table(select)
            device_sum = sum(ms for ms, _ in table.values())
            print(f"\n## {name} L={length}: select {total:.3f} ms (do_bench median); kernels sum {device_sum:.3f} ms; "
                  f"host time to enqueue one call {host:.3f} ms (median of 10, GPU idle at the start)")
            if args.trace_dir:
                timeline(select, f"{args.trace_dir}/{name}_{length}.json")
            print("| kernel | ms per call | launches | % of kernels |\n|---|---|---|---|")
            for kernel, (ms, n) in sorted(table.items(), key=lambda kv: -kv[1][0]):
                print(f"| {kernel[:90]} | {ms:.4f} | {n:g} | {100 * ms / device_sum:.1f} |")


if __name__ == "__main__":
    main()
