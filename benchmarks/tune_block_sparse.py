"""Block-sparse prefill kernel variants on one GPU: check each at a real shape, time each against FlexAttention with
the same block mask, in one run (Llama-3.1-8B heads: 32 q / 8 KV heads, head dim 128, bf16, batch 1).

Variants = (path, launch) of `triton_block_sparse_attention`: "pointer" (plain loads, the session-1 kernel) and
"tma" (Hopper tensor descriptors), with (BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize). For each:
  * the compiler's resource report (registers, spills, shared memory) and what the PTX holds (wgmma, bulk tensor
    copies), so a slow variant can be explained without a profiler;
  * correctness at 32K, p = 0.1 (output poisoned with NaN, rel-RMSE <= 5e-3 vs an fp32 reference on sampled rows,
    the reference and mask generator of benchmarks/bench_prefill.py);
  * `do_bench` medians at 32K / 64K / 128K with p = 0.1 and 128K with p = 0.035 (chunk 128), three interleaved passes
    (best of three kept, the spread printed), and FlexAttention compiled with exactly the same blocks.
Chunk 64 variants are timed at 32K and 128K, p = 0.1.

Usage: python benchmarks/tune_block_sparse.py [--json out.json] [--quick]
"""
import argparse
import json
import os
import sys
import time

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_prefill import (D, DEV, HQ, RMSE_BOUND, check, flex_block_mask, random_block_index,  # noqa: E402
                           random_qkv, sample_rows)

from sparse_attn.kernels.block_sparse import triton as bs  # noqa: E402

VARIANTS = {  # name: (chunk, path, launch). Round 1 (tune_r1.log): warp_specialize compiled to the same code as
    # without it at 8 warps (same registers / shared memory) and failed to compile at 4 warps, so it is left out.
    # Round 2: q stays in shared memory (scale folded into the exponent's FMA), optional pipelined Q K^T ("pipe").
    "ptr 128x128 w8 s3": (128, "pointer", (128, 128, 8, 3, False)),
    "tma 128x128 w8 s3": (128, "tma", (128, 128, 8, 3, False)),
    "tma 128x128 w8 s2": (128, "tma", (128, 128, 8, 2, False)),
    "tma 128x128 w8 s2 pipe": (128, "tma", (128, 128, 8, 2, False, True)),
    "tma 128x128 w8 s3 pipe": (128, "tma", (128, 128, 8, 3, False, True)),  # round 3
    "tma 64x64 w4 s3": (128, "tma", (64, 64, 4, 3, False)),  # ~100 KB shared: two programs per SM
    "tma 64x64 w4 s3 pipe": (128, "tma", (64, 64, 4, 3, False, True)),
    "tma 64x128 w4 s2": (128, "tma", (64, 128, 4, 2, False)),
    "ptr 64x64 w4 s2 (c64)": (64, "pointer", (64, 64, 4, 2, False)),
    "tma 64x64 w4 s3 (c64)": (64, "tma", (64, 64, 4, 3, False)),
    "tma 64x64 w4 s3 pipe (c64)": (64, "tma", (64, 64, 4, 3, False, True)),
    "tma 64x64 w4 s2 (c64)": (64, "tma", (64, 64, 4, 2, False)),
}
CASES = {128: [(32768, 0.1), (65536, 0.1), (131072, 0.1), (131072, 0.035)], 64: [(32768, 0.1), (131072, 0.1)]}


def bench(fn, rep=200):
    return do_bench(fn, warmup=25, rep=rep, return_mode="median")


