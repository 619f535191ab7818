"""Decode-kernel benchmark: Quest and compressed-cache (snapkv / ada_snapkv) decode against dense decode.

One layer of Llama-3.1-8B attention (32 query heads, 8 KV heads, head dim 128, bf16), contexts 16K-128K, batch 1
and 8. Prints, in one run:

* ceilings: spec HBM bandwidth and the measured device-to-device copy (bytes read + written);
* Quest (page 16, budget 10% of the context, pages shared per KV head): one decode step = page scores + top-k
  selection + attention over the selected pages; ms, GB/s on the bytes actually read (selected pages + page
  metadata), % of the spec and measured rooflines, and the ratio against dense decode over the full cache with SDPA
  cuDNN, SDPA flash, FlexAttention and our own split-K kernel; the step's parts on their own;
* compressed-cache decode (capacity 10%: snapkv = every head keeps C tokens, ada = per-head lengths with the same
  total): ms, GB/s on the kept tokens, % of roofline, ratio against cuDNN on a uniform cache of C tokens and
  against dense decode over the full context;
* snapkv / ada_snapkv compression overhead (the method code's `compress`: window scores + pooling + top-k +
  gather) as % of dense cuDNN causal prefill of the same prompt.

Every kernel is checked against its PyTorch reference at the benchmark shape (relative RMSE, NaN = unwritten
output) before it is timed. Timing: `triton.testing.do_bench` medians (it flushes L2 before every repeat) of a CUDA
graph replay of the step (launch overhead out, as in a serving engine), falling back to eager launches where
capture fails (the table says which).

    TRITON_INTERPRET=0 python benchmarks/bench_decode.py [--contexts 16384 131072] [--batches 1 8] [--no-flex]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import Optional

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

HQ, HKV, D = 32, 8, 128
PAGE = 16
DTYPE = torch.bfloat16
DEVICE = "cuda"
SPEC_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}  # bytes/s, datasheet HBM bandwidth
RATIO = 5e-3

DECODE_CONFIGS = [  # (block_n, num_warps, num_stages, split factor over the default `choose_num_splits`)
    (64, 4, 3, 1), (32, 4, 3, 1), (64, 4, 4, 1), (128, 4, 3, 1), (32, 4, 4, 1),
    (32, 4, 3, 2), (64, 4, 3, 2), (32, 4, 4, 2), (64, 4, 4, 2), (32, 4, 3, 3), (64, 4, 3, 3),
    (32, 4, 3, 4), (64, 4, 3, 4), (32, 4, 3, 6), (64, 4, 3, 6), (32, 4, 3, 8), (64, 4, 3, 8),
]
# --quick: the configs that won a full sweep on the H100 (session 2) plus their neighbours
QUICK_DECODE_CONFIGS = [(64, 4, 3, 1), (64, 4, 4, 1), (32, 4, 3, 1), (64, 4, 3, 2), (64, 4, 4, 2), (32, 4, 3, 2)]
WINDOW_STATS_CONFIGS = [  # (BLOCK_M, BLOCK_N, num_warps, num_stages) of the window row-statistics pass
    (64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 4), (64, 128, 4, 3),
]
WINDOW_SCORES_CONFIGS = [  # the same for the window score pass (one program per KV head and BLOCK_N keys)
    (64, 64, 4, 2), (64, 128, 8, 2), (128, 128, 8, 2), (64, 256, 8, 2), (32, 128, 4, 2), (64, 128, 4, 3),
]
QUEST_CONFIGS = [  # (pages_per_block, num_warps, num_stages, split factor over the default heuristic, prefetch ids)
    (8, 4, 3, 1, True), (8, 4, 3, 1, False), (4, 4, 3, 1, True), (2, 4, 3, 1, True), (8, 4, 4, 1, True),
    (8, 8, 3, 1, True), (4, 8, 2, 1, True), (8, 4, 3, 2, True), (8, 4, 2, 1, True),
]
SCORE_CONFIGS = [(32, 1, 2), (16, 1, 2), (64, 1, 2), (32, 4, 2), (32, 4, 3), (64, 2, 3), (16, 8, 3)]
# (pages per block, blocks per program, num_stages) of the page-score kernel
SELECT_WARPS = [4, 8, 16]  # warps of the top-k page selection kernel (one program per row)


# -- timing ------------------------------------------------------------------------------------------------------
def bench_ms(fn, use_graph: bool = True, rep: int = 100):
    """Median ms of `fn` and the mode used ("graph" or "eager")."""
    fn()  # compile / autotune / allocator warm-up outside the timing
    torch.cuda.synchronize()
    if use_graph:
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            torch.cuda.synchronize()
            return do_bench(graph.replay, warmup=25, rep=rep, return_mode="median"), "graph"
        except Exception as error:  # noqa: BLE001 - report and time eagerly
            print(f"  (graph capture failed: {type(error).__name__}: {str(error)[:120]}; timing eagerly)")
            torch.cuda.synchronize()
    return do_bench(fn, warmup=25, rep=rep, return_mode="median"), "eager"


def rel_rmse(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.double(), out.double()
    return ((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()).item()


def check(name: str, ref: torch.Tensor, out: torch.Tensor) -> float:
    if torch.isnan(out).any():
        raise AssertionError(f"{name}: NaN in the output (unwritten elements)")
    err = rel_rmse(ref.float(), out.float())
    if err > RATIO:
        raise AssertionError(f"{name}: relative RMSE {err:.2e} > {RATIO}")
    return err


def measured_copy_bandwidth() -> float:
    """Bytes/s of a 2 GiB device-to-device copy, counting bytes read + written."""
    src = torch.empty(2 ** 31, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    return 2 * 2 ** 31 / (ms * 1e-3)


# -- dense decode baselines ---------------------------------------------------------------------------------------
_FLEX = {}


def dense_baselines(q, k, v, use_flex: bool):
    """ms of dense one-token decode over the whole cache: SDPA cuDNN, SDPA flash, FlexAttention (compiled)."""
    q4 = q[:, :, None, :]  # [B, Hq, 1, D]
    times = {}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        def sdpa(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)
        try:
            times[name] = bench_ms(sdpa)
        except Exception as error:  # noqa: BLE001 - a missing backend is reported, not hidden
            print(f"  SDPA {name} unavailable: {type(error).__name__}: {str(error)[:160]}")
            times[name] = (float("nan"), "n/a")
    if use_flex:
        from torch.nn.attention.flex_attention import flex_attention

        if "fn" not in _FLEX:
            torch._dynamo.config.cache_size_limit = 64
            if hasattr(torch._dynamo.config, "recompile_limit"):
                torch._dynamo.config.recompile_limit = 64
            _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
        try:
            times["flex"] = bench_ms(lambda: _FLEX["fn"](q4, k, v, enable_gqa=True), use_graph=False, rep=50)
        except Exception as error:  # noqa: BLE001
            print(f"  FlexAttention unavailable: {type(error).__name__}: {str(error)[:160]}")
            times["flex"] = (float("nan"), "n/a")
    else:
        times["flex"] = (float("nan"), "skipped")
    return times


# -- Quest ---------------------------------------------------------------------------------------------------------
def bench_quest(context: int, batch: int, use_flex: bool, bandwidth: dict, results: list,
                fuse_combine: Optional[bool] = None):
    from sparse_attn.kernels.decode.triton import choose_num_splits, triton_decode
    from sparse_attn.kernels.quest import build_page_meta, naive_quest_decode, naive_quest_select_pages
    from sparse_attn.kernels.quest.triton import (
        FUSE_MAX_SPLITS,
        triton_quest_decode,
        triton_quest_page_scores,
        triton_quest_select_pages,
    )

    torch.manual_seed(context + batch)
    page_budget = context // 10 // PAGE
    q = torch.randn(batch, HQ, D, device=DEVICE, dtype=DTYPE)
    k = torch.randn(batch, HKV, context, D, device=DEVICE, dtype=DTYPE)
    v = torch.randn_like(k)
    lens = torch.full((batch,), context, device=DEVICE, dtype=torch.int32)
    page_min, page_max = build_page_meta(k, lens, PAGE)
    num_pages = page_min.shape[2]

    from sparse_attn.kernels.quest import naive_quest_page_scores

    ref_scores = naive_quest_page_scores(q, page_min, page_max, lens, PAGE, True)
    score_cfg, best_scores_ms = None, None
    for candidate in SCORE_CONFIGS:
        score_kw = dict(block_p=candidate[0], blocks_per_program=candidate[1], num_stages=candidate[2])
        scores = triton_quest_page_scores(q, page_min, page_max, lens, PAGE, True, **score_kw)
        finite = torch.isfinite(ref_scores)
        if not torch.equal(finite, torch.isfinite(scores)) or rel_rmse(ref_scores[finite], scores[finite]) > 1e-5:
            raise AssertionError(f"page scores {context}/{batch} {candidate} differ from the reference")
        ms, _ = bench_ms(lambda: triton_quest_page_scores(q, page_min, page_max, lens, PAGE, True, **score_kw),
                         rep=30)
        if best_scores_ms is None or ms < best_scores_ms:
            score_cfg, best_scores_ms = candidate, ms
    score_kw = dict(block_p=score_cfg[0], blocks_per_program=score_cfg[1], num_stages=score_cfg[2])
    scores = triton_quest_page_scores(q, page_min, page_max, lens, PAGE, True, **score_kw)
    ref_index = naive_quest_select_pages(scores, lens, PAGE, page_budget)
    select_warps, best_select_ms = None, None
    for warps in SELECT_WARPS:
        index = triton_quest_select_pages(scores, lens, PAGE, page_budget, num_warps=warps)
        if not torch.equal(index, ref_index):
            raise AssertionError(f"page selection {context}/{batch} ({warps} warps) differs from the reference")
        ms, _ = bench_ms(lambda: triton_quest_select_pages(scores, lens, PAGE, page_budget, num_warps=warps), rep=30)
        if best_select_ms is None or ms < best_select_ms:
            select_warps, best_select_ms = warps, ms
    agree = 1.0
    default_splits = choose_num_splits(batch * HKV, index.shape[-1] * PAGE, q.device)

    # tune the attention launch at this shape (every candidate is checked against the reference first)
    ref_out = naive_quest_decode(q, k, v, lens, index, PAGE)
    out = torch.empty_like(q)
    best = None
    prefetch_gain = {}
    for cfg in QUEST_CONFIGS:
        ppb, warps, stages, factor, prefetch = cfg
        splits = default_splits * factor
        out.fill_(float("nan"))
        triton_quest_decode(q, k, v, lens, index, PAGE, out=out, pages_per_block=ppb, num_warps=warps,
                            num_stages=stages, num_splits=splits, prefetch_index=prefetch, fuse_combine=fuse_combine)
        err = check(f"quest decode {context}/{batch} {cfg}", ref_out, out)
        ms, _ = bench_ms(lambda: triton_quest_decode(q, k, v, lens, index, PAGE, out=out, pages_per_block=ppb,
                                                     num_warps=warps, num_stages=stages, num_splits=splits,
                                                     prefetch_index=prefetch, fuse_combine=fuse_combine), rep=30)
        if cfg[:4] == (8, 4, 3, 1):
            prefetch_gain[prefetch] = ms
        if best is None or ms < best[1]:
            best = (cfg, ms, err)
    cfg, _, err = best
    ppb, warps, stages, factor, prefetch = cfg
    splits = default_splits * factor

    def step():
        s = triton_quest_page_scores(q, page_min, page_max, lens, PAGE, True, **score_kw)
        i = triton_quest_select_pages(s, lens, PAGE, page_budget, num_warps=select_warps)
        return triton_quest_decode(q, k, v, lens, i, PAGE, out=out, pages_per_block=ppb, num_warps=warps,
                                   num_stages=stages, num_splits=splits, prefetch_index=prefetch,
                                   fuse_combine=fuse_combine)

    total_ms, mode = bench_ms(step)
    scores_ms, _ = bench_ms(lambda: triton_quest_page_scores(q, page_min, page_max, lens, PAGE, True, **score_kw))
    select_ms, _ = bench_ms(lambda: triton_quest_select_pages(scores, lens, PAGE, page_budget,
                                                              num_warps=select_warps))
    from sparse_attn.kernels.quest.triton import _topk_select_pages
    topk_select_ms, _ = bench_ms(lambda: _topk_select_pages(scores, lens, PAGE, page_budget))
    attn_ms, _ = bench_ms(lambda: triton_quest_decode(q, k, v, lens, index, PAGE, out=out, pages_per_block=ppb,
                                                      num_warps=warps, num_stages=stages, num_splits=splits,
                                                      prefetch_index=prefetch, fuse_combine=fuse_combine))

    # our dense split-K decode over the full cache (the same kernel family), checked against the reference
    full_lens = torch.full((batch, HKV), context, device=DEVICE, dtype=torch.int32)
    dense_out = torch.full_like(q, float("nan"))
    triton_decode(q, k, v, full_lens, out=dense_out)
    from sparse_attn.kernels.decode import naive_decode
    dense_err = check(f"dense decode {context}/{batch}", naive_decode(q, k, v, full_lens), dense_out)
    ours_dense_ms, _ = bench_ms(lambda: triton_decode(q, k, v, full_lens, out=dense_out))
    dense = dense_baselines(q, k, v, use_flex)

    element = k.element_size()
    pages_read = (index >= 0).sum().item()  # selected pages over all (b, kv head): all full pages here
    kv_bytes = pages_read * PAGE * D * 2 * element
    meta_bytes = 2 * batch * HKV * num_pages * D * element
    quest_bytes = kv_bytes + meta_bytes
    full_bytes = 2 * k.numel() * element
    row = {
        "table": "quest", "context": context, "batch": batch, "page_budget": page_budget, "mode": mode,
        "config": {"pages_per_block": ppb, "num_warps": warps, "num_stages": stages, "num_splits": splits,
                   "default_splits": default_splits, "prefetch_index": prefetch,
                   "fuse_combine": splits > 1 and (splits <= FUSE_MAX_SPLITS if fuse_combine is None else fuse_combine),
                   "scores": score_cfg, "select_warps": select_warps},
        "attn_ms_prefetch_vs_not": [prefetch_gain.get(True), prefetch_gain.get(False)],
        "topk_select_ms": topk_select_ms,
        "rel_rmse": err, "dense_rel_rmse": dense_err, "selection_agreement": agree,
        "total_ms": total_ms, "scores_ms": scores_ms, "select_ms": select_ms, "attn_ms": attn_ms,
        "bytes": quest_bytes, "kv_bytes": kv_bytes, "meta_bytes": meta_bytes,
        "ours_dense_ms": ours_dense_ms, "full_bytes": full_bytes,
        "cudnn_ms": dense["cudnn"][0], "flash_ms": dense["flash"][0], "flex_ms": dense["flex"][0],
        "ideal_speedup": full_bytes / quest_bytes,
    }
    row["gbps"] = quest_bytes / (total_ms * 1e-3) / 1e9
    row["attn_gbps"] = kv_bytes / (attn_ms * 1e-3) / 1e9
    row["ours_dense_gbps"] = full_bytes / (ours_dense_ms * 1e-3) / 1e9
    row["cudnn_gbps"] = full_bytes / (row["cudnn_ms"] * 1e-3) / 1e9
    for ceiling, value in bandwidth.items():
        row[f"pct_{ceiling}"] = 100 * row["gbps"] * 1e9 / value
        row[f"ours_dense_pct_{ceiling}"] = 100 * row["ours_dense_gbps"] * 1e9 / value
    results.append(row)


# -- compressed cache ----------------------------------------------------------------------------------------------
def ada_lens(batch: int, capacity: int) -> torch.Tensor:
    """Per-head lengths like Ada-SnapKV's: floor 20% of C per head, the rest spread unevenly; total C * Hkv."""
    weights = torch.rand(batch, HKV, device=DEVICE) ** 2 + 0.02
    extra = capacity * HKV * 0.8 * weights / weights.sum(dim=1, keepdim=True)
    lens = (int(capacity * 0.2) + extra).floor().to(torch.int32)
    lens[:, 0] += capacity * HKV - lens.sum(dim=1).to(torch.int32)  # exact total
    return lens


