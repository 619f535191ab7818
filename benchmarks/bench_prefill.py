"""Prefill kernel benchmark: one table per method at 16K-128K, Llama-3.1-8B heads (32 q, 8 kv, hd 128, bf16, B=1).

For every method and length it first checks correctness at the benchmark shape (output poisoned with NaN before
the run, every element must be written; relative RMSE against an fp32 reference on sampled query rows, bf16 bound
5e-3), then times with `triton.testing.do_bench` (median) and prints:
  ms, TFLOP/s on the computed blocks, x vs SDPA cuDNN, SDPA flash and FlexAttention (dense causal, and for
  block_sparse FlexAttention compiled with the SAME block mask), and the estimation / index time on its own.

Methods:
  dense          our varlen dense path (kernels/dense.py) vs SDPA cuDNN called directly.
  block_sparse_defaults  the method's defaults (chunk 16, top 64) as `attn_implementation="block_sparse"` runs
                 them: library selection + small-chunk gather kernel, random and structured inputs, vs
                 FlexAttention with the same chunk pairs (128x128 tiles + a chunk lookup mask_mod).
  block_sparse   ~10% and ~3.5% of the causal blocks (diagonal block + ceil(p * i) random earlier blocks per query
                 block i, per head, like the anchor in performance-anchors.md section 3.1), chunk 128 (and 64).
                 Estimation = the method's selection (pooled scores, block-causal mask, forced blocks, top-k).
  vertical_slash reference defaults (vertical 512, slash 512, last 256 queries): last-window sums (Triton) ->
                 forced sinks / local diagonals -> top-k -> Triton index builder -> Triton VS attention.
  flexprefill    reference defaults (alpha 0.65, last 512 queries, min_budget 512): same pipeline with coverage
                 budgets per head.
Inputs: random bf16 for block_sparse / dense; for vertical_slash / flexprefill "structured" q/k (RoPE'd shared
direction per KV head + noise, 4 sink keys, 0.2% heavy keys) so that attention is concentrated as in a real model
(on pure noise the coverage budgets of FlexPrefill select ~65% of all keys); `--vs-inputs random` gives the worst
case. Usage: python benchmarks/bench_prefill.py [--lengths 16384 ...] [--methods ...] [--json out.json]
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

from sparse_attn.kernels.dense import dense_attention
from sparse_attn.kernels.estimation.triton import triton_last_window_sums, triton_pooled_block_scores
from sparse_attn.kernels.vertical_slash.triton import (triton_build_vertical_slash_index,
                                                       triton_vertical_slash_attention)

HQ, HKV, D = 32, 8, 128
DTYPE = torch.bfloat16
DEV = "cuda"
RMSE_BOUND = 5e-3
TUNED = {}  # filled from --tuned: {"bs_launch_128": [cfg, ms], "bs_launch_64": [...], "est_blocks": [...]}


def bs_launch(chunk):
    return tuple(TUNED[f"bs_launch_{chunk}"][0]) if f"bs_launch_{chunk}" in TUNED else None


SUMS_VARIANT = {"name": None}  # --sums-variant: the last-window sums pass the VS / FlexPrefill rows time (None: library)


def window_sums(q, k, cu, window):
    blocks = tuple(TUNED["est_blocks"]) if "est_blocks" in TUNED else None
    return triton_last_window_sums(q, k, cu, window, blocks=blocks, variant=SUMS_VARIANT["name"] or "auto")


def bench(fn, rep=100):
    return do_bench(fn, warmup=25, rep=rep, return_mode="median")


# ----------------------------------------------------------------------------------------------------------- inputs
def random_qkv(length, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    q = torch.randn(length, HQ, D, device=DEV, dtype=DTYPE, generator=g)
    k = torch.randn(length, HKV, D, device=DEV, dtype=DTYPE, generator=g)
    v = torch.randn(length, HKV, D, device=DEV, dtype=DTYPE, generator=g)
    return q, k, v


def _rope(x, positions, base=500000.0):
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angle = positions[:, None].float() * freqs[None, :]
    cos, sin = angle.cos()[:, None, :], angle.sin()[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def structured_qkv(length, seed=0):
    """q/k with LLM-like attention: decay with distance (RoPE), sinks, a few heavy keys; v random."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    pos = torch.arange(length, device=DEV)
    u = torch.randn(HKV, D, device=DEV, generator=g)  # shared direction of each KV group
    w = torch.randn(HKV, D, device=DEV, generator=g)  # position-free "sink" direction
    q = _rope(u.repeat_interleave(HQ // HKV, 0)[None] + torch.randn(length, HQ, D, device=DEV, generator=g), pos)
    q = q + 0.8 * w.repeat_interleave(HQ // HKV, 0)[None]
    k = _rope(u[None] + torch.randn(length, HKV, D, device=DEV, generator=g), pos)
    heavy = torch.rand(length, device=DEV, generator=g) < 0.002
    heavy[:4] = True
    k = k + heavy[:, None, None] * 1.2 * w[None]
    v = torch.randn(length, HKV, D, device=DEV, generator=g)
    return q.to(DTYPE), k.to(DTYPE), v.to(DTYPE)


# ------------------------------------------------------------------------------------------------------- references
def reference_rows(q, k, v, rows, allowed_fn, scale):
    """fp32 attention for the given query rows [R] of a single sample; allowed_fn(h, rows) -> bool [R, L]."""
    out = torch.empty(len(rows), HQ, D, device=DEV, dtype=torch.float32)
    group = HQ // HKV
    for h in range(HQ):
        s = (q[rows, h].float() @ k[:, h // group].float().T) * scale
        s = s.masked_fill(~allowed_fn(h, rows), float("-inf"))
        out[:, h] = torch.softmax(s, -1) @ v[:, h // group].float()
    return out


def sample_rows(length, n=384, seed=1):
    g = torch.Generator(device=DEV).manual_seed(seed)
    rows = torch.cat([torch.arange(64, device=DEV), torch.arange(length - 128, length, device=DEV),
                      torch.randint(0, length, (n - 192,), device=DEV, generator=g)])
    return rows.unique()


def check(name, out, q, k, v, rows, allowed_fn):
    written = not bool(out.isnan().any())
    ref = reference_rows(q, k, v, rows, allowed_fn, D ** -0.5)
    got = out[rows].float()
    rmse = float((got - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
    ok = written and rmse <= RMSE_BOUND
    print(f"  check {name}: every element written={written} rel-RMSE={rmse:.2e} on {len(rows)} rows "
          f"-> {'OK' if ok else 'FAIL'}", flush=True)
    return ok, rmse


# ---------------------------------------------------------------------------------------------------------- dense
def dense_baselines(q, k, v, flex_dense):
    qb, kb, vb = (t.transpose(0, 1).unsqueeze(0).contiguous() for t in (q, k, v))  # [1, H, L, D] as the anchors
    res = {}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        with sdpa_kernel(backend):
            res[name] = bench(lambda: F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=True))
    res["flex"] = bench(lambda: flex_dense(qb, kb, vb))
    # the same cuDNN call on the packed [L, H, D] tensors as views (what our dense path receives)
    qv, kv, vv = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        res["cudnn_packed"] = bench(lambda: F.scaled_dot_product_attention(qv, kv, vv, is_causal=True,
                                                                           enable_gqa=True))
    return res


# --------------------------------------------------------------------------------------------------- block sparse
def random_block_index(length, chunk, p, seed=0):
    """Per head and query block i: block i (diagonal) + ceil(p * i) random earlier blocks. -> index, count."""
    n = -(-length // chunk)
    g = torch.Generator(device=DEV).manual_seed(seed)
    r = torch.arange(n, device=DEV)
    n_lower = (r.float() * p).ceil().long().clamp(max=r)
    score = torch.rand(HQ, n, n, device=DEV, generator=g)
    score = score.masked_fill(r[None, :] >= r[:, None], -1.0)  # strictly lower only
    rank = score.argsort(-1, descending=True).argsort(-1)
    chosen = (rank < n_lower[:, None]) & (score >= 0)
    chosen |= torch.eye(n, dtype=torch.bool, device=DEV)[None]
    count = chosen.sum(-1).to(torch.int32)
    max_k = int(count.max())
    ids = torch.where(chosen, r[None, None, :], n)
    index = ids.sort(-1).values[..., :max_k]
    index = torch.where(index == n, -1, index).to(torch.int32)
    return index[None].contiguous(), count[None].contiguous(), chosen


def flex_block_mask(chosen, chunk, length):
    """BlockMask with exactly the blocks of `chosen` [H, n, n]: diagonal blocks partial (causal mask_mod), the
    others full (built from kv blocks like the anchors: create_block_mask would materialise L x L at 128K)."""
    from torch.nn.attention.flex_attention import BlockMask
    heads, n = chosen.shape[0], chosen.shape[-1]
    r = torch.arange(n, device=DEV)
    full = chosen & (r[None, :] < r[:, None])  # strictly lower blocks: no mask_mod needed
    full_num = full.sum(-1).to(torch.int32)
    full_idx = (~full).int().argsort(dim=-1, stable=True).to(torch.int32)
    kv_num = torch.ones(heads, n, device=DEV, dtype=torch.int32)
    kv_idx = torch.zeros(heads, n, n, device=DEV, dtype=torch.int32)
    kv_idx[..., 0] = r.to(torch.int32)
    return BlockMask.from_kv_blocks(kv_num[None], kv_idx[None], full_num[None], full_idx[None], BLOCK_SIZE=chunk,
                                    mask_mod=lambda b, h, qi, ki: qi >= ki, seq_lengths=(length, length))


def block_sparse_selection(q, k, cu, chunk, top_chunks):
    """The method's selection on the device: pooled scores, block-causal mask, forced sink/diag/sub-diag, top-k."""
    scores = triton_pooled_block_scores(q, k, cu, chunk)[0]  # [H, n, n]
    n = scores.shape[-1]
    r = torch.arange(n, device=DEV)
    scores = scores.masked_fill(r[None, :] > r[:, None], float("-inf"))
    forced = (r[None, :] == r[:, None]) | (r[None, :] == r[:, None] - 1) | (r[None, :] == 0)
    scores = scores.masked_fill(forced[None], float("inf"))
    top = torch.topk(scores, min(top_chunks, n), dim=-1).indices
    return top.sort(-1).values


def triton_block_sparse_attention(*args, **kwargs):
    """Imported on first use, so the vertical-slash runs do not depend on the block-sparse module."""
    from sparse_attn.kernels.block_sparse.triton import triton_block_sparse_attention as kernel
    return kernel(*args, **kwargs)


def run_block_sparse(length, q, k, v, cu, dense, flex, results, chunks=(128, 64)):
    rows = sample_rows(length)
    for chunk in chunks:
        for p in (0.10, 0.035):
            index, count, chosen = random_block_index(length, chunk, p)
            n = chosen.shape[-1]
            n_causal = n * (n + 1) // 2
            density = float(count.sum()) / (HQ * n_causal)
            out = torch.full_like(q, float("nan"))
            # max_seqlen as the library method passes it (host lengths): no device -> host read per call
            triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, launch=bs_launch(chunk),
                                          max_seqlen=length)

            def allowed(h, rr, chosen=chosen, chunk=chunk):
                kpos = torch.arange(length, device=DEV)
                return chosen[h][rr // chunk][:, kpos // chunk] & (kpos[None, :] <= rr[:, None])
            ok, rmse = check(f"block_sparse chunk={chunk} p={p}", out, q, k, v, rows, allowed)
            ms = bench(lambda: triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out,
                                                             launch=bs_launch(chunk), max_seqlen=length))
            flops = float(count.sum()) * 4 * chunk * chunk * D
            row = dict(method="block_sparse", L=length, chunk=chunk, p=p, density=density, ms=ms,
                       tflops=flops / ms / 1e9, x_cudnn=dense["cudnn"] / ms, x_flash=dense["flash"] / ms,
                       x_flex_dense=dense["flex"] / ms, ok=ok, rmse=rmse)
            if chunk == 128:
                mask = flex_block_mask(chosen, chunk, length)
                qb, kb, vb = (t.transpose(0, 1).unsqueeze(0).contiguous() for t in (q, k, v))
                row["flex_same_mask_ms"] = bench(lambda: flex(qb, kb, vb, block_mask=mask))
                row["x_flex_same_mask"] = row["flex_same_mask_ms"] / ms
            top = max(3, round(density * n / 2))
            row["est_ms"] = bench(lambda: block_sparse_selection(q, k, cu, chunk, top), rep=50)
            results.append(row)
            print("  " + json.dumps({a: (round(b, 4) if isinstance(b, float) else b) for a, b in row.items()}),
                  flush=True)


def flex_chunk_mask(index, count, chunk, length):
    """FlexAttention with exactly the chosen (query chunk, key chunk) pairs of a small-chunk selection, causal: a
    BlockMask of the 128x128 tiles any chosen pair touches (all partial: Flex cannot express 16x16 blocks), and a
    mask_mod that looks the chunk pair up. Returns (block_mask, pairs Flex computes)."""
    from torch.nn.attention.flex_attention import BlockMask
    heads, n = index.shape[1], index.shape[2]
    chosen = torch.zeros(heads, n, n + 1, dtype=torch.bool, device=DEV)
    slots = torch.arange(index.shape[-1], device=DEV)
    chosen.scatter_(-1, torch.where(slots < count[0][..., None], index[0], n).long(), True)
    chosen = chosen[..., :n].contiguous()
    r = 128 // chunk
    n128 = -(-n // r)
    pad = n128 * r - n
    tiles = F.pad(chosen, (0, pad, 0, pad)).view(heads, n128, r, n128, r).any(4).any(2)
    kv_num = tiles.sum(-1).to(torch.int32)
    kv_idx = (~tiles).int().argsort(dim=-1, stable=True).to(torch.int32)
    mask = BlockMask.from_kv_blocks(kv_num[None], kv_idx[None], BLOCK_SIZE=128,
                                    mask_mod=lambda b, h, qi, ki: chosen[h, qi // chunk, ki // chunk] & (qi >= ki),
                                    seq_lengths=(length, length))
    return mask, float(kv_num.sum()) * 128 * 128


def run_block_sparse_defaults(length, inputs, q, k, v, cu, dense, flex, results):
    """block_sparse at the method defaults (chunk 16, top 64): what `attn_implementation="block_sparse"` runs. The
    library path timed in pieces: `BlockSparse().select` (pooled scores, rules and the Triton row top-k) and
    `block_sparse_attention` over its index (the small-chunk gather kernel), plus FlexAttention with the same
    chunk pairs."""
    from sparse_attn.kernels.block_sparse import block_sparse_attention
    from sparse_attn.methods.block_sparse import BlockSparse
    config = BlockSparse()
    chunk = config.chunk_size
    selection = config.select(q, k, cu, backend="triton", seq_lens=[length])
    index, count = selection.block_index, selection.block_count
    out = torch.full_like(q, float("nan"))
    attention = lambda: block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, backend="triton",  # noqa
                                               max_seqlen=length)
    attention()

    def allowed(h, rr):
        kept = torch.zeros(len(rr), index.shape[2] + 1, dtype=torch.bool, device=DEV)
        slots = torch.arange(index.shape[-1], device=DEV)[None]
        picks = index[0, h, rr // chunk].long()
        kept.scatter_(1, torch.where(slots < count[0, h, rr // chunk][:, None], picks, index.shape[2]), True)
        kpos = torch.arange(length, device=DEV)
        return kept[:, kpos // chunk] & (kpos[None, :] <= rr[:, None])
    ok, rmse = check(f"block_sparse defaults L={length} {inputs}", out, q, k, v, sample_rows(length), allowed)
    sel_ms = bench(lambda: config.select(q, k, cu, backend="triton", seq_lens=[length]), rep=50)
    ms = bench(attention)
    pairs = float(selection.pair_counts().sum())
    total = sel_ms + ms
    density = pairs / (HQ * length * (length + 1) / 2)
    row = dict(method="block_sparse_defaults", inputs=inputs, L=length, density=density, ms=ms,
               tflops=pairs * 4 * D / ms / 1e9, est_select_ms=sel_ms, total_ms=total,
               x_cudnn_total=dense["cudnn"] / total, x_flash_total=dense["flash"] / total, ok=ok, rmse=rmse)
    mask, flex_pairs = flex_chunk_mask(index, count, chunk, length)
    row["flex_density"] = flex_pairs / (HQ * length * (length + 1) / 2)  # pairs of the 128-tiles Flex visits
    qb, kb, vb = (t.transpose(0, 1).unsqueeze(0).contiguous() for t in (q, k, v))
    row["flex_same_mask_ms"] = bench(lambda: flex(qb, kb, vb, block_mask=mask))
    row["x_flex_same_mask"] = row["flex_same_mask_ms"] / ms
    results.append(row)
    print("  " + json.dumps({a: (round(b, 4) if isinstance(b, float) else b) for a, b in row.items()}), flush=True)


# ------------------------------------------------------------------------------------------ vertical-slash family
def select_vertical_slash(q, k, cu, length, method):
    """Estimation -> forced sinks / local window -> budgets -> sorted indices (all on the device). Returns dict."""
    window = 256 if method == "vertical_slash" else 512
    vert, slash = window_sums(q, k, cu, window)
    vert, slash = vert[0], slash[0]  # [H, L]
    if method == "vertical_slash":
        nv = torch.full((HQ,), min(512, length), device=DEV, dtype=torch.int64)
        ns = torch.full((HQ,), min(512, length), device=DEV, dtype=torch.int64)
    else:
        alpha, floor = 0.65, 512
        def budget(scores):
            mass = scores / window
            cum = mass.sort(-1, descending=True).values.cumsum(-1)
            return ((cum <= alpha).sum(-1) + 1).clamp(min=floor, max=length)
        nv, ns = budget(vert), budget(slash)
    vert[:, :4] = float("inf")
    slash[:, :64] = float("inf")
    kv, ks = int(nv.max()), int(ns.max())
    v_idx = torch.topk(vert, kv, dim=-1).indices
    s_idx = torch.topk(slash, ks, dim=-1).indices
    # keep each head's own budget: drop the slots past its count, then sort (verticals up, offsets down)
    slot_v = torch.arange(kv, device=DEV)[None] < nv[:, None]
    slot_s = torch.arange(ks, device=DEV)[None] < ns[:, None]
    v_idx = torch.where(slot_v, v_idx, length).sort(-1).values
    s_idx = torch.where(slot_s, s_idx, -1).sort(-1, descending=True).values
    v_idx = torch.where(v_idx == length, -1, v_idx).to(torch.int32)[None].contiguous()
    s_idx = s_idx.to(torch.int32)[None].contiguous()
    return v_idx, nv.to(torch.int32)[None].contiguous(), s_idx, ns.to(torch.int32)[None].contiguous()


def library_method(method):
    """The library's method object with the reference defaults (what the integrations run)."""
    from sparse_attn.methods.flexprefill import FlexPrefill
    from sparse_attn.methods.vertical_slash import VerticalSlash
    return VerticalSlash() if method == "vertical_slash" else FlexPrefill()


def run_vertical_slash(method, length, q, k, v, cu, dense, results):
    """The library path, timed in pieces: `select` (estimation + selection + index, as the integrations call it,
    with the host-known length: `seq_lens=[length]`, so cu_seqlens is never read back) and the mixed attention over
    its index (the library's default kernel path)."""
    from sparse_attn.kernels.estimation import last_window_sums
    rows = sample_rows(length)
    config = library_method(method)
    if SUMS_VARIANT["name"] is not None:  # --sums-variant: time another last-window sums pass in the library path
        import sparse_attn.kernels.estimation.triton as est
        est.DEFAULT_VARIANT = SUMS_VARIANT["name"]
    selection = config.select(q, k, cu, backend="triton", seq_lens=[length])
    index = (selection.block_count, selection.block_offset, selection.column_count, selection.column_index)
    bc, bo, cc, ci = index
    out = torch.full_like(q, float("nan"))
    triton_vertical_slash_attention(q, k, v, cu, *index, out=out, max_seqlen_hint=length)

    def allowed(h, rr):
        r = rr // 64
        nb, ncol = int(bc[0, h, r].max()), int(cc[0, h, r].max())
        block_keys = bo[0, h, r, :nb].long()[..., None] + torch.arange(64, device=DEV)  # [R, nb, 64]
        block_ok = (torch.arange(nb, device=DEV)[None] < bc[0, h, r][:, None].long())[..., None] & \
            (block_keys >= 0) & (block_keys < length)
        keys = torch.cat([block_keys.flatten(1), ci[0, h, r, :ncol].long()], 1)
        keys_ok = torch.cat([block_ok.flatten(1), torch.arange(ncol, device=DEV)[None] < cc[0, h, r][:, None]], 1)
        m = torch.zeros(len(rr), length + 1, dtype=torch.bool, device=DEV)
        m.scatter_(1, torch.where(keys_ok, keys, length), True)
        return m[:, :length] & (torch.arange(length, device=DEV)[None, :] <= rr[:, None])
    ok, rmse = check(f"{method} L={length}", out, q, k, v, rows, allowed)

    window = config.approximation_size
    est_ms = bench(lambda: last_window_sums(q, k, cu, window, backend="triton", max_len=length), rep=50)
    # includes the index; host lengths as the integrations pass them (no cu_seqlens read-back before the launches)
    sel_ms = bench(lambda: config.select(q, k, cu, backend="triton", seq_lens=[length]), rep=50)
    pattern = (selection.vertical_idx, selection.vertical_count, selection.slash_offsets, selection.slash_count)
    idx_ms = bench(lambda: triton_build_vertical_slash_index(cu, *pattern, max_len=length), rep=50)
    ms = bench(lambda: triton_vertical_slash_attention(q, k, v, cu, *index, out=out, max_seqlen_hint=length))
    n_rows = bc.shape[-1]
    blocks, cols = float(bc.sum()), float(cc.sum())
    flops = (blocks * 64 * 64 + cols * 64) * 4 * D
    pairs = float(selection.pair_counts().sum())
    density = pairs / (HQ * length * (length + 1) / 2)
    total = sel_ms + ms
    row = dict(method=method, sums_variant=SUMS_VARIANT["name"] or "library", L=length, density=density,
               nv_mean=float(selection.vertical_count.float().mean()),
               ns_mean=float(selection.slash_count.float().mean()), ms=ms, tflops=flops / ms / 1e9,
               est_sums_ms=est_ms, est_select_ms=sel_ms, index_ms=idx_ms, overhead_pct=100 * sel_ms / ms,
               total_ms=total, x_cudnn_total=dense["cudnn"] / total, x_flash_total=dense["flash"] / total,
               x_flex_dense_total=dense["flex"] / total, ok=ok, rmse=rmse, n_rows=n_rows)
    results.append(row)
    print("  " + json.dumps({a: (round(b, 4) if isinstance(b, float) else b) for a, b in row.items()}), flush=True)


def run_dense(length, q, k, v, cu, dense, results):
    rows = sample_rows(length, n=256)
    out = dense_attention(q, k, v, cu)
    ok, rmse = check(f"dense L={length}", out, q, k, v, rows,
                     lambda h, rr: torch.arange(length, device=DEV)[None, :] <= rr[:, None])
    # Interleave ours and SDPA cuDNN (same packed views) three times and keep each one's best median, so clock /
    # temperature drift over the run does not favour whichever ran first.
    qv, kv, vv = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
    ours, theirs = [], []
    for _ in range(3):
        ours.append(bench(lambda: dense_attention(q, k, v, cu)))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            theirs.append(bench(lambda: F.scaled_dot_product_attention(qv, kv, vv, is_causal=True, enable_gqa=True)))
    ms = min(ours)
    dense = dict(dense, cudnn_packed=min(theirs))
    flops = 2 * HQ * length * length * D
    row = dict(method="dense", L=length, ms=ms, tflops=flops / ms / 1e9, cudnn_ms=dense["cudnn"],
               cudnn_packed_ms=dense["cudnn_packed"], x_cudnn_packed=dense["cudnn_packed"] / ms,
               flash_ms=dense["flash"], flex_ms=dense["flex"], x_cudnn=dense["cudnn"] / ms, ok=ok, rmse=rmse)
    results.append(row)
    print("  " + json.dumps({a: (round(b, 4) if isinstance(b, float) else b) for a, b in row.items()}), flush=True)


# ---------------------------------------------------------------------------------------------------------- tables
def print_tables(results):
    def table(title, header, rows):
        print(f"\n### {title}\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    f = lambda x, n=2: "-" if x is None else f"{x:.{n}f}"
    dense_rows = [r for r in results if r["method"] == "dense"]
    if dense_rows:
        table("dense (ours = SDPA per sample, cuDNN first)",
              ["L", "ours ms", "TFLOP/s", "SDPA cuDNN ms (BHSD contiguous)", "SDPA cuDNN ms (same packed views)",
               "SDPA flash ms", "Flex dense ms", "x cuDNN", "x cuDNN same views", "ok"],
              [[str(r["L"]), f(r["ms"], 3), f(r["tflops"], 0), f(r["cudnn_ms"], 3), f(r["cudnn_packed_ms"], 3),
                f(r["flash_ms"]), f(r["flex_ms"]), f(r["x_cudnn"], 3), f(r["x_cudnn_packed"], 3), str(r["ok"])]
               for r in dense_rows])
    for chunk in (128, 64):
        for p in (0.10, 0.035):
            rows = [r for r in results if r["method"] == "block_sparse" and r["chunk"] == chunk and r["p"] == p]
            if rows:
                table(f"block_sparse chunk {chunk}, p={p}",
                      ["L", "density", "ms", "TFLOP/s (computed blocks)", "x cuDNN", "x flash", "x Flex dense",
                       "Flex same mask ms", "x Flex same mask", "selection ms", "rel-RMSE", "ok"],
                      [[str(r["L"]), f(r["density"], 4), f(r["ms"], 3), f(r["tflops"], 0), f(r["x_cudnn"]),
                        f(r["x_flash"]), f(r["x_flex_dense"]), f(r.get("flex_same_mask_ms"), 3),
                        f(r.get("x_flex_same_mask")), f(r["est_ms"], 3), f"{r['rmse']:.1e}", str(r["ok"])]
                       for r in rows])
    rows = [r for r in results if r["method"] == "block_sparse_defaults"]
    if rows:
        table("block_sparse at the method defaults (chunk 16, top 64; library select + gather kernel)",
              ["L", "inputs", "density (pairs)", "attn ms", "TFLOP/s (chosen pairs)", "select ms", "total ms",
               "x cuDNN", "x flash", "Flex same pairs ms", "x Flex same pairs (attn)", "rel-RMSE", "ok"],
              [[str(r["L"]), r["inputs"], f(r["density"], 4), f(r["ms"], 3), f(r["tflops"], 0),
                f(r["est_select_ms"], 3), f(r["total_ms"], 3), f(r["x_cudnn_total"]), f(r["x_flash_total"]),
                f(r["flex_same_mask_ms"], 3), f(r["x_flex_same_mask"]), f"{r['rmse']:.1e}", str(r["ok"])]
               for r in rows])
    for method in ("vertical_slash", "flexprefill"):
        rows = [r for r in results if r["method"] == method]
        if rows:
            table(f"{method} (reference defaults)",
                  ["L", "density", "mean NV / NS", "attn ms", "TFLOP/s (computed)", "sums ms (alone)",
                   "library select ms (sums + selection + index)", "index ms (alone)", "overhead = select % of attn", "total ms", "x cuDNN", "x flash", "x Flex dense", "rel-RMSE",
                   "ok"],
                  [[str(r["L"]), f(r["density"], 4), f"{r['nv_mean']:.0f} / {r['ns_mean']:.0f}", f(r["ms"]),
                    f(r["tflops"], 0), f(r["est_sums_ms"], 3), f(r["est_select_ms"], 3), f(r["index_ms"], 3),
                    f(r["overhead_pct"], 1), f(r["total_ms"]), f(r["x_cudnn_total"]), f(r["x_flash_total"]),
                    f(r["x_flex_dense_total"]), f"{r['rmse']:.1e}", str(r["ok"])] for r in rows])


# ------------------------------------------------------------------------------------------------ sums comparison
def parse_sums_config(text):
    """'banded' | 'skew_gather' | 'skew_gather:2,4,2,1' -> (variant, (NQ, num_warps, num_stages[, Q resident]) or None)."""
    variant, _, launch = text.partition(":")
    return variant, (tuple(int(x) for x in launch.split(",")) if launch else None)


def sums_compare(lengths, configs, sweep):
    """--sums-compare: per length (structured inputs), every sums configuration at windows 256 (VS) and 512
    (FlexPrefill): max error relative to the banded pass, ms; and the library `select` (sums + selection + index)
    with the configuration as the default sums pass, against the VS attention of the same selection: overhead %.
    `sweep` configurations (sums only) run at the longest length. Prints a JSON row each and a table."""
    import sparse_attn.kernels.estimation.triton as est
    from sparse_attn.methods.flexprefill import FlexPrefill
    from sparse_attn.methods.vertical_slash import VerticalSlash

    fields = ("vertical_idx", "vertical_count", "slash_offsets", "slash_count")
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())
    saved_launch, rows = dict(est.SKEW_LAUNCH), []
    for length in lengths:
        print(f"== L={length}", flush=True)
        cu = torch.tensor([0, length], device=DEV, dtype=torch.int32)
        q, k, v = structured_qkv(length)
        methods = {"vs": VerticalSlash(), "flex": FlexPrefill()}
        attn, ref_sel = {}, {}
        est.DEFAULT_VARIANT = "banded"
        for name, method in methods.items():
            sel = method.select(q, k, cu, backend="triton", seq_lens=[length])
            index = (sel.block_count, sel.block_offset, sel.column_count, sel.column_index)
            out = torch.empty_like(q)
            attn[name] = bench(lambda: triton_vertical_slash_attention(q, k, v, cu, *index, out=out), rep=50)
            ref_sel[name] = sel
        ref = {w: triton_last_window_sums(q, k, cu, w, variant="banded") for w in (256, 512)}
        todo = [(c, True) for c in configs] + ([(c, False) for c in sweep] if length == max(lengths) else [])
        for config, with_select in todo:
            variant, launch = parse_sums_config(config)
            row = dict(L=length, config=config, vs_attn_ms=attn["vs"], flex_attn_ms=attn["flex"])
            try:
                if launch is not None:
                    est.SKEW_LAUNCH[variant] = launch
                for w in (256, 512):
                    got_v, got_s = triton_last_window_sums(q, k, cu, w, variant=variant)
                    row[f"rel_w{w}"] = max(rel(got_v, ref[w][0]), rel(got_s, ref[w][1]))
                    row[f"sums_w{w}_ms"] = bench(lambda: triton_last_window_sums(q, k, cu, w, variant=variant),
                                                 rep=50)
                if with_select:
                    est.DEFAULT_VARIANT = variant
                    for name, method in methods.items():
                        sel = method.select(q, k, cu, backend="triton", seq_lens=[length])
                        pairs = [(getattr(sel, f), getattr(ref_sel[name], f)) for f in fields]
                        # entries that differ from the banded selection (-1: other shapes, i.e. other budgets)
                        row[f"{name}_sel_diff"] = (sum(int((a != b).sum()) for a, b in pairs)
                                                   if all(a.shape == b.shape for a, b in pairs) else -1)
                        # host lengths, as the integrations call select: no cu_seqlens read-back in the timing
                        row[f"{name}_select_ms"] = bench(
                            lambda: method.select(q, k, cu, backend="triton", seq_lens=[length]), rep=50)
                        row[f"{name}_overhead_pct"] = 100 * row[f"{name}_select_ms"] / attn[name]
            except Exception as error:  # e.g. out of shared memory: record, go on with the next configuration
                row["error"] = f"{type(error).__name__}: {error}"[:160]
            finally:
                est.DEFAULT_VARIANT = "banded"
                est.SKEW_LAUNCH.clear()
                est.SKEW_LAUNCH.update(saved_launch)
            rows.append(row)
            print("  " + json.dumps({a: (round(b, 4) if isinstance(b, float) else b) for a, b in row.items()}),
                  flush=True)
        if sweep and length == max(lengths):
            stats_sweep(q, k, cu, length)
        torch.cuda.empty_cache()
    f = lambda r, key, n=3: "-" if key not in r else (f"{r[key]:.{n}f}" if isinstance(r[key], float) else str(r[key]))
    header = ["L", "sums config", "sums ms w256 (VS)", "sums ms w512 (flex)", "max rel. diff vs banded",
              "VS select ms (sums+sel+index)", "VS attn ms", "VS overhead %", "VS sel. diff",
              "flex select ms", "flex attn ms", "flex overhead %", "flex sel. diff", "error"]
    print("\n### last-window sums variants (structured inputs, library select)\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        worst = max(r.get("rel_w256", float("nan")), r.get("rel_w512", float("nan")))
        print("| " + " | ".join([str(r["L"]), r["config"], f(r, "sums_w256_ms"), f(r, "sums_w512_ms"), f"{worst:.1e}",
                                  f(r, "vs_select_ms"), f(r, "vs_attn_ms", 2), f(r, "vs_overhead_pct", 1),
                                  f(r, "vs_sel_diff"), f(r, "flex_select_ms"), f(r, "flex_attn_ms", 2),
                                  f(r, "flex_overhead_pct", 1), f(r, "flex_sel_diff"), r.get("error", "")]) + " |")
    return rows


def stats_sweep(q, k, cu, length):
    """The row-statistics pass (first pass of every sums variant) per launch (BLOCK_M, BLOCK_N, warps, stages) at
    windows 256 / 512: ms and max difference of the row max / 1/sum vs the default launch (64, 64, 4, 3)."""
    import sparse_attn.kernels.estimation.triton as est
    qk_scale = D ** -0.5 * 1.4426950408889634
    for window in (256, 512):
        w_max = min(window, length)
        ref = est._row_statistics(q, k, cu, window, qk_scale, w_max, length, 64, 64, 4, 3)
        for launch in ((64, 64, 4, 3), (128, 64, 8, 3), (128, 64, 4, 3), (256, 64, 8, 3), (128, 128, 8, 3)):
            try:
                got = est._row_statistics(q, k, cu, window, qk_scale, w_max, length, *launch)
                diff = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, ref))
                ms = bench(lambda: est._row_statistics(q, k, cu, window, qk_scale, w_max, length, *launch), rep=50)
                print(f"  stats L={length} window={window} launch={launch}: {ms:.3f} ms, max rel. diff {diff:.1e}"
                      f"{' (skew default)' if launch == tuple(est.SKEW_STATS) else ''}", flush=True)
            except Exception as error:
                print(f"  stats window={window} launch={launch}: {type(error).__name__}: {error}"[:200], flush=True)


def tune(lengths):
    """Time launch configurations (block-sparse kernel, estimation block sizes); return the best as a dict."""
    best = {}
    for length in lengths:
        cu = torch.tensor([0, length], device=DEV, dtype=torch.int32)
        q, k, v = random_qkv(length)
        out = torch.empty_like(q)
        for chunk, configs in ((128, [(128, 128, 8, 3), (128, 128, 8, 3, True), (128, 128, 8, 2, True),
                                      (128, 64, 4, 3, True)]),
                               (64, [(64, 64, 4, 2), (64, 64, 4, 3, True)])):
            index, count, _ = random_block_index(length, chunk, 0.1)
            flops = float(count.sum()) * 4 * chunk * chunk * D
            for cfg in configs:
                try:
                    ms = bench(lambda: triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out,
                                                                     launch=cfg, max_seqlen=length))
                    print(f"  tune block_sparse L={length} chunk={chunk} cfg={cfg}: {ms:.3f} ms "
                          f"{flops / ms / 1e9:.0f} TFLOP/s", flush=True)
                    key = f"bs_launch_{chunk}"
                    if key not in best or ms < best[key][1]:
                        best[key] = (list(cfg), ms)
                except Exception as error:  # a config that does not fit shared memory
                    print(f"  tune block_sparse cfg={cfg}: {type(error).__name__}", flush=True)
        qs, ks, vs = structured_qkv(length)
        sel = select_vertical_slash(qs, ks, cu, length, "vertical_slash")
        index = triton_build_vertical_slash_index(cu, *sel)
        for blocks in ((64, 64, 64, 64), (128, 64, 64, 64), (64, 128, 64, 128), (128, 128, 128, 64),
                       (64, 64, 128, 64)):
            for window in (256, 512):
                try:
                    ms = bench(lambda: triton_last_window_sums(qs, ks, cu, window, blocks=blocks), rep=50)
                    print(f"  tune last_window_sums L={length} window={window} blocks={blocks}: {ms:.3f} ms",
                          flush=True)
                    total = best.setdefault("est_total", {})
                    total[str(blocks)] = total.get(str(blocks), 0.0) + ms
                except Exception as error:
                    print(f"  tune last_window_sums blocks={blocks}: {type(error).__name__} {error}"[:200], flush=True)
                    best.setdefault("est_total", {})[str(blocks)] = float("inf")
    if "est_total" in best:
        best["est_blocks"] = list(eval(min(best["est_total"], key=best["est_total"].get)))
    print("  tuned: " + json.dumps(best), flush=True)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768, 65536, 131072])
    parser.add_argument("--methods", nargs="+", default=["dense", "block_sparse", "block_sparse_defaults",
                                                         "vertical_slash", "flexprefill"])
    parser.add_argument("--chunks", type=int, nargs="+", default=[128, 64])
    parser.add_argument("--vs-inputs", choices=["structured", "random"], default="structured")
    parser.add_argument("--json", default=None)
    parser.add_argument("--sums-variant", default=None,
                        choices=["auto", "banded", "atomic", "skew_gather"],
                        help="vertical_slash / flexprefill: the last-window sums pass the library select runs "
                             "(default: the library's own choice)")
    parser.add_argument("--sums-compare", nargs="+", default=None, metavar="VARIANT[:NQ,WARPS,STAGES]",
                        help="only compare last-window sums passes (e.g. banded skew_gather skew_gather:2,4,2,1) at --lengths: "
                             "sums ms, difference vs banded, library select / overhead %% of the VS attention")
    parser.add_argument("--sums-sweep", nargs="*", default=[], metavar="VARIANT[:NQ,WARPS,STAGES]",
                        help="with --sums-compare: more configurations, sums only, at the longest length")
    parser.add_argument("--tune", action="store_true", help="only time kernel launch configurations")
    parser.add_argument("--tune-out", default=None, help="with --tune: write the best configurations here")
    parser.add_argument("--tuned", default=None, help="use the configurations a --tune run wrote")
    args = parser.parse_args()
    SUMS_VARIANT["name"] = args.sums_variant
    if not torch.cuda.is_available():
        sys.exit("bench_prefill.py needs a CUDA GPU (it times Triton kernels against cuDNN / flash / FlexAttention)")
    import triton
    from torch.nn.attention.flex_attention import flex_attention
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__} triton={triton.__version__} "
          f"cudnn={torch.backends.cudnn.version()} date={time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"command: python benchmarks/bench_prefill.py {' '.join(sys.argv[1:])}", flush=True)
    if args.sums_compare:
        rows = sums_compare(args.lengths, args.sums_compare, args.sums_sweep)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return
    if args.tune:
        best = tune(args.lengths)
        if args.tune_out:
            with open(args.tune_out, "w") as fh:
                json.dump(best, fh)
        return
    if args.tuned:
        with open(args.tuned) as fh:
            TUNED.update(json.load(fh))
        print(f"tuned launch configurations: {json.dumps({k: v for k, v in TUNED.items() if k != 'est_total'})}")
    flex = torch.compile(flex_attention, dynamic=False)
    results = []
    for length in args.lengths:
        print(f"== L={length}", flush=True)
        cu = torch.tensor([0, length], device=DEV, dtype=torch.int32)
        q, k, v = random_qkv(length)
        n128 = length // 128
        causal = flex_block_mask(torch.ones(1, n128, n128, device=DEV, dtype=torch.bool).tril(), 128, length)
        dense = dense_baselines(q, k, v, lambda a, b, c: flex(a, b, c, block_mask=causal, enable_gqa=True))
        print("  dense baselines ms: " + json.dumps({a: round(b, 3) for a, b in dense.items()}), flush=True)
        flex_gqa = lambda a, b, c, block_mask: flex(a, b, c, block_mask=block_mask, enable_gqa=True)
        if "dense" in args.methods:
            run_dense(length, q, k, v, cu, dense, results)
        if "block_sparse" in args.methods:
            run_block_sparse(length, q, k, v, cu, dense, flex_gqa, results, chunks=args.chunks)
        if "block_sparse_defaults" in args.methods:
            run_block_sparse_defaults(length, "random", q, k, v, cu, dense, flex_gqa, results)
            run_block_sparse_defaults(length, "structured", *structured_qkv(length), cu, dense, flex_gqa, results)
        vs_methods = [m for m in ("vertical_slash", "flexprefill") if m in args.methods]
        if vs_methods:
            qs, ks, vs = structured_qkv(length) if args.vs_inputs == "structured" else (q, k, v)
            for method in vs_methods:
                run_vertical_slash(method, length, qs, ks, vs, cu, dense, results)
        torch.cuda.empty_cache()
    print_tables(results)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