def compiled_report(kernel):
    """Registers / spills / shared memory of the last compiled specialisation of a jitted kernel, PTX contents."""
    try:
        cache = kernel.device_caches[torch.cuda.current_device()][0]
        compiled = list(cache.values())[-1]
        ptx = compiled.asm.get("ptx", "")
        return dict(regs=compiled.n_regs, spills=compiled.n_spills, smem=compiled.metadata.shared,
                    wgmma=ptx.count("wgmma.mma_async"), bulk_tensor=ptx.count("cp.async.bulk.tensor"),
                    ldg=ptx.count("ld.global"), warps=compiled.metadata.num_warps)
    except Exception as error:  # the report is diagnostics only; never lose a variant's timing to it
        return dict(report_error=f"{type(error).__name__}: {error}"[:200])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="32K only, no Flex (smoke test)")
    parser.add_argument("--variants", nargs="+", default=None, help="only these variant names")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="only these lengths")
    args = parser.parse_args()
    import triton
    from torch.nn.attention.flex_attention import flex_attention
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__} triton={triton.__version__} "
          f"date={time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    cases = {c: [x for x in v if x[0] == 32768] for c, v in CASES.items()} if args.quick else CASES
    if args.lengths:
        cases = {c: [x for x in v if x[0] in args.lengths] for c, v in cases.items()}
    if args.variants:
        for name in [n for n in VARIANTS if n not in args.variants]:
            VARIANTS.pop(name)
    flex = torch.compile(flex_attention, dynamic=False)
    lengths = sorted({length for v in cases.values() for length, _ in v})
    results = {name: {} for name in VARIANTS}
    reports, checks, flex_ms, flops = {}, {}, {}, {}
    ok_variants = dict(VARIANTS)
    for length in lengths:
        print(f"== L={length}", flush=True)
        q, k, v = random_qkv(length)
        cu = torch.tensor([0, length], device=DEV, dtype=torch.int32)
        out = torch.empty_like(q)
        for chunk in (128, 64):
            for cl, p in cases[chunk]:
                if cl != length:
                    continue
                index, count, chosen = random_block_index(length, chunk, p)
                key = (chunk, length, p)
                flops[key] = float(count.sum()) * 4 * chunk * chunk * D
                names = [n for n, (c, _, _) in ok_variants.items() if c == chunk]
                # correctness (first time each variant runs: at 32K)
                for name in names:
                    if name in checks:
                        continue
                    _, path, launch = ok_variants[name]
                    try:
                        poisoned = torch.full_like(q, float("nan"))
                        t0 = time.time()
                        bs.triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=poisoned,
                                                         launch=launch, path=path)
                        torch.cuda.synchronize()
                        kern = bs._block_sparse_fwd_tma if path == "tma" else bs._block_sparse_fwd
                        reports[name] = dict(compiled_report(kern), compile_s=round(time.time() - t0, 1))
                        rows = sample_rows(length)

                        def allowed(h, rr, chosen=chosen, chunk=chunk):
                            kpos = torch.arange(length, device=DEV)
                            return chosen[h][rr // chunk][:, kpos // chunk] & (kpos[None, :] <= rr[:, None])
                        good, rmse = check(f"{name} L={length} p={p}", poisoned, q, k, v, rows, allowed)
                        checks[name] = (good, rmse)
                        print(f"  {name}: {json.dumps(reports[name])}", flush=True)
                    except Exception as error:  # a config that does not compile / fit: report, drop, go on
                        print(f"  {name}: FAILED {type(error).__name__}: {str(error)[:400]}", flush=True)
                        checks[name] = (False, float("nan"))
                    if not checks[name][0]:
                        ok_variants.pop(name)
                names = [n for n in names if n in ok_variants]
                for rnd in range(3):  # three interleaved passes: drift between variants shows as spread
                    for name in names:
                        _, path, launch = ok_variants[name]
                        ms = bench(lambda: bs.triton_block_sparse_attention(q, k, v, cu, index, count, chunk,
                                                                            out=out, launch=launch, path=path))
                        results[name].setdefault(key, []).append(ms)
                    default_ms = bench(lambda: bs.triton_block_sparse_attention(q, k, v, cu, index, count, chunk,
                                                                                out=out))
                    results.setdefault("library default", {}).setdefault(key, []).append(default_ms)
                line = {n: [round(x, 3) for x in results[n][key]] for n in names + ["library default"]}
                print(f"  chunk={chunk} L={length} p={p}: {json.dumps(line)}", flush=True)
                if chunk == 128 and not args.quick:
                    mask = flex_block_mask(chosen, chunk, length)
                    qb, kb, vb = (t.transpose(0, 1).unsqueeze(0).contiguous() for t in (q, k, v))
                    t0 = time.time()
                    flex(qb, kb, vb, block_mask=mask, enable_gqa=True)
                    torch.cuda.synchronize()
                    flex_ms[key] = bench(lambda: flex(qb, kb, vb, block_mask=mask, enable_gqa=True))
                    print(f"  flex same mask: {flex_ms[key]:.3f} ms (first call {time.time() - t0:.1f} s)",
                          flush=True)
                    del qb, kb, vb, mask
                del index, count, chosen
        del q, k, v, out
        torch.cuda.empty_cache()

    keys = [(c, length, p) for c in (128, 64) for length, p in cases[c]]
    print("\n### variants (ms, best of 3 passes / spread %; TFLOP/s on computed blocks)\n")
    print("| variant | regs | spills | smem KB | ok (rel-RMSE) | " +
          " | ".join(f"c{c} {length // 1024}K p={p}" for c, length, p in keys) + " |")
    print("|" + "---|" * (5 + len(keys)))
    for name in list(VARIANTS) + ["library default"]:
        rep = reports.get(name, {})
        good, rmse = checks.get(name, (None, float("nan")))
        cells = []
        for key in keys:
            xs = results.get(name, {}).get(key)
            if not xs:
                cells.append("-")
                continue
            best = min(xs)
            cells.append(f"{best:.3f} / {100 * (max(xs) - best) / best:.1f}% / {flops[key] / best / 1e9:.0f}")
        print(f"| {name} | {rep.get('regs', '-')} | {rep.get('spills', '-')} | "
              f"{rep.get('smem', 0) // 1024 if rep else '-'} | {good} ({rmse:.1e}) | " + " | ".join(cells) + " |")
    if flex_ms:
        print("| Flex same mask | | | | | " + " | ".join(f"{flex_ms[k]:.3f}" if k in flex_ms else "-" for k in keys)
              + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(results={n: {str(k): v for k, v in r.items()} for n, r in results.items()},
                           reports=reports, checks=checks, flex={str(k): v for k, v in flex_ms.items()},
                           flops={str(k): v for k, v in flops.items()}), fh, indent=1)


if __name__ == "__main__":
    main()