def bench_compressed(context: int, batch: int, dense_ms: dict, bandwidth: dict, results: list,
                     configs: list = DECODE_CONFIGS):
    from sparse_attn.kernels.decode import naive_decode
    from sparse_attn.kernels.decode.triton import choose_num_splits, triton_decode

    torch.manual_seed(7 * context + batch)
    capacity = context // 10
    q = torch.randn(batch, HQ, D, device=DEVICE, dtype=DTYPE)
    uniform_ms = None
    for method in ("snapkv", "ada_snapkv"):
        if method == "snapkv":
            lens = torch.full((batch, HKV), capacity, device=DEVICE, dtype=torch.int32)
        else:
            lens = ada_lens(batch, capacity)
        width = int(lens.max())
        k = torch.randn(batch, HKV, width, D, device=DEVICE, dtype=DTYPE)
        v = torch.randn_like(k)
        ref = naive_decode(q, k, v, lens)
        out = torch.empty_like(q)
        default_splits = choose_num_splits(batch * HKV, width, q.device)
        best = None
        for cfg in configs:
            block_n, warps, stages, factor = cfg
            splits = default_splits * factor
            out.fill_(float("nan"))
            triton_decode(q, k, v, lens, out=out, block_n=block_n, num_warps=warps, num_stages=stages,
                          num_splits=splits)
            err = check(f"{method} decode {context}/{batch} {cfg}", ref, out)
            ms, mode = bench_ms(lambda: triton_decode(q, k, v, lens, out=out, block_n=block_n, num_warps=warps,
                                                      num_stages=stages, num_splits=splits), rep=30)
            if best is None or ms < best[1]:
                best = (cfg, ms, err)
        cfg, _, err = best
        block_n, warps, stages, factor = cfg
        splits = default_splits * factor
        ms, mode = bench_ms(lambda: triton_decode(q, k, v, lens, out=out, block_n=block_n, num_warps=warps,
                                                  num_stages=stages, num_splits=splits))
        default_ms, _ = bench_ms(lambda: triton_decode(q, k, v, lens, out=out))  # as shipped (default launch)
        # the same best launch with the combine folded into the last split program (fuse_combine, atomic
        # ticket) instead of the second kernel (the default)
        out.fill_(float("nan"))
        triton_decode(q, k, v, lens, out=out, block_n=block_n, num_warps=warps, num_stages=stages,
                      num_splits=splits, fuse_combine=True)
        check(f"{method} decode {context}/{batch} fused combine", ref, out)
        fused_ms, _ = bench_ms(lambda: triton_decode(q, k, v, lens, out=out, block_n=block_n, num_warps=warps,
                                                     num_stages=stages, num_splits=splits, fuse_combine=True))
        default_fused_ms, _ = bench_ms(lambda: triton_decode(q, k, v, lens, out=out, fuse_combine=True))
        kept_bytes = int(lens.sum()) * D * 2 * k.element_size()
        row = {
            "table": "compressed", "method": method, "context": context, "batch": batch, "capacity": capacity,
            "max_head_len": width, "min_head_len": int(lens.min()), "mode": mode, "rel_rmse": err,
            "config": {"block_n": block_n, "num_warps": warps, "num_stages": stages, "num_splits": splits,
                       "default_splits": default_splits},
            "ms": ms, "default_ms": default_ms, "fused_combine_ms": fused_ms,
            "default_fused_combine_ms": default_fused_ms, "bytes": kept_bytes, "gbps": kept_bytes / (ms * 1e-3) / 1e9,
            "dense_cudnn_full_ms": dense_ms["cudnn"], "dense_flash_full_ms": dense_ms["flash"],
            "dense_flex_full_ms": dense_ms["flex"],
        }
        if method == "snapkv":
            q4 = q[:, :, None, :]

            def cudnn_uniform():
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)
            try:
                uniform_ms, _ = bench_ms(cudnn_uniform)
            except Exception as error:  # noqa: BLE001
                print(f"  cuDNN on the compressed cache unavailable: {type(error).__name__}: {str(error)[:120]}")
                uniform_ms = float("nan")
            row["snapkv_ours_ms"] = ms
        row["cudnn_same_cache_ms"] = uniform_ms
        for ceiling, value in bandwidth.items():
            row[f"pct_{ceiling}"] = 100 * row["gbps"] * 1e9 / value
            row[f"default_pct_{ceiling}"] = 100 * kept_bytes / (default_ms * 1e-3) / value
        results.append(row)


