"""Triton window importance for SnapKV / Ada-SnapKV compression: the per-token scores that decide which KV entries
survive, without materialising the `[Hkv, G, W, T]` probability tensor.

Reference: `sparse_attn.methods._kv.window_probs` followed by SnapKV's `.mean(dim=1).sum(dim=1)` (mean over the
group's query heads, sum over the window) or Ada-SnapKV's `.amax(dim=2).amax(dim=1)` (max over both). Two passes
over K, both on tensor cores:

1. `_window_row_stats_kernel`: log-sum-exp of every window row (query head x window query) over its causal keys,
   split over the key axis; `_merge_row_stats_kernel` merges the `[Hkv * G * W, splits]` partials (a few KB) in
   one launch (it replaced ~8 small torch ops that made the eager compression launch-bound).
2. `_window_importance_kernel`: per KV head and block of keys, the normalised probabilities of all G * W rows,
   reduced on the fly (sum or max) into `[Hkv, T]`.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .triton import INTERPRETING, LOG2E, _dot, choose_num_splits


@triton.jit
def _load_window_rows(Q, kv_head, rows, row_ok, stride_qh, stride_qw, window, seq_len,
                      GROUP: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Rows `rows` of the flattened (group head, window query) axis of one KV head: q `[BLOCK_M, D]` and the
    token position of each row's query."""
    offs_d = tl.arange(0, HEAD_DIM)
    q_head = kv_head * GROUP + rows // window
    w = rows % window
    q = tl.load(Q + q_head[:, None] * stride_qh + w[:, None] * stride_qw + offs_d[None, :], mask=row_ok[:, None],
                other=0.0)
    return q, seq_len - window + w


#: Launch configurations (BLOCK_M rows, BLOCK_N keys, num_warps, num_stages) of the two passes; tuned on an H100
#: at 32K-128K tokens, Llama-3.1-8B heads (benchmarks/bench_decode.py, `--tables compression`, tunes them).
STATS_CONFIG = (64, 64, 4, 3)
SCORES_CONFIG = (64, 128, 8, 2)


@triton.jit
def _window_row_stats_kernel(
    Q, K, ROW_MAX, ROW_SUM,
    stride_qh, stride_qw, stride_kh, stride_kn,
    window, seq_len, keys_per_split, num_splits, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_F32: tl.constexpr,
):
    """Program (kv_head * row_blocks + row_block, split): running max / sum (log2 units) of BLOCK_M rows over one
    chunk of keys, causal (key position <= the row's query position)."""
    num_rows = GROUP * window
    row_blocks = tl.cdiv(num_rows, BLOCK_M)
    kv_head = tl.program_id(0) // row_blocks
    rows = (tl.program_id(0) % row_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    split = tl.program_id(1)
    row_ok = rows < num_rows
    q, q_pos = _load_window_rows(Q, kv_head, rows, row_ok, stride_qh, stride_qw, window, seq_len, GROUP, HEAD_DIM)

    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    k_base = K + kv_head * stride_kh
    start = split * keys_per_split
    end = tl.minimum(start + keys_per_split, seq_len)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    # Keys at positions <= T - W are visible to every window row: whole blocks of them need no causal or bounds
    # mask (the bulk of the prompt); only the blocks reaching into the final W x W square (or past `end`) do.
    open_end = tl.minimum(end, seq_len - window + 1)
    main_end = start + tl.maximum(open_end - start, 0) // BLOCK_N * BLOCK_N
    for n0 in range(start, main_end, BLOCK_N):
        keys = n0 + offs_n
        kt = tl.load(k_base + keys[None, :] * stride_kn + offs_d[:, None])
        s = _dot(q, kt, DOT_F32) * qk_scale
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: no masked entry
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(s - m_new[:, None]), 1)
        m_i = m_new
    for n0 in range(main_end, end, BLOCK_N):
        keys = n0 + offs_n
        kt = tl.load(k_base + keys[None, :] * stride_kn + offs_d[:, None], mask=keys[None, :] < end, other=0.0)
        s = _dot(q, kt, DOT_F32) * qk_scale
        visible = (keys[None, :] <= q_pos[:, None]) & (keys[None, :] < end)
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), 1)
        m_i = m_new
    out = (kv_head * num_rows + rows) * num_splits + split
    tl.store(ROW_MAX + out, m_i, mask=row_ok)
    tl.store(ROW_SUM + out, l_i, mask=row_ok)


