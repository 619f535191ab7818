"""Pattern-estimation kernels on the GPU (same signatures as `naive.py`).

`triton_last_window_sums` never materialises the `[Hq, window, L]` probability matrix (4.3 GB in fp32 for 32 heads
x 256 queries x 128K keys): three Triton passes recompute the scores tile by tile.

1. row statistics: per window query, the running max and sum of exp2 over its causal keys (split over key ranges
   for parallelism, merged in torch);
2. one pass per key tile for both sums: the probabilities summed over the window queries (vertical; the program
   owns its keys) and along each diagonal the tile crosses (slash; pulled out of the [64, 64] probability tile with
   `tl.gather`, then atomically added, since neighbouring key tiles share diagonals). fp32 atomics make the slash
   sums' last bits depend on the order of the adds.

Pass 2 has three implementations (`VARIANTS`): "skew_gather" (`_window_sums_skew`, the default from
`SKEW_MIN_LENGTH` tokens: tiles on the same diagonals are added before ONE diagonal extraction per key tile),
"banded" (the default below it) and "atomic" (the first one, kept for comparison runs).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._triton_tile import LOG2E
from .pooling import pooled_block_means

# (stats: window queries, keys per tile; sums: window queries, keys per tile)
DEFAULT_BLOCKS = (64, 64, 64, 64)


@triton.jit
def _window_stats(Q, K, cu_seqlens, MaxOut, SumOut, qk_scale, num_q_heads, window, keys_per_split,
                  stride_qn, stride_qh, stride_kn, stride_kh, stride_sb, stride_sh, stride_ss,
                  GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    i_block = tl.program_id(0)
    bh = tl.program_id(1)
    split = tl.program_id(2)
    b = bh // num_q_heads
    h = bh % num_q_heads
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    start = seq_start.to(tl.int64)  # 64-bit row offsets: packed batches may exceed 2**31 elements
    w = tl.minimum(window, seq_len)
    offs_i = i_block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_i < w
    q_pos = seq_len - w + offs_i
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + start * stride_qn + q_pos[:, None] * stride_qn + h * stride_qh + offs_d[None, :],
                mask=row_ok[:, None], other=0.0)
    q = (q * qk_scale).to(q.dtype)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    k_lo = split * keys_per_split
    k_hi = tl.minimum(k_lo + keys_per_split, seq_len)
    offs_n = tl.arange(0, BLOCK_N)
    k_base = K + start * stride_kn + (h // GROUP) * stride_kh
    for k_first in range(k_lo, k_hi, BLOCK_N):
        k_pos = k_first + offs_n
        k = tl.load(k_base + k_pos[:, None] * stride_kn + offs_d[None, :], mask=(k_pos < k_hi)[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k))
        if (k_first + BLOCK_N > k_hi) | (k_first + BLOCK_N > seq_len - w + i_block * BLOCK_M):
            # the split's end or the causal edge of the block's first query: mask (other tiles need none)
            s = tl.where((k_pos[None, :] < k_hi) & (k_pos[None, :] <= q_pos[:, None]), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.math.exp2(m_i - m_safe) + tl.sum(tl.math.exp2(s - m_safe[:, None]), 1)
        m_i = m_new
    out = b * stride_sb + h * stride_sh + split * stride_ss + offs_i
    tl.store(MaxOut + out, m_i, mask=row_ok)
    tl.store(SumOut + out, l_i, mask=row_ok)


@triton.jit
def _window_sums(Q, K, cu_seqlens, RowMax, RowInvSum, Vertical, Slash, qk_scale, num_q_heads, window,
                 stride_qn, stride_qh, stride_kn, stride_kh, stride_rb, stride_rh, stride_ob, stride_oh,
                 GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 N_DIAG: tl.constexpr):
    """One program per key tile: vertical sums of its keys (owned, plain store) and the slash sums of the
    BLOCK_M + BLOCK_N - 1 diagonals each [query block, key tile] pair crosses (atomic adds: neighbouring key tiles
    share diagonals). The diagonals are pulled out of the probability tile with `tl.gather`:
    R[i, t] = P[i, i - t + BLOCK_N - 1], so sum_i R[i, t] is the sum along the diagonal at offset
    (q_first - k_first) + t - (BLOCK_N - 1).
    """
    n_block = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // num_q_heads
    h = bh % num_q_heads
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    start = seq_start.to(tl.int64)  # 64-bit row offsets: packed batches may exceed 2**31 elements
    k_first = n_block * BLOCK_N
    if k_first >= seq_len:
        return  # the caller zero-fills [B, Hq, max_len]: positions past this sample's end stay 0
    w = tl.minimum(window, seq_len)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k_pos = k_first + offs_n
    key_ok = k_pos < seq_len
    k_base = K + start * stride_kn + (h // GROUP) * stride_kh
    k = tl.load(k_base + k_pos[:, None] * stride_kn + offs_d[None, :], mask=key_ok[:, None], other=0.0)
    out_base = b * stride_ob + h * stride_oh
    t = tl.arange(0, N_DIAG)  # N_DIAG = next power of two >= BLOCK_M + BLOCK_N - 1 diagonals
    src = tl.arange(0, BLOCK_M)[:, None] - t[None, :] + (BLOCK_N - 1)  # column of P on diagonal t, row i
    src_ok = (src >= 0) & (src < BLOCK_N)
    src = tl.where(src_ok, src, 0)
    vertical = tl.zeros([BLOCK_N], dtype=tl.float32)
    for i_first in range(0, w, BLOCK_M):
        offs_i = i_first + tl.arange(0, BLOCK_M)
        row_ok = offs_i < w
        q_pos = seq_len - w + offs_i
        q_first = seq_len - w + i_first
        if q_first + BLOCK_M - 1 >= k_first:  # some query of this block sees some key of the tile
            q = tl.load(Q + start * stride_qn + q_pos[:, None] * stride_qn + h * stride_qh + offs_d[None, :],
                        mask=row_ok[:, None], other=0.0)
            q = (q * qk_scale).to(q.dtype)
            row_max = tl.load(RowMax + b * stride_rb + h * stride_rh + offs_i, mask=row_ok, other=0.0)
            row_inv_sum = tl.load(RowInvSum + b * stride_rb + h * stride_rh + offs_i, mask=row_ok, other=0.0)
            s = tl.dot(q, tl.trans(k))
            ok = row_ok[:, None] & key_ok[None, :] & (k_pos[None, :] <= q_pos[:, None])
            p = tl.where(ok, tl.math.exp2(s - row_max[:, None]) * row_inv_sum[:, None], 0.0)
            vertical += tl.sum(p, 0)
            diag = tl.sum(tl.where(src_ok, tl.gather(p, src, 1), 0.0), 0)  # [N_DIAG]
            offset = q_first - k_first + t - (BLOCK_N - 1)
            diag_ok = (t < BLOCK_M + BLOCK_N - 1) & (offset >= 0) & (offset < seq_len)
            tl.atomic_add(Slash + out_base + offset, diag, mask=diag_ok, sem="relaxed")
    tl.store(Vertical + out_base + k_pos, vertical, mask=key_ok)


@triton.jit
def _window_sums_banded(Q, K, cu_seqlens, RowMax, RowInvSum, Vertical, Slash, qk_scale, num_q_heads, window,
                        tiles_per_split,
                        stride_qn, stride_qh, stride_kn, stride_kh, stride_rb, stride_rh, stride_ob, stride_oh,
                        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, BANDS: tl.constexpr):
    """One program per (query head, run of key tiles): vertical and slash sums without gathers into [64, 128].

    The program walks its key tiles in ascending order; per tile it loads K once and folds in every 64-query block
    of the window. Diagonals leave a [64, 64] probability tile through a circular gather,
    G[a, t] = P[a, (a - t) mod 64]: column t of its lower triangle (a >= t) is the diagonal at offset
    base + t, of its upper triangle the diagonal at base + t - 64, with base = q_first - k_first. So every
    (query block m, key tile n) adds two 64-wide "bands" of offsets, band e = n - m (offsets
    q_first(0) - 64 e + [0, 64)) and band e + 1. Band e collects from tiles e - 1 .. e + BLOCKS - 1 only, so it is
    final after tile e + BLOCKS - 1: bands live in a ring of BANDS rows of registers and are stored as soon as they
    are final. Bands whose tiles straddle two programs (the first and last BLOCKS + 1 of each run) are added
    atomically into the zero-filled output: exactly two addends each (runs are longer than BLOCKS + 1 tiles), so
    the result does not depend on their order. Verticals: the program owns its keys, plain stores.
    """
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // num_q_heads
    h = bh % num_q_heads
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    start = seq_start.to(tl.int64)  # 64-bit row offsets: packed batches may exceed 2**31 elements
    w = tl.minimum(window, seq_len)
    n_qblocks = tl.cdiv(w, BLOCK)
    q_first0 = seq_len - w  # position of the first window query
    n_tiles = tl.cdiv(seq_len, BLOCK)  # the last window query sees every key
    n_lo = split * tiles_per_split
    if n_lo >= n_tiles:
        return
    n_hi = tl.minimum(n_lo + tiles_per_split, n_tiles)
    offs = tl.arange(0, BLOCK)
    offs_d = tl.arange(0, HEAD_DIM)
    circ = (offs[:, None] - offs[None, :]) & (BLOCK - 1)  # G[a, t] = P[a, (a - t) mod BLOCK]
    lower = offs[:, None] >= offs[None, :]
    ring_row = tl.arange(0, BANDS)
    ring = tl.zeros([BANDS, BLOCK], dtype=tl.float32)  # row e % BANDS accumulates band e
    k_base = K + start * stride_kn + (h // GROUP) * stride_kh
    q_base = Q + start * stride_qn + h * stride_qh
    stat_base = b * stride_rb + h * stride_rh
    out_base = b * stride_ob + h * stride_oh
    for n in range(n_lo, n_hi):
        k_first = n * BLOCK
        k_pos = k_first + offs
        key_ok = k_pos < seq_len
        k = tl.load(k_base + k_pos[:, None] * stride_kn + offs_d[None, :], mask=key_ok[:, None], other=0.0)
        vertical = tl.zeros([BLOCK], dtype=tl.float32)
        prev_main = tl.zeros([BLOCK], dtype=tl.float32)  # main band of the previous query block (band n - m + 1)
        for m in range(0, n_qblocks):
            offs_i = m * BLOCK + offs
            row_ok = offs_i < w
            q_first = q_first0 + m * BLOCK
            q_pos = q_first + offs
            # rows past the window load q = 0 and 1/sum = 0, so their probabilities are exactly 0 without a mask
            q = tl.load(q_base + q_pos[:, None] * stride_qn + offs_d[None, :], mask=row_ok[:, None], other=0.0)
            q = (q * qk_scale).to(q.dtype)
            row_max = tl.load(RowMax + stat_base + offs_i, mask=row_ok, other=0.0)
            row_inv_sum = tl.load(RowInvSum + stat_base + offs_i, mask=row_ok, other=0.0)
            s = tl.dot(q, tl.trans(k))
            p = tl.math.exp2(s - row_max[:, None]) * row_inv_sum[:, None]
            if k_first + BLOCK > q_first:  # the tile reaches the causal edge (or the sample's end): mask
                p = tl.where(key_ok[None, :] & (k_pos[None, :] <= q_pos[:, None]), p, 0.0)
            vertical += tl.sum(p, 0)
            g = tl.gather(p, circ, 1)
            main = tl.sum(tl.where(lower, g, 0.0), 0)  # band n - m
            wrap = tl.sum(tl.where(lower, 0.0, g), 0)  # band n - m + 1, also the previous block's main band
            band = n - m + 1
            ring = tl.where(ring_row[:, None] == (band & (BANDS - 1)), ring + (wrap + prev_main)[None, :], ring)
            prev_main = main
        band = n - n_qblocks + 1  # the last block's main band
        ring = tl.where(ring_row[:, None] == (band & (BANDS - 1)), ring + prev_main[None, :], ring)
        tl.store(Vertical + out_base + k_pos, vertical, mask=key_ok)
        # band n - n_qblocks + 1 gets nothing from later tiles: store it (atomically if the previous run adds too)
        row_sel = ring_row[:, None] == (band & (BANDS - 1))
        done = tl.sum(tl.where(row_sel, ring, 0.0), 0)
        ring = tl.where(row_sel, 0.0, ring)
        offset = q_first0 - band * BLOCK + offs
        ok = (offset >= 0) & (offset < seq_len)
        if band - 1 >= n_lo:
            tl.store(Slash + out_base + offset, done, mask=ok)
        else:
            tl.atomic_add(Slash + out_base + offset, done, mask=ok, sem="relaxed")
    # bands n_hi - n_qblocks + 1 .. n_hi still open: the next run adds to them
    for band in range(n_hi - n_qblocks + 1, n_hi + 1):
        done = tl.sum(tl.where(ring_row[:, None] == (band & (BANDS - 1)), ring, 0.0), 0)
        offset = q_first0 - band * BLOCK + offs
        tl.atomic_add(Slash + out_base + offset, done, mask=(offset >= 0) & (offset < seq_len), sem="relaxed")


@triton.jit
def _skew_load_block(qw_base, lse_base, m, offs, offs_d, stride_wq, BLOCK: tl.constexpr):
    """Window block m: pre-scaled queries [BLOCK, D] and their lse [BLOCK] (no masks: the buffers are padded)."""
    rows = m * BLOCK + offs
    return tl.load(qw_base + rows[:, None] * stride_wq + offs_d[None, :]), tl.load(lse_base + rows)


@triton.jit
def _skew_tile_probs(q, lse, k, k_pos, key_ok, q_first, k_first, offs, BLOCK: tl.constexpr):
    """Probabilities [BLOCK, BLOCK] of a window block (pre-scaled queries q [BLOCK, D] at positions q_first + offs)
    against the key tile k [BLOCK, D] at positions k_pos: exp2(s - lse) with lse = row max + log2(row sum) (+inf on
    padding rows, so they give exactly 0); future keys and keys past the sample's end are zeroed on the causal-edge
    tiles only."""
    p = tl.math.exp2(tl.dot(q, tl.trans(k)) - lse[:, None])
    if k_first + BLOCK > q_first:
        p = tl.where(key_ok[None, :] & (k_pos[None, :] <= (q_first + offs)[:, None]), p, 0.0)
    return p


@triton.jit
def _skew_emit_band(acc, carry, band, plain, slash_base, qc0, seq_len, offs, BLOCK: tl.constexpr):
    """Diagonal sums of the band-sum tile `acc` [BLOCK, BLOCK] (entry (a, j) sits on diagonal a - j of band `band`).

    Returns `up` and stores `low + carry`, indexed by u in [0, BLOCK): low[u] = sum of diagonal BLOCK - 1 - u
    (offset qc0 - band * BLOCK + BLOCK - 1 - u), up[u] = sum of diagonal -1 - u, which is entry u of the NEXT band
    (64 offsets lower); `carry` is the previous band's `up`. Plain store when no other program adds to the band.
    The extraction is a circular tl.gather as in the banded pass, G[a, u] = acc[a, (a - (BLOCK - 1) + u) mod BLOCK]
    (the wrapped entries are the `up` diagonals). A session-5 alternative wrote the tile to a per-program scratch
    tile and read it back skewed ("skew" / "skew_pipe"): 1.4-1.5x slower on the H200 in sessions 5 and 7
    (benchmarks/results/sums_s7/sweep.log: 2.66 / 2.79 vs 1.91 ms at 128K), removed in session 7.
    """
    rows = offs[:, None]
    cols = offs[None, :]
    j = rows - (BLOCK - 1) + cols  # column of row a on diagonal BLOCK - 1 - u; wrapped (+ BLOCK): -1 - u
    g = tl.gather(acc, j & (BLOCK - 1), 1)
    low = tl.sum(tl.where(j >= 0, g, 0.0), 0)
    up = tl.sum(tl.where(j >= 0, 0.0, g), 0)
    offset = qc0 - band * BLOCK + (BLOCK - 1) - offs
    ok = (offset >= 0) & (offset < seq_len)
    if plain:
        tl.store(slash_base + offset, low + carry, mask=ok)
    else:
        tl.atomic_add(slash_base + offset, low + carry, mask=ok, sem="relaxed")
    return up


@triton.jit(do_not_specialize=["tiles_per_split", "n_chunks"])  # one compile per launch for every length / window
def _window_sums_skew(QW, K, cu_seqlens, Lse, Vertical, Slash, num_q_heads, window, tiles_per_split, n_chunks,
                      stride_wb, stride_wh, stride_wq, stride_kn, stride_kh, stride_lb, stride_lh,
                      stride_oc, stride_ob, stride_oh,
                      GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, NQ: tl.constexpr,
                      Q_RESIDENT: tl.constexpr):
    """One program per (query head, run of key tiles, chunk of NQ x BLOCK window queries; NQ in 1, 2, 4): vertical
    and slash sums with ONE diagonal extraction per key tile instead of one per (key tile, query block).

    Tiles (query block m, key tile n) with the same e = n - m cover the same diagonal offsets (q_first - k_first =
    qc0 - BLOCK * e), entry (a, j) on offset qc0 - BLOCK * e + a - j. So their probabilities are first ADDED
    elementwise into a band-sum tile A_e (registers), and only the finished A_e goes through the skew
    (`_skew_emit_band`): NQ x fewer skews than the banded pass. Walking key tiles in order, tile n adds to
    A_n .. A_{n-NQ+1} (ring acc0..acc{NQ-1}, acc_m = A_{n-m}); A_{n-NQ+1} is final after tile n. Vertical sums: the
    NQ blocks' probabilities of tile n are added elementwise too, then reduced once per tile (the program owns its
    keys). Band e is written by every program whose emitted range [n_lo - NQ + 1, n_hi] contains it: runs of >= NQ
    tiles make that at most two (two atomic addends onto zeros: the same sum in either order, so the result is
    deterministic; the host uses runs of >= 6); bands inside a run are plain stores. Windows longer than NQ x BLOCK run as chunks.

    QW [B, Hq, W_pad, D]: window queries pre-scaled by scale * log2(e) (rows past the window zero);
    Lse [B, Hq, W_pad] fp32 (row max + log2 row sum, +inf past the window). Outputs [C, B, Hq, max_len] per chunk.
    """
    # axis 0 = (query head, chunk), chunk fastest: the chunks and the GQA heads sharing a KV head run side by side,
    # so a key tile is fetched from HBM once and re-read from L2
    chunk = tl.program_id(0) % n_chunks
    bh = tl.program_id(0) // n_chunks
    split = tl.program_id(1)
    b = bh // num_q_heads
    h = bh % num_q_heads
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    start = seq_start.to(tl.int64)  # 64-bit row offsets: packed batches may exceed 2**31 elements
    w = tl.minimum(window, seq_len)
    row0 = chunk * NQ * BLOCK  # the chunk's first window row
    if row0 >= w:
        return
    qc0 = seq_len - w + row0  # position of that query
    n_tiles = tl.cdiv(tl.minimum(qc0 + NQ * BLOCK, seq_len), BLOCK)  # the chunk's last query sees every earlier key
    n_lo = split * tiles_per_split
    if n_lo >= n_tiles:
        return
    n_hi = tl.minimum(n_lo + tiles_per_split, n_tiles)
    offs = tl.arange(0, BLOCK)
    offs_d = tl.arange(0, HEAD_DIM)
    k_base = K + start * stride_kn + (h // GROUP) * stride_kh
    qw_base = QW + b * stride_wb + h * stride_wh + row0 * stride_wq
    lse_base = Lse + b * stride_lb + h * stride_lh + row0
    out_base = chunk * stride_oc + b * stride_ob + h * stride_oh
    acc0 = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    acc3 = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    carry = tl.zeros([BLOCK], dtype=tl.float32)
    if Q_RESIDENT:  # the chunk's queries, loaded once (Triton keeps loop-invariant dot operands in shared memory)
        q0, lse0 = _skew_load_block(qw_base, lse_base, 0, offs, offs_d, stride_wq, BLOCK)
        if NQ >= 2:
            q1, lse1 = _skew_load_block(qw_base, lse_base, 1, offs, offs_d, stride_wq, BLOCK)
        if NQ == 4:
            q2, lse2 = _skew_load_block(qw_base, lse_base, 2, offs, offs_d, stride_wq, BLOCK)
            q3, lse3 = _skew_load_block(qw_base, lse_base, 3, offs, offs_d, stride_wq, BLOCK)
    for n in range(n_lo, n_hi):
        k_first = n * BLOCK
        k_pos = k_first + offs
        key_ok = k_pos < seq_len
        k = tl.load(k_base + k_pos[:, None] * stride_kn + offs_d[None, :], mask=key_ok[:, None], other=0.0)
        # every block is computed, also those whose queries all precede the tile (the causal mask zeroes them) or
        # lie past the window (lse +inf): no branch around the loads, so Triton can pipeline them (num_stages)
        if not Q_RESIDENT:
            q0, lse0 = _skew_load_block(qw_base, lse_base, 0, offs, offs_d, stride_wq, BLOCK)
        p = _skew_tile_probs(q0, lse0, k, k_pos, key_ok, qc0, k_first, offs, BLOCK)
        acc0 += p
        vert = p
        if NQ >= 2:
            if not Q_RESIDENT:
                q1, lse1 = _skew_load_block(qw_base, lse_base, 1, offs, offs_d, stride_wq, BLOCK)
            p = _skew_tile_probs(q1, lse1, k, k_pos, key_ok, qc0 + BLOCK, k_first, offs, BLOCK)
            acc1 += p
            vert += p
        if NQ == 4:
            if not Q_RESIDENT:
                q2, lse2 = _skew_load_block(qw_base, lse_base, 2, offs, offs_d, stride_wq, BLOCK)
                q3, lse3 = _skew_load_block(qw_base, lse_base, 3, offs, offs_d, stride_wq, BLOCK)
            p = _skew_tile_probs(q2, lse2, k, k_pos, key_ok, qc0 + 2 * BLOCK, k_first, offs, BLOCK)
            acc2 += p
            vert += p
            p = _skew_tile_probs(q3, lse3, k, k_pos, key_ok, qc0 + 3 * BLOCK, k_first, offs, BLOCK)
            acc3 += p
            vert += p
        tl.store(Vertical + out_base + k_pos, tl.sum(vert, 0), mask=key_ok)
        # A_{n-NQ+1} is final: emit band n - NQ + 1 (plain store when band n - NQ's tile was also built here)
        plain = n - NQ >= n_lo
        if NQ == 4:
            carry = _skew_emit_band(acc3, carry, n - 3, plain, Slash + out_base, qc0, seq_len, offs, BLOCK)
            acc3 = acc2
            acc2 = acc1
            acc1 = acc0
        elif NQ == 2:
            carry = _skew_emit_band(acc1, carry, n - 1, plain, Slash + out_base, qc0, seq_len, offs, BLOCK)
            acc1 = acc0
        else:
            carry = _skew_emit_band(acc0, carry, n, plain, Slash + out_base, qc0, seq_len, offs, BLOCK)
        acc0 = tl.zeros([BLOCK, BLOCK], dtype=tl.float32)
    # bands n_hi - NQ + 1 .. n_hi: the next run adds to them (or nobody, past the last tile): atomics
    if NQ == 4:
        carry = _skew_emit_band(acc3, carry, n_hi - 3, False, Slash + out_base, qc0, seq_len, offs, BLOCK)
        carry = _skew_emit_band(acc2, carry, n_hi - 2, False, Slash + out_base, qc0, seq_len, offs, BLOCK)
    if NQ >= 2:
        carry = _skew_emit_band(acc1, carry, n_hi - 1, False, Slash + out_base, qc0, seq_len, offs, BLOCK)
    offset = qc0 - n_hi * BLOCK + (BLOCK - 1) - offs
    tl.atomic_add(Slash + out_base + offset, carry, mask=(offset >= 0) & (offset < seq_len), sem="relaxed")


def _row_statistics(q, k, cu_seqlens, window, qk_scale, w_max, longest, block_m, block_n, num_warps=4, num_stages=3,
                    programs=528, merge=True):
    """Per window query: the max and 1 / sum of exp2 over its causal keys, `[B, Hq, w_max]` fp32 each.

    The keys are split so the pass launches about `programs` programs; the splits merge in torch, or, with
    merge=False, are returned as they are (`[B, Hq, splits, w_max]` partial max and sum, for `_skew_prep`).
    """
    batch, num_q_heads, head_dim = cu_seqlens.numel() - 1, q.shape[1], q.shape[2]
    n_iblocks = triton.cdiv(w_max, block_m)
    splits = max(1, min(triton.cdiv(programs, n_iblocks * batch * num_q_heads), triton.cdiv(longest, 4 * block_n)))
    keys_per_split = triton.cdiv(triton.cdiv(longest, splits), block_n) * block_n
    splits = triton.cdiv(longest, keys_per_split)  # (no empty split)
    part_max = torch.full((batch, num_q_heads, splits, w_max), float("-inf"), device=q.device)
    part_sum = torch.zeros((batch, num_q_heads, splits, w_max), device=q.device)
    _window_stats[(n_iblocks, batch * num_q_heads, splits)](
        q, k, cu_seqlens, part_max, part_sum, qk_scale, num_q_heads, window, keys_per_split,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        part_max.stride(0), part_max.stride(1), part_max.stride(2),
        GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
        num_stages=num_stages,
    )
    if not merge:
        return part_max, part_sum
    row_max = part_max.max(dim=2).values
    row_max = torch.where(row_max == float("-inf"), 0.0, row_max)
    row_sum = (part_sum * torch.exp2(part_max - row_max[:, :, None, :])).sum(dim=2)
    row_inv_sum = torch.where(row_sum > 0, 1.0 / row_sum, 0.0).contiguous()
    return row_max.contiguous(), row_inv_sum


#: programs the banded sums pass aims for (about 8 per SM of an H100) and its (num_warps, num_stages)
SUMS_PROGRAMS = 1024
SUMS_LAUNCH = (4, 2)


#: the sums pass variants: "banded" (the fastest measured below 64K tokens) and "atomic" (the first version, kept for
#: comparison runs). A session-3 "resident" variant (window queries kept on chip, one [256, 64] tile per key tile) was
#: measured SLOWER on the H100 (sums 5.24 vs 4.16 ms at 128K, benchmarks/results/vs_s3) and removed; see git history.
#: Session 5: "skew_gather" (band-sum tiles, one diagonal extraction per key tile, `_window_sums_skew`).
VARIANTS = ("banded", "atomic", "skew_gather")
#: what `variant=None` (the library path: VerticalSlash / FlexPrefill `select`) uses; "auto" = "skew_gather" when
#: the longest sequence has >= SKEW_MIN_LENGTH tokens, else "banded". Measured on the H200 (2026-12-02,
#: benchmarks/results/vs_est_s5, sums ms at window 256 / 512): 128K banded 4.34 / 7.93, skew_gather 3.44 / 5.50;
#: 64K 2.49 / 4.18 vs 2.39 / 3.37; but 32K 1.64 / 2.31 vs 1.86 / 2.33 and 16K 1.04 / 1.56 vs 1.58 / 1.87.
DEFAULT_VARIANT = "auto"
SKEW_MIN_LENGTH = 65536

#: skew_gather: programs aimed for and (NQ, num_warps, num_stages, Q resident). NQ = 64-query blocks per program
#: (the band-sum ring: NQ [64, 64] fp32 tiles in registers besides the vertical tile and the scores); longer windows
#: (VS 256 = 4 blocks, FlexPrefill 512) run as chunks of NQ blocks, each into its own output rows, summed at the end.
#: Q resident: the chunk's queries are loaded once before the key loop (shared memory) instead of per key tile.
#: skew_gather: the fastest of 26 launches swept on the H200 at 128K (session 7, benchmarks/results/sums_s7/sweep.log:
#: NQ 1 / 2 / 4, 4 / 8 warps, 1-3 stages, Q resident or not): (4, 8, 3, 1) 1.762 / 3.452 ms at window 256 / 512,
#: against 1.906 / 3.770 for the session-5 pick (4, 8, 2, 1) and 1.830 / 3.600 for (4, 4, 1, 1); 3 stages without
#: resident Q need 256 KB of shared memory (over the 227 KB limit). NQ 4 fills all 255 registers at 8 warps.
#: programs aimed for: session 8 (benchmarks/results/s8/logs/call2/sweep2.log): 2112 -> 1.756 / 3.392 ms at window
#: 256 / 512, 1024 -> 1.761 / 3.466.
SKEW_PROGRAMS = 2112
SKEW_LAUNCH = {"skew_gather": (4, 8, 3, 1)}
#: statistics pass of skew_gather (BLOCK_M, BLOCK_N, num_warps, num_stages, programs). H200, 128K: 128-key tiles
#: 0.720 / 1.282 ms at window 256 / 512 against 0.730 / 1.420 for the banded default's (64, 64, 4, 3) (session 7,
#: benchmarks/results/sums_s7c/join2.log; 8 warps 0.996 / 1.668, 4 stages 0.885 / 1.534); 128-query blocks were
#: slower in session 5: 0.881 vs 0.757 ms, 1.556 vs 1.453 ms (vs_est_s5/sums_compare.log). Session 8
#: (benchmarks/results/s8/logs/call2/sweep2.log): ~2112 programs (2176 at window 256) 0.675 ms against 0.729 for
#: 528 (640), 1.297 vs 1.289 at window 512; programs with 2 or 4 query blocks loaded once lost (0.70-1.95 ms,
#: logs/call1/sweep.log).
SKEW_STATS = (64, 128, 4, 3, 2112)


@triton.jit
def _skew_prep(Q, cu_seqlens, PartMax, PartSum, QW, Lse, qk_scale, num_q_heads, window, w_max, splits,
               stride_qn, stride_qh, stride_pb, stride_ph, stride_ps, stride_wb, stride_wh, stride_wq,
               stride_lb, stride_lh, HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr):
    """Program (query head, block of window rows): the skew pass's inputs in one launch (was ~35 torch ops, whose
    host time left the GPU idle between the statistics and the sums pass at 128K).

    QW [B, Hq, W_pad, D]: the sample's last w_b queries scaled by qk_scale and rounded to q's dtype (as the
    statistics pass scales them), rows >= w_b zero. Lse [B, Hq, W_pad]: row max + log2(row sum) merged from the
    statistics pass's per-split partials (`_row_statistics(merge=False)`, the formulas of its torch merge:
    max over splits, sum * exp2(max_s - max), 1 / sum, max - log2(1 / sum)), +inf on rows >= w_b.
    """
    bh = tl.program_id(0)
    b = bh // num_q_heads
    h = bh % num_q_heads
    seq_start = tl.load(cu_seqlens + b)
    seq_len = tl.load(cu_seqlens + b + 1) - seq_start
    w = tl.minimum(window, seq_len)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    valid = rows < w
    offs_d = tl.arange(0, HEAD_DIM)
    q_pos = seq_start.to(tl.int64) + seq_len - w + rows
    qv = tl.load(Q + q_pos[:, None] * stride_qn + h * stride_qh + offs_d[None, :], mask=valid[:, None], other=0.0)
    qv = (qv.to(tl.float32) * qk_scale).to(QW.dtype.element_ty)
    qv = tl.where(valid[:, None], qv, 0.0)  # rows past the window: exact zeros (never NaN from q's padding)
    tl.store(QW + b * stride_wb + h * stride_wh + rows[:, None] * stride_wq + offs_d[None, :], qv)
    part = PartMax + b * stride_pb + h * stride_ph + rows
    stat_ok = valid & (rows < w_max)
    row_max = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
    for split in range(splits):
        row_max = tl.maximum(row_max, tl.load(part + split * stride_ps, mask=stat_ok, other=float("-inf")))
    row_max = tl.where(row_max == float("-inf"), 0.0, row_max)
    row_sum = tl.zeros([BLOCK_R], dtype=tl.float32)
    part_sum = PartSum + b * stride_pb + h * stride_ph + rows
    for split in range(splits):
        m_s = tl.load(part + split * stride_ps, mask=stat_ok, other=float("-inf"))
        l_s = tl.load(part_sum + split * stride_ps, mask=stat_ok, other=0.0)
        row_sum += l_s * tl.math.exp2(m_s - row_max)
    has_mass = row_sum > 0  # (safe operands on the other rows: tl.where evaluates both sides)
    inv = tl.where(has_mass, tl.math.div_rn(tl.full([BLOCK_R], 1.0, tl.float32), tl.where(has_mass, row_sum, 1.0)),
                   0.0)
    lse = tl.where(inv > 0, row_max - tl.math.log2(tl.where(inv > 0, inv, 1.0)), float("inf"))
    tl.store(Lse + b * stride_lb + h * stride_lh + rows, tl.where(valid, lse, float("inf")))


def _skew_inputs_torch(q, cu_seqlens, window, qk_scale, w_max, w_pad, row_max, row_inv_sum):
    """The torch version of `_skew_prep` (the pre-session-6 code path): window queries `[B, Hq, w_pad, D]` and lse
    `[B, Hq, w_pad]` from merged statistics. Kept as its reference (tests)."""
    batch, num_q_heads, head_dim = cu_seqlens.numel() - 1, q.shape[1], q.shape[2]
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    w_b = lens.clamp(max=window)
    rows = torch.arange(w_pad, device=q.device)
    valid = rows[None, :] < w_b[:, None]
    pos = torch.where(valid, (cu_seqlens[:-1].long() + lens - w_b)[:, None] + rows[None, :], 0)
    qw = (q[pos.reshape(-1)].float() * qk_scale).to(q.dtype).view(batch, w_pad, num_q_heads, head_dim)
    qw = torch.where(valid[:, :, None, None], qw, 0).transpose(1, 2).contiguous()  # where: NaN rows must not leak
    lse = torch.full((batch, num_q_heads, w_pad), float("inf"), device=q.device)
    lse[:, :, :w_max] = torch.where(row_inv_sum > 0, row_max - torch.log2(row_inv_sum), float("inf"))
    return qw, lse


def _skew_sums(q, k, cu_seqlens, window, qk_scale, w_max, longest, part_max, part_sum, variant):
    """Vertical and slash sums through `_window_sums_skew` (see there); returns `[B, Hq, longest]` fp32 each.

    part_max, part_sum: `[B, Hq, splits, w_max]` partial row statistics (`_row_statistics(merge=False)`)."""
    batch, num_q_heads, head_dim = cu_seqlens.numel() - 1, q.shape[1], q.shape[2]
    block = 64
    nq, num_warps, num_stages, *rest = SKEW_LAUNCH[variant]
    q_resident = bool(rest[0]) if rest else False
    if nq not in (1, 2, 4):
        raise ValueError(f"SKEW_LAUNCH[{variant!r}]: NQ must be 1, 2 or 4, got {nq}")
    chunks = triton.cdiv(w_max, nq * block)
    w_pad = chunks * nq * block
    # window queries [B, Hq, w_pad, D], scaled once (the same bf16 rounding as the in-kernel scaling of the
    # statistics pass), and their lse; rows past a sample's window are 0 and their lse +inf, so they add nothing
    qw = torch.empty((batch, num_q_heads, w_pad, head_dim), device=q.device, dtype=q.dtype)
    lse = torch.empty((batch, num_q_heads, w_pad), device=q.device, dtype=torch.float32)
    prep_rows = 64
    _skew_prep[(batch * num_q_heads, w_pad // prep_rows)](
        q, cu_seqlens, part_max, part_sum, qw, lse, qk_scale, num_q_heads, window, w_max, part_max.shape[2],
        q.stride(0), q.stride(1), part_max.stride(0), part_max.stride(1), part_max.stride(2),
        qw.stride(0), qw.stride(1), qw.stride(2), lse.stride(0), lse.stride(1),
        HEAD_DIM=head_dim, BLOCK_R=prep_rows, num_warps=4,
    )
    n_tiles = triton.cdiv(longest, block)
    # runs of >= 6 tiles (>= NQ needed) so that a band is written by at most two programs (see the kernel)
    splits = max(1, min(triton.cdiv(SKEW_PROGRAMS, batch * num_q_heads * chunks), n_tiles // 6))
    tiles_per_split = triton.cdiv(n_tiles, splits)
    splits = triton.cdiv(n_tiles, tiles_per_split)
    vertical = torch.zeros((chunks, batch, num_q_heads, longest), device=q.device, dtype=torch.float32)
    slash = torch.zeros_like(vertical)
    _window_sums_skew[(batch * num_q_heads * chunks, splits)](
        qw, k, cu_seqlens, lse, vertical, slash, num_q_heads, window, tiles_per_split, chunks,
        qw.stride(0), qw.stride(1), qw.stride(2), k.stride(0), k.stride(1), lse.stride(0), lse.stride(1),
        vertical.stride(0), vertical.stride(1), vertical.stride(2),
        GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim, BLOCK=block, NQ=nq,
        Q_RESIDENT=q_resident, num_warps=num_warps, num_stages=num_stages,
    )
    if chunks == 1:
        return vertical[0], slash[0]
    return vertical.sum(0), slash.sum(0)


def triton_last_window_sums(
    q: torch.Tensor,
    k: torch.Tensor,
    cu_seqlens: torch.Tensor,
    window: int,
    scale: Optional[float] = None,
    blocks: Optional[Tuple[int, int, int, int]] = None,
    variant: Optional[str] = None,
    max_len: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Vertical and slash sums of the last-window softmax (see naive_last_window_sums).

    max_len: the longest sample's length when the caller knows it on the host (the library's select does): no
    device-to-host read here, so the launches queue behind the GPU's earlier work instead of waiting for it.

    blocks: optional (stats BLOCK_M, stats BLOCK_N, sums BLOCK_M, sums BLOCK_N) override (benchmark tuning; the
    banded sums pass always uses 64 x 64 tiles).
    variant: None (= DEFAULT_VARIANT, "auto": skew_gather from SKEW_MIN_LENGTH tokens, else banded), "banded"
    (64-query blocks reloaded per key tile; atomics only at run edges, deterministic), "atomic" (the first version:
    one program per key tile, 127 atomics per tile and query block), "skew_gather" (band-sum tiles, one diagonal
    extraction per key tile; deterministic; see `_window_sums_skew`).

    Args:
        q: [N, Hq, D], k: [N, Hkv, D] packed varlen; cu_seqlens [B+1] int32; window: queries per sample.
    Returns:
        vertical [B, Hq, max_len] fp32 (key j), slash [B, Hq, max_len] fp32 (offset o = q_pos - k_pos).
    """
    if q.shape[-1] not in (64, 128):
        raise ValueError(f"triton_last_window_sums supports head dims 64 and 128, got {q.shape[-1]}: pad the head "
                         "dim or use backend='naive'")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    batch = cu_seqlens.numel() - 1
    cu_seqlens = cu_seqlens.to(torch.int32)
    lens = cu_seqlens[1:] - cu_seqlens[:-1]
    longest = int(lens.max()) if max_len is None else int(max_len)
    variant = DEFAULT_VARIANT if variant is None else variant
    if variant == "auto":
        variant = "skew_gather" if longest >= SKEW_MIN_LENGTH else "banded"
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS} or 'auto', got {variant!r}")
    w_max = min(window, longest)
    scale = head_dim ** -0.5 if scale is None else scale
    qk_scale = scale * LOG2E
    group = num_q_heads // k.shape[1]
    stats_m, stats_n, sums_m, sums_n = blocks or DEFAULT_BLOCKS
    stats_launch = (4, 3)
    if variant == "skew_gather" and blocks is None:
        stats_m, stats_n, *stats_launch = SKEW_STATS
    if variant == "skew_gather":  # the skew pass merges the statistics itself (`_skew_prep`): fewer host ops
        part_max, part_sum = _row_statistics(q, k, cu_seqlens, window, qk_scale, w_max, longest, stats_m, stats_n,
                                             *stats_launch, merge=False)
        return _skew_sums(q, k, cu_seqlens, window, qk_scale, w_max, longest, part_max, part_sum, variant)
    row_max, row_inv_sum = _row_statistics(q, k, cu_seqlens, window, qk_scale, w_max, longest, stats_m, stats_n,
                                           *stats_launch)
    vertical = torch.zeros((batch, num_q_heads, longest), device=q.device, dtype=torch.float32)
    slash = torch.zeros_like(vertical)
    if variant == "atomic":
        grid = (triton.cdiv(longest, sums_n), batch * num_q_heads)
        _window_sums[grid](
            q, k, cu_seqlens, row_max, row_inv_sum, vertical, slash, qk_scale, num_q_heads, window,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), row_max.stride(0), row_max.stride(1),
            vertical.stride(0), vertical.stride(1),
            GROUP=group, HEAD_DIM=head_dim, BLOCK_M=sums_m, BLOCK_N=sums_n,
            N_DIAG=triton.next_power_of_2(sums_m + sums_n - 1), num_warps=4, num_stages=2,
        )
        return vertical, slash
    block = 64
    n_qblocks = triton.cdiv(w_max, block)
    n_tiles = triton.cdiv(longest, block)
    # Runs of key tiles: enough programs to fill the GPU, each run longer than n_qblocks + 1 tiles so that a band
    # straddles at most two runs (two atomic addends: an order-independent sum).
    splits = max(1, min(triton.cdiv(SUMS_PROGRAMS, batch * num_q_heads), n_tiles // (n_qblocks + 2)))
    tiles_per_split = triton.cdiv(n_tiles, splits)
    splits = triton.cdiv(n_tiles, tiles_per_split)
    _window_sums_banded[(batch * num_q_heads, splits)](
        q, k, cu_seqlens, row_max, row_inv_sum, vertical, slash, qk_scale, num_q_heads, window, tiles_per_split,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), row_max.stride(0), row_max.stride(1),
        vertical.stride(0), vertical.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK=block, BANDS=triton.next_power_of_2(n_qblocks + 1),
        num_warps=SUMS_LAUNCH[0], num_stages=SUMS_LAUNCH[1],
    )
    return vertical, slash


def triton_pooled_block_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    cu_seqlens: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """Block-Sparse estimation on the device (see naive_pooled_block_scores).

    Pooling sums each sample's whole blocks through a `[nb, chunk, H, D]` view (fp32 accumulation, no fp32 copy of
    q or k); the scores are one batched fp32 matmul per GQA group (cuBLAS), so nothing here needs a custom kernel.

    Args:
        q: [N, Hq, D], k: [N, Hkv, D] packed varlen; cu_seqlens [B+1] int32; chunk_size: tokens per block.
    Returns:
        [B, Hq, nb, nb] fp32, nb = ceil(max_len / chunk_size); blocks past a sample's end score 0.
    """
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = k.shape[1]
    group = num_q_heads // num_kv_heads
    pooled = [pooled_block_means(x, cu_seqlens, chunk_size) for x in (q, k)]  # [B, nb, H, D] fp32
    batch, num_blocks = pooled[0].shape[:2]
    q_pool = pooled[0].view(batch, num_blocks, num_kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)
    k_pool = pooled[1].permute(0, 2, 3, 1)[:, :, None]  # [B, Hkv, 1, D, nb]
    scores = torch.matmul(q_pool, k_pool)  # [B, Hkv, G, nb, nb]
    return scores.reshape(batch, num_q_heads, num_blocks, num_blocks)
