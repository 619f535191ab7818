"""Session 11 probe: block_sparse at the reference defaults (chunk_size 16, top_chunks 64), the path users get from
attn_implementation="block_sparse". Times the library selection, the chunk->tile conversion and the attention kernel
separately, against SDPA cuDNN dense, and reports how much the 64x64-tile union inflates the work.

python benchmarks/results/s11/probe_bs16.py [--lengths 32768 131072] [--inputs random structured]
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

sys.path.insert(0, "benchmarks")
from bench_prefill import HQ, flex_chunk_mask, random_qkv, structured_qkv  # noqa: E402

import sparse_attn.kernels.block_sparse.triton as bst  # noqa: E402
from sparse_attn.kernels.block_sparse.small_chunks import chunk_index_to_union, triton_chunk_index_to_union  # noqa
from sparse_attn.kernels.block_sparse.triton import chunk_index_to_tiles, triton_block_sparse_attention  # noqa
from sparse_attn.methods.block_sparse import BlockSparse  # noqa: E402


def chunk_union(index, count, r):
    """Distinct key chunks per group of r consecutive query chunks (what a gather kernel would load)."""
    b, h, n, w = index.shape
    pad = (-n) % r
    idx = F.pad(index.long(), (0, 0, 0, pad), value=-1)
    cnt = F.pad(count.long(), (0, pad), value=0)
    idx = idx.view(b, h, -1, r * w)
    valid = (torch.arange(w, device=idx.device) < cnt.view(b, h, -1, r, 1)).view(b, h, -1, r * w)
    big = 1 << 40
    code = torch.where(valid, idx, big).sort(-1).values
    new = (code < big) & (code != F.pad(code, (1, 0), value=-1)[..., :-1])
    return new.sum(-1)  # [b, h, groups]


def flex_same_mask(idx, cnt, chunk, length):
    """FlexAttention compiled with exactly the selected (query chunk, key chunk) pairs, causal (the mask is built by
    bench_prefill.flex_chunk_mask since session 12: 128x128 tiles any chosen pair touches + a chunk lookup)."""
    from torch.nn.attention.flex_attention import flex_attention
    mask, pairs = flex_chunk_mask(idx, cnt, chunk, length)
    return torch.compile(flex_attention, dynamic=False), mask, pairs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[32768, 131072])
    ap.add_argument("--inputs", nargs="+", default=["random", "structured"])
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--top", type=int, default=64)
    ap.add_argument("--flex", action="store_true", help="also FlexAttention with the same chunk mask")
    ap.add_argument("--select-only", action="store_true", help="time the selection only (no attention)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name()}", flush=True)
    for length in args.lengths:
        cu = torch.tensor([0, length], dtype=torch.int32, device="cuda")
        causal = HQ * length * (length + 1) / 2
        for kind in args.inputs:
            q, k, v = random_qkv(length) if kind == "random" else structured_qkv(length)
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                qt, kt, vt = (x.transpose(0, 1)[None] for x in (q, k, v))
                cudnn = do_bench(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=True,
                                                                        enable_gqa=True), rep=50)
            cfg = BlockSparse(chunk_size=args.chunk, top_chunks=args.top)
            sel = cfg.select(q, k, cu, backend="triton", seq_lens=[length])
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            sel = cfg.select(q, k, cu, backend="triton", seq_lens=[length])
            torch.cuda.synchronize()
            sel_wall = (time.perf_counter() - t0) * 1e3
            sel_ms = do_bench(lambda: cfg.select(q, k, cu, backend="triton", seq_lens=[length]), rep=50)
            # backend="naive" on CUDA tensors: the same torch pooling and matmul, torch stable_topk (session-10 path)
            sel_torch_ms = do_bench(lambda: cfg.select(q, k, cu, backend="naive", seq_lens=[length]), rep=50)
            same_sel = bool(torch.equal(cfg.select(q, k, cu, backend="naive", seq_lens=[length]).block_index,
                                        sel.block_index))
            idx, cnt = sel.block_index, sel.block_count
            if args.select_only:
                print(json.dumps(dict(L=length, inputs=kind, select_ms=round(sel_ms, 3),
                                      select_torch_topk_ms=round(sel_torch_ms, 3), same_selection=same_sel,
                                      select_wall_ms=round(sel_wall, 3))), flush=True)
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                    cfg.select(q, k, cu, backend="triton", seq_lens=[length])
                    torch.cuda.synchronize()
                print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8), flush=True)
                continue
            conv_ms = do_bench(lambda: chunk_index_to_tiles(idx, cnt, args.chunk), rep=50)
            union_ms = do_bench(lambda: chunk_index_to_union(idx, cnt, args.chunk), rep=50)
            union_triton_ms = do_bench(lambda: triton_chunk_index_to_union(idx, cnt, args.chunk), rep=50)
            same_union = all(torch.equal(a, b) for a, b in zip(chunk_index_to_union(idx, cnt, args.chunk),
                                                               triton_chunk_index_to_union(idx, cnt, args.chunk)))
            outs, times = {}, {}
            for path in ("tiles", "gather"):
                bst.SMALL_CHUNK_PATH = path
                out = torch.full_like(q, float("nan"))
                attn = lambda: triton_block_sparse_attention(q, k, v, cu, idx, cnt, args.chunk, out=out,  # noqa
                                                             max_seqlen=length)
                attn()
                torch.cuda.synchronize()
                outs[path] = out
                times[path] = do_bench(attn, rep=50)
            flex_ms = flex_diff = flex_density = None
            if args.flex:
                flex, mask, flex_pairs = flex_same_mask(idx, cnt, args.chunk, length)
                qb, kb, vb = (x.transpose(0, 1)[None].contiguous() for x in (q, k, v))
                fout = flex(qb, kb, vb, block_mask=mask, enable_gqa=True)
                flex_diff = float((fout[0].transpose(0, 1).float() - outs["gather"].float()).norm()
                                  / fout.float().norm())
                flex_ms = do_bench(lambda: flex(qb, kb, vb, block_mask=mask, enable_gqa=True), rep=50)
                flex_density = flex_pairs / causal
            bst.SMALL_CHUNK_PATH = "gather"
            gather_s2_ms = do_bench(lambda: triton_block_sparse_attention(q, k, v, cu, idx, cnt, args.chunk, out=out,
                                                                          max_seqlen=length, launch=(64, 64, 4, 2)),
                                    rep=50)
            written = {p: bool(torch.isfinite(o).all()) for p, o in outs.items()}
            diff = float((outs["gather"].float() - outs["tiles"].float()).norm() / outs["tiles"].float().norm())
            attn_ms = times["gather"]
            tiles, tcount, _ = chunk_index_to_tiles(idx, cnt, args.chunk)
            pairs = float(sel.pair_counts().sum())
            tile_pairs = float(tcount.sum()) * 64 * 64
            union = chunk_union(idx, cnt, 64 // args.chunk)
            union_pairs = float(union.sum()) * args.chunk * 64
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                cfg.select(q, k, cu, backend="triton", seq_lens=[length])
                torch.cuda.synchronize()
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=8)
            row = dict(L=length, inputs=kind, chunk=args.chunk, top=args.top, cudnn_ms=cudnn, select_ms=sel_ms,
                       select_torch_topk_ms=sel_torch_ms, same_selection=same_sel,
                       select_wall_ms=sel_wall, convert_tiles_ms=conv_ms, union_torch_ms=union_ms,
                       union_triton_ms=union_triton_ms, same_union=same_union,
                       attn_tiles_ms=times["tiles"], attn_gather_ms=attn_ms,
                       attn_gather_stages2_ms=gather_s2_ms, gather_vs_tiles_rel=diff,
                       flex_same_mask_ms=flex_ms, x_flex=None if flex_ms is None else flex_ms / attn_ms,
                       flex_vs_gather_rel=flex_diff, flex_tile128_density=flex_density,
                       total_ms=sel_ms + attn_ms, x_cudnn=cudnn / (sel_ms + attn_ms), written=written,
                       density_chunks=pairs / causal, density_tiles64=tile_pairs / causal,
                       density_chunk_union64=union_pairs / causal, tiles_per_row=float(tcount.float().mean()),
                       union_chunks_per_row=float(union.float().mean()))
            print(json.dumps({a: (round(b, 4) if isinstance(b, float) else b) for a, b in row.items()}), flush=True)
            print(table, flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