@triton.jit
def _merge_row_stats_kernel(ROW_MAX, ROW_SUM, ROW_LSE, num_rows, num_splits,
                            BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """Program (block of rows): lse2 = m + log2(sum_s l_s 2^(m_s - m)), m = max_s m_s. A split whose keys all lie
    after a row's query has m_s = -inf, l_s = 0 (weight 0); every row sees key 0, so m is finite."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_s = tl.arange(0, BLOCK_S)
    row_ok = rows < num_rows
    ok = row_ok[:, None] & (offs_s[None, :] < num_splits)
    ptrs = rows[:, None] * num_splits + offs_s[None, :]
    m_s = tl.load(ROW_MAX + ptrs, mask=ok, other=float("-inf"))
    l_s = tl.load(ROW_SUM + ptrs, mask=ok, other=0.0)
    top = tl.max(m_s, 1)
    top = tl.where(row_ok, top, 0.0)
    total = tl.sum(tl.where(ok, l_s * tl.exp2(m_s - top[:, None]), 0.0), 1)
    total = tl.where(row_ok, total, 1.0)  # rows past the end: no log2(0)
    tl.store(ROW_LSE + rows, top + tl.log2(total), mask=row_ok)


@triton.jit
def _window_importance_kernel(
    Q, K, ROW_LSE, OUT,
    stride_qh, stride_qw, stride_kh, stride_kn, stride_oh,
    window, seq_len, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_MAX: tl.constexpr, EVEN_ROWS: tl.constexpr, DOT_F32: tl.constexpr,
):
    """Program (kv_head, key block): probabilities of all G * W window rows for BLOCK_N keys, reduced over the
    rows: sum / G (SnapKV) or max (Ada-SnapKV).

    The reduction over rows is elementwise into a `[BLOCK_M, BLOCK_N]` register tile and crosses warps once at
    the end (not once per row block)."""
    kv_head = tl.program_id(0)
    block_start = tl.program_id(1) * BLOCK_N
    keys = block_start + tl.arange(0, BLOCK_N)
    key_ok = keys < seq_len
    offs_d = tl.arange(0, HEAD_DIM)
    kt = tl.load(K + kv_head * stride_kh + keys[None, :] * stride_kn + offs_d[:, None], mask=key_ok[None, :],
                 other=0.0)
    num_rows = GROUP * window
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if block_start + BLOCK_N <= seq_len - window + 1:
        # every key of the block is visible to every window row: no causal / bounds mask
        for r0 in range(0, num_rows, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            row_ok = rows < num_rows
            q, q_pos = _load_window_rows(Q, kv_head, rows, row_ok, stride_qh, stride_qw, window, seq_len, GROUP,
                                         HEAD_DIM)
            lse = tl.load(ROW_LSE + kv_head * num_rows + rows, mask=row_ok, other=0.0)
            p = tl.exp2(_dot(q, kt, DOT_F32) * qk_scale - lse[:, None])
            if not EVEN_ROWS:
                p = tl.where(row_ok[:, None], p, 0.0)
            if USE_MAX:
                acc = tl.maximum(acc, p)
            else:
                acc += p
    else:
        for r0 in range(0, num_rows, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            row_ok = rows < num_rows
            q, q_pos = _load_window_rows(Q, kv_head, rows, row_ok, stride_qh, stride_qw, window, seq_len, GROUP,
                                         HEAD_DIM)
            lse = tl.load(ROW_LSE + kv_head * num_rows + rows, mask=row_ok, other=0.0)
            s = _dot(q, kt, DOT_F32) * qk_scale - lse[:, None]
            visible = (keys[None, :] <= q_pos[:, None]) & row_ok[:, None] & key_ok[None, :]
            p = tl.where(visible, tl.exp2(s), 0.0)
            if USE_MAX:
                acc = tl.maximum(acc, p)
            else:
                acc += p
    if USE_MAX:
        result = tl.max(acc, 0)
    else:
        result = tl.sum(acc, 0) / GROUP
    tl.store(OUT + kv_head * stride_oh + keys, result, mask=key_ok)


def triton_window_importance(
    q_window: torch.Tensor,
    k: torch.Tensor,
    scale: Optional[float] = None,
    reduce: str = "mean_sum",
    block_m: Optional[int] = None,
    block_n: Optional[int] = None,
    stats_config: Optional[Tuple[int, int, int, int]] = None,
    scores_config: Optional[Tuple[int, int, int, int]] = None,
    num_splits: Optional[int] = None,
) -> torch.Tensor:
    """Token importance from the last W prompt queries, without the `[Hkv, G, W, T]` probability tensor.

    Args:
        q_window: `[Hq, W, D]` queries at positions `T - W .. T - 1` (post-RoPE), D in 64, 128.
        k: `[Hkv, T, D]` keys; GQA: query head h reads KV head `h // (Hq // Hkv)` (K is not repeated).
        scale: softmax scale. Default: `D ** -0.5`.
        reduce: "mean_sum" (SnapKV: mean over the group's query heads of the window-summed probabilities) or
            "max" (Ada-SnapKV: max over window queries and query heads).
        stats_config, scores_config: (BLOCK_M, BLOCK_N, num_warps, num_stages) of the row-statistics and the
            score pass; default `STATS_CONFIG` / `SCORES_CONFIG`.
        block_m, block_n: override BLOCK_M / BLOCK_N of both passes (the CPU tests use small tiles).
        num_splits: key-axis splits of the row-statistics pass; default from `choose_num_splits`.

    Returns:
        `[Hkv, T]` fp32, before pooling (equals `window_probs(q_window, k).mean(1).sum(1)` / `.amax(2).amax(1)`).
    """
    if reduce not in ("mean_sum", "max"):
        raise ValueError(f"reduce must be 'mean_sum' (snapkv) or 'max' (ada_snapkv), got {reduce!r}")
    if q_window.dim() != 3 or k.dim() != 3 or q_window.shape[2] != k.shape[2]:
        raise ValueError(f"expected q_window [Hq, W, D] and k [Hkv, T, D], got {tuple(q_window.shape)} and "
                         f"{tuple(k.shape)}")
    num_q_heads, window, head_dim = q_window.shape
    num_kv_heads, seq_len, _ = k.shape
    if num_q_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_q_heads}) must be a multiple of KV heads ({num_kv_heads})")
    if head_dim not in (64, 128):
        raise ValueError(f"the Triton window kernel supports head dims 64 and 128, got {head_dim}: use the "
                         f"PyTorch path for this model")
    if window > seq_len:
        raise ValueError(f"window ({window}) longer than the prompt ({seq_len})")
    if q_window.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("q_window and k must be contiguous in the head dim")
    group = num_q_heads // num_kv_heads
    scale = head_dim ** -0.5 if scale is None else scale
    qk_scale = scale * LOG2E
    num_rows = group * window
    stats_m, stats_n, stats_warps, stats_stages = _override(stats_config or STATS_CONFIG, block_m, block_n)
    scores_m, scores_n, scores_warps, scores_stages = _override(scores_config or SCORES_CONFIG, block_m, block_n)
    row_blocks = triton.cdiv(num_rows, stats_m)

    if num_splits is None:
        num_splits = choose_num_splits(num_kv_heads * row_blocks, seq_len, k.device)
    keys_per_split = triton.cdiv(triton.cdiv(seq_len, num_splits), stats_n) * stats_n
    num_splits = triton.cdiv(seq_len, keys_per_split)
    all_rows = num_kv_heads * num_rows
    # one allocation for the max / sum partials `[rows, splits]` and the merged lse `[rows]`
    stats = torch.empty(all_rows * (2 * num_splits + 1), device=k.device, dtype=torch.float32)
    row_max = stats[: all_rows * num_splits].view(all_rows, num_splits)
    row_sum = stats[all_rows * num_splits: 2 * all_rows * num_splits].view(all_rows, num_splits)
    row_lse = stats[2 * all_rows * num_splits:]
    _window_row_stats_kernel[(num_kv_heads * row_blocks, num_splits)](
        q_window, k, row_max, row_sum,
        q_window.stride(0), q_window.stride(1), k.stride(0), k.stride(1),
        window, seq_len, keys_per_split, num_splits, qk_scale,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=stats_m, BLOCK_N=stats_n, DOT_F32=INTERPRETING,
        num_warps=stats_warps, num_stages=stats_stages,
    )
    # merge the splits (tiny, one launch)
    merge_rows = 128
    _merge_row_stats_kernel[(triton.cdiv(all_rows, merge_rows),)](
        row_max, row_sum, row_lse, all_rows, num_splits,
        BLOCK_R=merge_rows, BLOCK_S=max(2, triton.next_power_of_2(num_splits)), num_warps=4,
    )

    out = torch.empty(num_kv_heads, seq_len, device=k.device, dtype=torch.float32)
    _window_importance_kernel[(num_kv_heads, triton.cdiv(seq_len, scores_n))](
        q_window, k, row_lse, out,
        q_window.stride(0), q_window.stride(1), k.stride(0), k.stride(1), out.stride(0),
        window, seq_len, qk_scale,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=scores_m, BLOCK_N=scores_n, USE_MAX=reduce == "max",
        EVEN_ROWS=num_rows % scores_m == 0, DOT_F32=INTERPRETING, num_warps=scores_warps, num_stages=scores_stages,
    )
    return out


def _override(config: Tuple[int, int, int, int], block_m: Optional[int], block_n: Optional[int]):
    m, n, warps, stages = config
    return (m if block_m is None else block_m, n if block_n is None else block_n, warps, stages)