# -- compression overhead -------------------------------------------------------------------------------------------
def bench_compression(context: int, results: list, torch_scoring: bool, tune: bool = True, profile: bool = False,
                      profile_contexts: tuple = (), ada_allocations: tuple = ("topk",)):
    """`method.compress` (window scores + pooling + top-k + gather) at B = 1 vs dense cuDNN causal prefill.

    `ada_allocations`: the `AdaSnapKV.allocation` variants to time, one row each ("topk": keep_top + torch.topk over
    the flat remainder, the class default; "radix": `ada_cuts`' radix select); a non-default variant whose kept
    tokens differ from the reference is reported (kept identical = False) instead of aborting the run.

    Tunes the two window-kernel passes at this shape first (every candidate checked against the PyTorch
    reference scores), then times `compress` with the best ones, both as the integrations call it (CUDA
    `cu_seqlens`, read back once) and with host `seq_lens` (no sync), and its parts; the kept tokens are checked
    to be identical to the PyTorch reference selection (`reference_allocate`: full stable sorts).
    """
    from sparse_attn.kernels.decode import naive_window_importance
    from sparse_attn.kernels.decode import window_triton
    from sparse_attn.methods import AdaSnapKV, SnapKV
    from sparse_attn.methods._kv import pool_and_force

    torch.manual_seed(context)
    q = torch.randn(context, HQ, D, device=DEVICE, dtype=DTYPE)
    k = torch.randn(context, HKV, D, device=DEVICE, dtype=DTYPE)
    v = torch.randn_like(k)
    cu_seqlens = torch.tensor([0, context], device=DEVICE, dtype=torch.int32)
    qp, kp, vp = (x.transpose(0, 1)[None] for x in (q, k, v))  # [1, H, L, D]

    def prefill():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=True)
    prefill_ms, _ = bench_ms(prefill, use_graph=False, rep=300)

    window = 256
    q_window = q[context - window:].transpose(0, 1)  # [Hq, W, D]
    k_heads = k.transpose(0, 1)  # [Hkv, T, D]
    shipped = (window_triton.STATS_CONFIG, window_triton.SCORES_CONFIG)
    variants = [(SnapKV, None)] + [(AdaSnapKV, allocation) for allocation in ada_allocations]
    for cls, allocation in variants:
        method = cls(token_capacity=context // 10)
        if allocation is not None:
            method.allocation = allocation  # instance attribute: the class default stays untouched
        label = method.name if allocation in (None, AdaSnapKV.allocation) else f"{method.name}[{allocation}]"
        reduce = "max" if method.name == "ada_snapkv" else "mean_sum"
        ref = naive_window_importance(q_window, k_heads, reduce=reduce)
        # tune the two passes (the other one at its shipped config); each candidate checked first
        tuned = {}
        sweeps = (("stats", WINDOW_STATS_CONFIGS), ("scores", WINDOW_SCORES_CONFIGS)) if tune else \
            (("stats", [shipped[0]]), ("scores", [shipped[1]]))  # --quick: the shipped configs only
        for which, configs in sweeps:
            best = None
            for cfg in configs:
                kw = {"stats_config": cfg} if which == "stats" else {"scores_config": cfg}
                try:
                    out = window_triton.triton_window_importance(q_window, k_heads, reduce=reduce, **kw)
                except Exception as error:  # noqa: BLE001 - e.g. out of shared memory: report, skip the candidate
                    print(f"  window {which} {cfg}: {type(error).__name__}: {str(error)[:100]}")
                    continue
                check(f"window importance {method.name} {context} {which} {cfg}", ref, out)
                ms, _ = bench_ms(lambda: window_triton.triton_window_importance(q_window, k_heads, reduce=reduce,
                                                                               **kw), rep=50)
                if best is None or ms < best[1]:
                    best = (cfg, ms)
            tuned[which] = best[0]
        shipped_scores_ms, _ = bench_ms(lambda: window_triton.triton_window_importance(q_window, k_heads,
                                                                                      reduce=reduce))
        # from here on the module defaults are the tuned configs (what `compress` uses)
        window_triton.STATS_CONFIG, window_triton.SCORES_CONFIG = tuned["stats"], tuned["scores"]
        raw = window_triton.triton_window_importance(q_window, k_heads, reduce=reduce)
        err = check(f"window importance {method.name} {context} tuned", ref, raw)
        scores_ms, _ = bench_ms(lambda: window_triton.triton_window_importance(q_window, k_heads, reduce=reduce))
        importance_ms, _ = bench_ms(lambda: method.importance(q_window, k_heads))

        # the selection: identical to the reference (full stable sorts) on the method's own scores
        scores = method.importance(q_window, k_heads)
        try:
            kept = method._allocate(scores)
        except Exception as error:  # noqa: BLE001 - an opt-in variant that fails (e.g. compile) must not end the run
            if label == method.name:
                raise
            print(f"  !! {label} {context}: {type(error).__name__}: {str(error)[:300]} (row skipped)")
            window_triton.STATS_CONFIG, window_triton.SCORES_CONFIG = shipped
            continue
        ref_kept = method.reference_allocate(scores)
        identical = torch.equal(kept.index, ref_kept.index) and torch.equal(kept.lens, ref_kept.lens)
        if not identical:
            if label == method.name:  # the shipped path: never time a wrong selection
                raise AssertionError(f"{method.name} {context}: the kept tokens differ from reference_allocate")
            print(f"  !! {label} {context}: the kept tokens DIFFER from reference_allocate (timed anyway)")
        allocate_ms, _ = bench_ms(lambda: method._allocate(scores), use_graph=False)
        ref_allocate_ms, _ = bench_ms(lambda: method.reference_allocate(scores), use_graph=False)

        compressed = method.compress(q, k, v, cu_seqlens)
        kept_total = compressed.lens.sum().item()
        ms, mode = bench_ms(lambda: method.compress(q, k, v, cu_seqlens), use_graph=False, rep=200)
        host_ms, _ = bench_ms(lambda: method.compress(q, k, v, cu_seqlens, seq_lens=[context]), use_graph=False,
                              rep=200)
        # host issue time of one compress (host seq_lens) while the GPU is kept busy by a sleep kernel: the
        # Python + launch overhead alone (for Ada it includes waiting at its one sync, i.e. the GPU work before it)
        host_issue = []
        for _ in range(10):
            torch.cuda._sleep(50_000_000)  # tens of ms of GPU time: the queue never drains while issuing
            start = time.perf_counter()
            method.compress(q, k, v, cu_seqlens, seq_lens=[context])
            host_issue.append(1e3 * (time.perf_counter() - start))
            torch.cuda.synchronize()
        host_issue_ms = sorted(host_issue)[len(host_issue) // 2]
        if profile and context == min(profile_contexts):
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    method.compress(q, k, v, cu_seqlens, seq_lens=[context])
                torch.cuda.synchronize()
            print(f"  profile {label} {context} (5 eager compress calls, host seq_lens):")
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=22, max_name_column_width=60))
        graph_ms = float("nan")
        if method.name == "snapkv":  # no host sync with host seq_lens: the whole compress fits in a CUDA graph
            graph_ms, _ = bench_ms(lambda: method.compress(q, k, v, cu_seqlens, seq_lens=[context]), rep=200)
        row = {
            "table": "compression", "method": label, "context": context, "capacity": context // 10,
            "kept_tokens": kept_total, "compress_ms": ms, "compress_host_lens_ms": host_ms,
            "compress_graph_ms": graph_ms, "host_issue_ms": host_issue_ms, "prefill_cudnn_ms": prefill_ms,
            "mode": mode,
            "pct_of_prefill": 100 * ms / prefill_ms, "pct_host_lens": 100 * host_ms / prefill_ms,
            "triton_scores_ms": scores_ms, "shipped_scores_ms": shipped_scores_ms, "importance_ms": importance_ms,
            "triton_scores_rel_rmse": err, "window_configs": {"stats": tuned["stats"], "scores": tuned["scores"]},
            "shipped_window_configs": {"stats": shipped[0], "scores": shipped[1]},
            "allocate_ms": allocate_ms, "reference_allocate_ms": ref_allocate_ms, "kept_identical": identical,
        }
        if torch_scoring:
            # the same compress with the PyTorch reference scoring plugged into an instance (the old path)
            def torch_importance(q_window, k, scale=None, method=method, reduce=reduce):
                raw = naive_window_importance(q_window, k, scale, reduce=reduce)
                return pool_and_force(raw, method.kernel_size, method.local_window, method.prefix_tokens)
            torch_method = cls(token_capacity=context // 10)
            object.__setattr__(torch_method, "importance", torch_importance)
            torch_compressed = torch_method.compress(q, k, v, cu_seqlens)
            row["kept_overlap_vs_torch_scoring"] = _kept_overlap(compressed.index, compressed.lens,
                                                                 torch_compressed.index, torch_compressed.lens)
            row["torch_compress_ms"], _ = bench_ms(lambda: torch_method.compress(q, k, v, cu_seqlens),
                                                   use_graph=False, rep=200)
        window_triton.STATS_CONFIG, window_triton.SCORES_CONFIG = shipped  # next method tunes from scratch
        print(f"  compression {label} {context}: {ms:.3f} ms ({row['pct_of_prefill']:.2f}% of prefill "
              f"{prefill_ms:.2f} ms), scores {scores_ms:.3f} (shipped cfg {shipped_scores_ms:.3f}), allocate "
              f"{allocate_ms:.3f} (reference {ref_allocate_ms:.3f}), tuned {tuned}", flush=True)
        results.append(row)


def _kept_overlap(index_a, lens_a, index_b, lens_b) -> float:
    """Fraction of kept (head, position) pairs two compressions share."""
    def pairs(index, lens):
        valid = torch.arange(index.shape[-1], device=index.device) < lens[..., None]
        heads = torch.arange(index.shape[1], device=index.device)[None, :, None].expand_as(index)
        return set(zip(heads[valid].tolist(), index[valid].tolist()))
    a, b = pairs(index_a, lens_a), pairs(index_b, lens_b)
    return len(a & b) / max(len(a), 1)


# -- report ---------------------------------------------------------------------------------------------------------
def fmt(x, digits=3):
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


def times(numerator, denominator):
    """Speed-up `numerator / denominator` as '2.31x' (n/a when a baseline is missing)."""
    return fmt(numerator / denominator, 2) + "x" if numerator == numerator else "n/a"


def print_tables(results: list, header: dict):
    print("\n" + " | ".join(f"{k}: {v}" for k, v in header.items()))
    print("\n### Quest (page 16, budget 10%, share_pages) vs dense decode over the full cache")
    print("| ctx | B | step ms | scores / select (torch.topk) / attn ms | GB/s (pages+meta) | % spec | % copy | "
          "vs cuDNN | vs flash | vs Flex | vs ours-dense | ideal | ours-dense ms (% spec) | cuDNN ms | rel RMSE | "
          "config |")
    print("|" + "---|" * 16)
    for r in (r for r in results if r["table"] == "quest"):
        print(f"| {r['context'] // 1024}K | {r['batch']} | {fmt(r['total_ms'])} | {fmt(r['scores_ms'])} / "
              f"{fmt(r['select_ms'])} ({fmt(r['topk_select_ms'])}) / {fmt(r['attn_ms'])} | {fmt(r['gbps'], 0)} | "
              f"{fmt(r['pct_spec'], 1)} | "
              f"{fmt(r['pct_copy'], 1)} | {times(r['cudnn_ms'], r['total_ms'])} | "
              f"{times(r['flash_ms'], r['total_ms'])} | {times(r['flex_ms'], r['total_ms'])} | "
              f"{times(r['ours_dense_ms'], r['total_ms'])} | {fmt(r['ideal_speedup'], 2)}x | "
              f"{fmt(r['ours_dense_ms'])} ({fmt(r['ours_dense_pct_spec'], 1)}) | {fmt(r['cudnn_ms'])} | "
              f"{r['rel_rmse']:.1e} | {r['config']} {r['mode']} |")
    print("\n### Compressed-cache decode (capacity 10% of the context per KV head)")
    print("| ctx | B | method | head lens min..max | ms | GB/s (kept) | % spec | % copy | default launch ms "
          "(% spec) | fused-combine ms (default launch) | vs cuDNN same cache | vs cuDNN full ctx | vs flash full | "
          "vs Flex full | rel RMSE | config |")
    print("|" + "---|" * 16)
    for r in (r for r in results if r["table"] == "compressed"):
        print(f"| {r['context'] // 1024}K | {r['batch']} | {r['method']} | {r['min_head_len']}..{r['max_head_len']} "
              f"| {fmt(r['ms'])} | {fmt(r['gbps'], 0)} | {fmt(r['pct_spec'], 1)} | {fmt(r['pct_copy'], 1)} | "
              f"{fmt(r['default_ms'])} ({fmt(r['default_pct_spec'], 1)}) | "
              f"{fmt(r['fused_combine_ms'])} ({fmt(r['default_fused_combine_ms'])}) | "
              f"{times(r['cudnn_same_cache_ms'], r['ms'])} | {times(r['dense_cudnn_full_ms'], r['ms'])} | "
              f"{times(r['dense_flash_full_ms'], r['ms'])} | {times(r['dense_flex_full_ms'], r['ms'])} | "
              f"{r['rel_rmse']:.1e} | {r['config']} {r['mode']} |")
    print("\n### Compression overhead (method.compress: window scores + pooling + top-k + gather), B = 1")
    print("| ctx | method | capacity | compress ms | % of prefill | compress ms, host seq_lens (% of prefill) | "
          "CUDA graph ms | host issue ms | window scores ms (shipped cfg) | importance ms (scores + pool) | "
          "allocate ms (reference) | kept identical | dense cuDNN prefill ms | tuned window configs |")
    print("|" + "---|" * 14)
    for r in (r for r in results if r["table"] == "compression"):
        print(f"| {r['context'] // 1024}K | {r['method']} | {r['capacity']} | {fmt(r['compress_ms'])} | "
              f"{fmt(r['pct_of_prefill'], 2)} | {fmt(r['compress_host_lens_ms'])} ({fmt(r['pct_host_lens'], 2)}) | "
              f"{fmt(r['compress_graph_ms'])} | {fmt(r['host_issue_ms'])} | {fmt(r['triton_scores_ms'])} "
              f"({fmt(r['shipped_scores_ms'])}) | "
              f"{fmt(r['importance_ms'])} | {fmt(r['allocate_ms'])} ({fmt(r['reference_allocate_ms'])}) | "
              f"{r['kept_identical']} | {fmt(r['prefill_cudnn_ms'])} | {r['window_configs']} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[16384, 32768, 65536, 131072])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--compression-contexts", type=int, nargs="+", default=[32768, 65536, 131072])
    parser.add_argument("--no-flex", action="store_true", help="skip the FlexAttention baseline (compiles)")
    parser.add_argument("--tables", nargs="+", default=["quest", "compressed", "compression"],
                        choices=["quest", "compressed", "compression"], help="which tables to run")
    parser.add_argument("--torch-scoring", action="store_true",
                        help="also time compress with the PyTorch reference scoring (slow, materialises probs)")
    parser.add_argument("--quick", action="store_true",
                        help="shipped window configs only and a 6-config decode sweep (fits a short device call)")
    parser.add_argument("--profile", action="store_true",
                        help="print a torch.profiler table of eager compress at the smallest compression context")
    parser.add_argument("--ada-allocations", nargs="+", default=["radix"], choices=["topk", "radix"],
                        help="AdaSnapKV.allocation variants to time in the compression table (one row each)")
    parser.add_argument("--quest-combine", default="auto", choices=["auto", "fused", "separate"],
                        help="Quest decode: the library's choice (auto: merged in the split kernel up to "
                        "FUSE_MAX_SPLITS splits, a second launch beyond), always in the split kernel, or always in a "
                        "second launch")
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "bench_decode.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_decode.py needs a CUDA GPU")
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET (or set it to 0): the benchmark times compiled kernels")

    name = torch.cuda.get_device_name()
    spec = next((value for key, value in SPEC_BANDWIDTH.items() if key in name), float("nan"))
    copy = measured_copy_bandwidth()
    bandwidth = {"spec": spec, "copy": copy}
    header = {
        "device": name, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__, "triton": triton.__version__, "cudnn": torch.backends.cudnn.version(),
        "spec TB/s": fmt(spec / 1e12, 2), "measured copy TB/s (r+w)": fmt(copy / 1e12, 2),
    }
    print(header, flush=True)
    results = []
    started = time.time()
    for context in args.contexts if {"quest", "compressed"} & set(args.tables) else []:
        for batch in args.batches:
            if "quest" in args.tables:
                fuse = {"auto": None, "fused": True, "separate": False}[args.quest_combine]
                bench_quest(context, batch, not args.no_flex, bandwidth, results, fuse)
                torch.cuda.empty_cache()
                quest = results[-1]
                dense = {"cudnn": quest["cudnn_ms"], "flash": quest["flash_ms"], "flex": quest["flex_ms"]}
            else:  # the dense baselines on their own
                k_full = torch.randn(batch, HKV, context, D, device=DEVICE, dtype=DTYPE)
                times_full = dense_baselines(torch.randn(batch, HQ, D, device=DEVICE, dtype=DTYPE), k_full,
                                             torch.randn_like(k_full), not args.no_flex)
                dense = {name: value[0] for name, value in times_full.items()}
                del k_full
                torch.cuda.empty_cache()
            if "compressed" in args.tables:
                bench_compressed(context, batch, dense, bandwidth, results,
                                 QUICK_DECODE_CONFIGS if args.quick else DECODE_CONFIGS)
                torch.cuda.empty_cache()
            print(f"  done {context}/{batch} ({time.time() - started:.0f} s): cuDNN dense {dense['cudnn']:.4f} ms",
                  flush=True)
    for context in args.compression_contexts if "compression" in args.tables else []:
        bench_compression(context, results, args.torch_scoring, tune=not args.quick, profile=args.profile,
                          profile_contexts=tuple(args.compression_contexts),
                          ada_allocations=tuple(args.ada_allocations))
        torch.cuda.empty_cache()
    with open(args.json, "w") as handle:
        json.dump({"header": header, "results": results}, handle, indent=1, default=str)
    print_tables(results, header)


if __name__ == "__main__":
    main()
