"""Block-sparse prefill kernel variants on one GPU: check each at a real shape, time each against FlexAttention with
the same block mask, in one run (Llama-3.1-8B heads: 32 q / 8 KV heads, head dim 128, bf16, batch 1).

Variants = (path, launch) of `triton_block_sparse_attention`: "pointer" (plain loads, the session-1 kernel) and
"tma" (Hopper tensor descriptors), launch = (BLOCK_M, BLOCK_N, num_warps, num_stages, warp_specialize, pipeline_qk,
peel_diag, persistent). For each:
  * the compiler's resource report (registers, spills, shared memory) and what the PTX holds (wgmma, bulk tensor
    copies), so a slow variant can be explained without a profiler;
  * correctness on the first case it runs (output poisoned with NaN, rel-RMSE <= 5e-3 vs an fp32 reference on
    sampled rows, the reference and mask generator of benchmarks/bench_prefill.py);
  * `do_bench` medians per case (chunk, length, p), `--passes` interleaved passes (best kept, the spread printed),
    and FlexAttention compiled with exactly the same blocks (once per case; `--no-flex` skips it).
Every call passes max_seqlen (no device -> host read in the wrapper; --sync-default also times the default without it). After each case a table: ms, spread, TFLOP/s on
computed blocks, speed vs the library default and vs Flex, the index width (block_index.shape[-1], what
`_launch_config` can choose by) and the winner; those tables print as soon as a case ends, so a run cut short by a
timeout still reports the cases it finished.

Usage: python benchmarks/tune_block_sparse.py [--json out.json] [--quick] [--variants NAME ...] [--lengths L ...]
       [--cases CHUNK:LENGTH:P ...] [--passes 3] [--rep 200] [--no-flex] [--sync-default]
"""
import argparse
import json
import os
import sys
import time

import torch
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_prefill import (D, DEV, check, flex_block_mask, random_block_index, random_qkv,  # noqa: E402
                           sample_rows)

from sparse_attn.kernels.block_sparse import triton as bs  # noqa: E402

VARIANTS = {  # name: (chunk, path, launch). Round 1 (tune_r1.log): warp_specialize compiled to the same code as
    # without it at 8 warps (same registers / shared memory) and failed to compile at 4 warps, so it is left out.
    # Round 2: q stays in shared memory (scale folded into the exponent's FMA), optional pipelined Q K^T ("pipe").
    "ptr 128x128 w8 s3": (128, "pointer", (128, 128, 8, 3, False)),
    "tma 128x128 w8 s3": (128, "tma", (128, 128, 8, 3, False)),
    "tma 128x128 w8 s2": (128, "tma", (128, 128, 8, 2, False)),
    "tma 128x128 w8 s2 pipe": (128, "tma", (128, 128, 8, 2, False, True)),  # library default since session 2
    "tma 128x128 w8 s3 pipe": (128, "tma", (128, 128, 8, 3, False, True)),  # round 3
    "tma 64x64 w4 s3": (128, "tma", (64, 64, 4, 3, False)),  # ~112 KB shared, ~200 registers: two programs per SM
    "tma 64x64 w4 s3 pipe": (128, "tma", (64, 64, 4, 3, False, True)),
    "tma 64x128 w4 s2": (128, "tma", (64, 128, 4, 2, False)),
    # Session 6: peeled diagonal ("peel": its K copy and Q K^T issued inside the pipelined loop), persistent grid
    # ("persN": N programs per SM looping over (query tile, head) items, heaviest first), and two-per-SM launches
    # for rows that visit few blocks (32K, or ~3.5% of blocks at 128K).
    "tma 128x128 w8 s2 pipe peel": (128, "tma", (128, 128, 8, 2, False, True, True, 0)),
    "tma 128x128 w8 s2 pipe pers1": (128, "tma", (128, 128, 8, 2, False, True, False, 1)),
    "tma 128x128 w8 s2 pipe peel pers1": (128, "tma", (128, 128, 8, 2, False, True, True, 1)),
    "tma 64x64 w4 s3 pipe peel": (128, "tma", (64, 64, 4, 3, False, True, True, 0)),
    "tma 64x64 w4 s2 pipe peel": (128, "tma", (64, 64, 4, 2, False, True, True, 0)),
    "tma 64x64 w4 s2 pipe peel pers2": (128, "tma", (64, 64, 4, 2, False, True, True, 2)),
    "tma 64x128 w4 s2 pipe peel": (128, "tma", (64, 128, 4, 2, False, True, True, 0)),
    "ptr 64x64 w4 s2 (c64)": (64, "pointer", (64, 64, 4, 2, False)),
    "tma 64x64 w4 s3 (c64)": (64, "tma", (64, 64, 4, 3, False)),
    "tma 64x64 w4 s3 pipe (c64)": (64, "tma", (64, 64, 4, 3, False, True)),
    "tma 64x64 w4 s2 (c64)": (64, "tma", (64, 64, 4, 2, False)),
    "tma 64x64 w4 s3 pipe peel (c64)": (64, "tma", (64, 64, 4, 3, False, True, True, 0)),
    "tma 64x64 w4 s3 pipe peel pers2 (c64)": (64, "tma", (64, 64, 4, 3, False, True, True, 2)),
}
CASES = [(128, 32768, 0.1), (128, 131072, 0.035), (128, 131072, 0.1), (128, 65536, 0.1),
         (64, 32768, 0.1), (64, 131072, 0.1)]
DEFAULT = "library default"
DEFAULT_SYNC = "library default, max_seqlen read"  # --sync-default: the wrapper reads max_seqlen (a host sync)


def bench(fn, rep):
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


def kernel_of(path, launch):
    if path != "tma":
        return bs._block_sparse_fwd
    return bs._block_sparse_fwd_tma_persistent if bs._full_launch(launch)[7] else bs._block_sparse_fwd_tma


def parse_case(text):
    chunk, length, p = text.split(":")
    return int(chunk), int(length), float(p)


def case_table(key, names, results, flops, flex_ms, width, checks):
    """Markdown table of one case: every variant that ran, the winner marked."""
    chunk, length, p = key
    timed = {n: min(results[n][key]) for n in names if results.get(n, {}).get(key)}
    if not timed:
        return f"(c{chunk} {length // 1024}K p={p}: nothing timed)"
    default = timed.get(DEFAULT)
    flex = flex_ms.get(key)
    best = min((n for n in timed if n not in (DEFAULT, DEFAULT_SYNC)), key=timed.get, default=DEFAULT)
    lines = [f"\n#### c{chunk} {length // 1024}K p={p}: index width {width}, best variant: {best} "
             f"({timed[best]:.3f} ms" + (f", {default / timed[best]:.3f}x default" if default else "") +
             (f", {flex / timed[best]:.2f}x Flex" if flex else "") + ")\n",
             "| variant | ms (best) | spread | TFLOP/s | x default | x Flex same mask | ok (rel-RMSE) |",
             "|---|---|---|---|---|---|---|"]
    for name in sorted(timed, key=timed.get):
        xs = results[name][key]
        ms = timed[name]
        good, rmse = checks.get(name, (None, float("nan")))
        lines.append(f"| {'**' + name + '**' if name == best else name} | {ms:.3f} | "
                     f"{100 * (max(xs) - ms) / ms:.1f}% | {flops[key] / ms / 1e9:.0f} | "
                     f"{default / ms if default else float('nan'):.3f} | "
                     f"{flex / ms if flex else float('nan'):.2f} | {good} ({rmse:.1e}) |")
    if flex:
        lines.append(f"| Flex same mask | {flex:.3f} | | {flops[key] / flex / 1e9:.0f} | "
                     f"{default / flex if default else float('nan'):.3f} | 1.00 | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="32K only, no Flex (smoke test)")
    parser.add_argument("--variants", nargs="+", default=None, help="only these variant names")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="only these lengths")
    parser.add_argument("--cases", nargs="+", type=parse_case, default=None, metavar="CHUNK:LENGTH:P",
                        help="these cases, in this order (default: CASES)")
    parser.add_argument("--passes", type=int, default=3, help="interleaved timing passes per case")
    parser.add_argument("--rep", type=int, default=200, help="do_bench rep (ms of timed calls per median)")
    parser.add_argument("--no-flex", action="store_true", help="skip the FlexAttention same-mask timing")
    parser.add_argument("--sync-default", action="store_true",
                        help=f"also time '{DEFAULT_SYNC}': the default without max_seqlen (one device->host read)")
    args = parser.parse_args()
    import triton
    from torch.nn.attention.flex_attention import flex_attention
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__} triton={triton.__version__} "
          f"date={time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    cases = list(args.cases or CASES)
    if args.quick:
        cases = [c for c in cases if c[1] == 32768]
    if args.lengths:
        cases = [c for c in cases if c[1] in args.lengths]
    if args.variants:
        unknown = [n for n in args.variants if n not in VARIANTS]
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    variants = {n: VARIANTS[n] for n in (args.variants or VARIANTS)}
    use_flex = not (args.quick or args.no_flex)
    flex = torch.compile(flex_attention, dynamic=False) if use_flex else None
    results, reports, checks, flex_ms, flops, widths = {}, {}, {}, {}, {}, {}
    ok_variants = dict(variants)
    t_start = time.time()

    def save():  # after every case, so a run cut short by a timeout keeps what it measured
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(dict(results={n: {str(k): v for k, v in r.items()} for n, r in results.items()},
                               reports=reports, checks=checks, flex={str(k): v for k, v in flex_ms.items()},
                               flops={str(k): v for k, v in flops.items()},
                               widths={str(k): v for k, v in widths.items()}), fh, indent=1)
    by_length = {}
    for case in cases:  # keep the given order, but build q/k/v once per length
        by_length.setdefault(case[1], []).append(case)
    for length, length_cases in by_length.items():
        q, k, v = random_qkv(length)
        cu = torch.tensor([0, length], device=DEV, dtype=torch.int32)
        out = torch.empty_like(q)
        for chunk, _, p in length_cases:
            key = (chunk, length, p)
            print(f"== chunk={chunk} L={length} p={p} (t={time.time() - t_start:.0f} s)", flush=True)
            index, count, chosen = random_block_index(length, chunk, p)
            flops[key] = float(count.sum()) * 4 * chunk * chunk * D
            widths[key] = index.shape[-1]

            def run(launch, path, dst, index=index, count=count, chunk=chunk, known=length):
                return bs.triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=dst, launch=launch,
                                                        path=path, max_seqlen=known)
            names = [n for n, (c, _, _) in ok_variants.items() if c == chunk]
            for name in names:  # correctness, the first time each variant runs
                if name in checks:
                    continue
                _, path, launch = ok_variants[name]
                try:
                    poisoned = torch.full_like(q, float("nan"))
                    t0 = time.time()
                    run(launch, path, poisoned)
                    torch.cuda.synchronize()
                    reports[name] = dict(compiled_report(kernel_of(path, launch)),
                                         compile_s=round(time.time() - t0, 1))
                    rows = sample_rows(length)

                    def allowed(h, rr, chosen=chosen, chunk=chunk):
                        kpos = torch.arange(length, device=DEV)
                        return chosen[h][rr // chunk][:, kpos // chunk] & (kpos[None, :] <= rr[:, None])
                    checks[name] = check(f"{name} L={length} p={p}", poisoned, q, k, v, rows, allowed)
                    print(f"  {name}: {json.dumps(reports[name])}", flush=True)
                except Exception as error:  # a config that does not compile / fit: report, drop, go on
                    print(f"  {name}: FAILED {type(error).__name__}: {str(error)[:400]}", flush=True)
                    checks[name] = (False, float("nan"))
                if not checks[name][0]:
                    ok_variants.pop(name)
            names = [n for n in names if n in ok_variants]
            defaults = [DEFAULT] + ([DEFAULT_SYNC] if args.sync_default else [])
            for _ in range(args.passes):  # interleaved passes: drift between variants shows as spread
                for name in names + defaults:
                    path, launch = ("auto", None) if name in defaults else ok_variants[name][1:]
                    known = None if name == DEFAULT_SYNC else length
                    ms = bench(lambda: run(launch, path, out, known=known), args.rep)
                    results.setdefault(name, {}).setdefault(key, []).append(ms)
            line = {n: [round(x, 3) for x in results[n][key]] for n in names + defaults}
            print(f"  ms per pass: {json.dumps(line)}", flush=True)
            if use_flex:
                mask = flex_block_mask(chosen, chunk, length)
                qb, kb, vb = (t.transpose(0, 1).unsqueeze(0).contiguous() for t in (q, k, v))
                t0 = time.time()
                flex(qb, kb, vb, block_mask=mask, enable_gqa=True)
                torch.cuda.synchronize()
                flex_ms[key] = bench(lambda: flex(qb, kb, vb, block_mask=mask, enable_gqa=True), args.rep)
                print(f"  flex same mask: {flex_ms[key]:.3f} ms (first call {time.time() - t0:.1f} s)", flush=True)
                del qb, kb, vb, mask
            print(case_table(key, names + defaults, results, flops, flex_ms, widths[key], checks), flush=True)
            save()
            del index, count, chosen
        del q, k, v, out
        torch.cuda.empty_cache()

    keys = [c for c in cases if c in flops]
    print("\n### variants (ms, best of passes / spread %; TFLOP/s on computed blocks)\n")
    print("| variant | regs | spills | smem KB | ok (rel-RMSE) | " +
          " | ".join(f"c{c} {length // 1024}K p={p}" for c, length, p in keys) + " |")
    print("|" + "---|" * (5 + len(keys)))
    for name in list(variants) + [DEFAULT, DEFAULT_SYNC]:
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
    print(f"\ntotal {time.time() - t_start:.0f} s", flush=True)
    save()


if __name__ == "__main__":
    main()
