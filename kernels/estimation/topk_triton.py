"""`stable_topk` in Triton: a radix select of each row's count-th largest score, then one compaction, no host sync.

`stable_topk` (topk.py, the reference) packs scores and indices into int64 keys, runs `torch.topk` and sorts the
chosen indices: ~0.7 ms for 32 rows x 128K at k = 512 on an H100 (topk.py's int64 radix passes are ~30 small
launches) plus a host sync (`torch.aminmax(counts)`) for the output width. Vertical-Slash runs it twice per layer.
Here the width `kmax` comes from the caller (a host-known budget) and the work is 6 launches over the fp32 scores:

* one zero fill of the histograms;
* `_radix_pass_kernel`, 4 launches (one byte each, high byte first) of the row's 32-bit monotone score key
  (`ordered_keys`' high half: fp32 bits, negatives with their 31 low bits flipped, -0.0 as 0.0, then the sign bit
  flipped so that the key is an unsigned 0 .. 2**32 - 1). A row is spread over several programs (the rows are few
  and long: 32 x 128K), each adds the histogram of the byte of the keys that still match the known high bytes to
  the row's histogram (atomics). No program resolves a byte: every program of the next launch re-derives the known
  bytes from the row histograms (256 bins per byte, a few hundred operations), so no ticket, no extra launch.
  The last pass keeps per-program histograms instead (stored, not added) and the number of keys above the
  24-bit prefix per program: the compaction reads its offsets from them.
* `_compact_kernel`: the threshold kth (the count-th largest key) is known; every program keeps its keys > kth and
  the keys == kth whose rank among the row's equal keys is below `count - #(keys > kth)` (ties go to the lower
  index), and writes their indices in index order at `kept before this program + block-wise prefix sum`. Slots
  `[count, kmax)` get -1; descending output writes slot `count - 1 - s` instead of `s`.

Tie rule and -inf: identical to `stable_topk` (the order is score descending, index ascending over all n entries,
-inf included), so -inf entries are only taken when `count` exceeds the finite entries. NaN is not allowed.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._order_key import order_key

__all__ = ["ThresholdTopk", "triton_stable_topk", "triton_threshold_topk"]

BINS = 256  # one byte of the 32-bit key per pass
PASSES = 4
# Launch: keys per tile of a program, and programs per SM in all (rows x programs per row). Session 8, H200, the
# VS rows at 128K (32 x 131072, k = 512; benchmarks/results/s8/logs/call3/topk_sweep.log, device time of the six
# kernels per pattern): 4096-key tiles at 2 programs per SM (8 per row) 134.6 / 135.7 us (vertical / slash)
# against 148.7 / 149.5 for the earlier (2048, 4 per SM: 17 per row); 33 or 64 per row 166-245 us.
BLOCK = 4096
MAX_PROGRAMS_PER_ROW = 64  # bounds the compaction's reads of the per-program last-byte histograms (64 x 256)
PROGRAMS_PER_SM = 2
# The known-threshold selection (FlexPrefill) keeps the session-7 launch (not re-measured with the above).
THRESHOLD_BLOCK = 2048
THRESHOLD_PROGRAMS_PER_SM = 4


@triton.jit
def _load_keys(SCORES, row, stride_r, t, ok, LENS, rows_per_sample, NUM_FORCED: tl.constexpr,
               FORCE: tl.constexpr):
    """int64 keys in [0, 2**32) of the scores at positions `t` (masked by `ok`), ordered as the fp32 scores.

    FORCE: the scores as `forced_scores` (sparse_attn/methods/_prefill.py) would make them, on the fly: positions
    < NUM_FORCED +inf, then positions >= the sample's length (LENS[row // rows_per_sample]) -inf."""
    bits = tl.load(SCORES + row * stride_r + t, mask=ok, other=0.0).to(tl.int32, bitcast=True)
    if FORCE:
        length = tl.load(LENS + row // rows_per_sample)
        bits = tl.where(t < NUM_FORCED, 0x7F800000, bits)  # +inf
        bits = tl.where(t >= length, -8388608, bits)  # -inf (0xFF800000 as int32)
    return order_key(bits).to(tl.int64) + 2147483648  # unsigned order, so that bytes compare like the keys


@triton.jit
def _known_prefix(HIST, row, num_rows, count, NUM_KNOWN: tl.constexpr, BINS: tl.constexpr):
    """The `NUM_KNOWN` high bytes of the row's count-th largest key, from the row histograms of the earlier passes.

    Returns (prefix, need): `prefix` int64 with those bytes in place (lower bytes 0), `need` how many of the keys
    that match the prefix still have to be taken (>= 1 when count >= 1; 0 when count == 0, then the prefix is all
    ones and no key can exceed it)."""
    bins = tl.arange(0, BINS)
    prefix = tl.zeros([1], dtype=tl.int64)
    need = tl.zeros([1], dtype=tl.int64) + count
    for i in tl.static_range(NUM_KNOWN):
        hist = tl.load(HIST + (i * num_rows + row) * BINS + bins).to(tl.int64)
        at_least = tl.sum(hist, 0) - tl.cumsum(hist, 0) + hist  # matching keys with byte >= d
        digit = tl.max(tl.where(at_least[None, :] >= need[:, None], bins[None, :], -1), 1)  # [1]
        above = tl.sum(tl.where(bins[None, :] > digit[:, None], hist[None, :], 0), 1)
        need = need - above
        prefix = prefix + (digit.to(tl.int64) << (24 - 8 * i))
    return prefix, need


@triton.jit
def _radix_pass_kernel(SCORES, COUNTS, HIST, LAST_HIST, LAST_ABOVE, stride_r, num_rows, n, chunk,
                       LENS, rows_per_sample,
                       PASS: tl.constexpr, BINS: tl.constexpr, BLOCK: tl.constexpr, NUM_FORCED: tl.constexpr,
                       FORCE: tl.constexpr):
    """Program (row, chunk): histogram of byte `PASS` (0 = high byte) of the chunk's keys matching the known bytes.

    Passes 0..2 add it to `HIST [3, R, BINS]`; pass 3 stores it to `LAST_HIST [R, P, BINS]` and the chunk's number
    of keys above the 24-bit prefix to `LAST_ABOVE [R, P]`."""
    row = tl.program_id(0)
    part = tl.program_id(1)
    count = tl.load(COUNTS + row).to(tl.int64)
    prefix, need = _known_prefix(HIST, row, num_rows, count, PASS, BINS)
    offs = tl.arange(0, BLOCK)
    hist = tl.zeros([BINS], dtype=tl.int32)
    above = tl.zeros([BLOCK], dtype=tl.int32)
    start = part * chunk
    for t0 in range(start, tl.minimum(start + chunk, n), BLOCK):
        t = t0 + offs
        ok = t < tl.minimum(start + chunk, n)
        key = _load_keys(SCORES, row, stride_r, t, ok, LENS, rows_per_sample, NUM_FORCED, FORCE)
        # the bits above this pass's byte must match the known prefix (pass 0: 32 bits up, every key matches)
        high = key >> (32 - 8 * PASS)
        known = prefix >> (32 - 8 * PASS)  # [1]
        match = ok & (high == known)
        digit = ((key >> (24 - 8 * PASS)) & (BINS - 1)).to(tl.int32)
        hist += tl.histogram(digit, BINS, mask=match)
        if PASS == 3:
            above += (ok & (high > known)).to(tl.int32)
    bins = tl.arange(0, BINS)
    if PASS == 3:
        parts = tl.num_programs(1)
        tl.store(LAST_HIST + (row * parts + part) * BINS + bins, hist)
        tl.store(LAST_ABOVE + row * parts + part + tl.arange(0, 1), tl.sum(above, 0) + tl.zeros([1], tl.int32))
    else:
        tl.atomic_add(HIST + (PASS * num_rows + row) * BINS + bins, hist, mask=hist != 0, sem="relaxed")


@triton.jit
def _compact_kernel(SCORES, COUNTS, HIST, LAST_HIST, LAST_ABOVE, OUT, stride_r, stride_o, num_rows, n, chunk, kmax,
                    LENS, rows_per_sample,
                    DESCENDING: tl.constexpr, BINS: tl.constexpr, BLOCK: tl.constexpr, NUM_FORCED: tl.constexpr,
                    FORCE: tl.constexpr):
    """Program (row, chunk): the chunk's kept indices, in index order, at their slots of the row's output."""
    row = tl.program_id(0)
    part = tl.program_id(1)
    parts = tl.num_programs(1)
    count = tl.load(COUNTS + row).to(tl.int64)
    prefix, need = _known_prefix(HIST, row, num_rows, count, 3, BINS)
    bins = tl.arange(0, BINS)
    # last byte: the row's histogram (sum over chunks) and the part of it in the chunks before this one
    hist = tl.zeros([BINS], dtype=tl.int64)
    hist_before = tl.zeros([BINS], dtype=tl.int64)
    above_before = tl.zeros([1], dtype=tl.int64)
    for q in range(0, parts):
        h = tl.load(LAST_HIST + (row * parts + q) * BINS + bins).to(tl.int64)
        hist += h
        earlier = q < part
        hist_before += tl.where(earlier, h, 0)
        above_before += tl.where(earlier, tl.load(LAST_ABOVE + row * parts + q + tl.arange(0, 1)).to(tl.int64), 0)
    at_least = tl.sum(hist, 0) - tl.cumsum(hist, 0) + hist
    digit = tl.max(tl.where(at_least[None, :] >= need[:, None], bins[None, :], -1), 1)  # [1]
    greater = bins[None, :] > digit[:, None]
    ties_wanted = need - tl.sum(tl.where(greater, hist[None, :], 0), 1)  # keys == kth to take (lowest indices)
    kth = prefix + digit.to(tl.int64)
    above_before += tl.sum(tl.where(greater, hist_before[None, :], 0), 1)
    equal_before = tl.sum(tl.where(bins[None, :] == digit[:, None], hist_before[None, :], 0), 1)
    taken = above_before + tl.minimum(equal_before, ties_wanted)  # [1] kept entries of the earlier chunks
    seen_equal = equal_before
    offs = tl.arange(0, BLOCK)
    start = part * chunk
    stop = tl.minimum(start + chunk, n)
    for t0 in range(start, stop, BLOCK):
        t = t0 + offs
        ok = t < stop
        key = _load_keys(SCORES, row, stride_r, t, ok, LENS, rows_per_sample, NUM_FORCED, FORCE)
        equal = (ok & (key == kth)).to(tl.int32)
        equal_rank = seen_equal + (tl.cumsum(equal, 0) - equal).to(tl.int64)
        keep = (ok & (key > kth)) | ((equal != 0) & (equal_rank < ties_wanted))
        keep32 = keep.to(tl.int32)
        slot = taken + (tl.cumsum(keep32, 0) - keep32).to(tl.int64)
        if DESCENDING:
            slot = count - 1 - slot
        # slot < kmax holds when counts <= kmax (the caller's promise); the mask keeps a broken promise in bounds
        tl.store(OUT + row * stride_o + slot, t, mask=keep & (slot >= 0) & (slot < kmax))
        taken += tl.sum(keep32, 0).to(tl.int64)
        seen_equal += tl.sum(equal, 0).to(tl.int64)
    # -1 in the unused slots [count, kmax); this chunk's positions cover the same range of slots (kmax <= n)
    for t0 in range(start, stop, BLOCK):
        s = t0 + offs
        tl.store(OUT + row * stride_o + s, tl.full([BLOCK], -1, tl.int32), mask=(s >= count) & (s < kmax))


def _programs_per_row(rows: int, n: int, device: torch.device, block: int, per_sm: int = PROGRAMS_PER_SM) -> int:
    tiles = triton.cdiv(n, block)
    if device.type == "cuda":
        target = per_sm * torch.cuda.get_device_properties(device).multi_processor_count
    else:  # the interpreter: a few chunks per row so that the offsets between chunks are exercised
        target = 4 * rows
    return max(1, min(tiles, triton.cdiv(target, rows), MAX_PROGRAMS_PER_ROW))


def triton_stable_topk(scores: torch.Tensor, counts: torch.Tensor, kmax: int, descending: bool = False,
                       block: int = BLOCK, programs_per_row: int = None, out: torch.Tensor = None,
                       lens: torch.Tensor = None, num_forced: int = 0) -> torch.Tensor:
    """`stable_topk(scores, counts, descending)` entry for entry, with the output width given (no host sync).

    Args:
        scores: `[..., n]` fp32 (other float dtypes are converted), no NaN; `-inf` for entries never to be chosen
            unless `counts` exceeds the finite ones.
        counts: `[...]` int, how many to keep per row; must satisfy `0 <= counts <= kmax` (not checked: that
            would need a host sync; a larger count is cut at `kmax` slots, wrongly).
        kmax: output width, `0 <= kmax <= n`; equals `stable_topk`'s width `max(counts)` when some row's count
            reaches it (otherwise the extra columns are -1).
        descending: indices in descending order (slash offsets) instead of ascending.
        block, programs_per_row: tile size (power of 2) and programs per row (default: ~4 programs per SM in all).
        out: optional `[..., kmax]` int32 contiguous tensor to write (every entry is written).
        lens, num_forced: optional; select on `forced_scores(scores, lens, num_forced)` (sparse_attn/methods/
            _prefill.py: the first num_forced positions +inf, positions >= lens[b] -inf) without materialising it;
            scores `[B, ..., n]` with `lens [B]` (rows of a sample are consecutive).

    Returns:
        `[..., kmax]` int32: the `counts` best indices of each row (score descending, then index ascending),
        sorted by index, -1 padded after `counts`.
    """
    if counts.shape != scores.shape[:-1]:
        raise ValueError(f"counts {tuple(counts.shape)} must match scores {tuple(scores.shape)} without the last dim")
    num = scores.shape[-1]
    if not 0 <= kmax <= num:
        raise ValueError(f"kmax must lie in [0, n={num}], got {kmax}; pass the largest count (a host-known budget)")
    if num >= 2 ** 31:
        raise ValueError(f"rows of {num} entries overflow the int32 histograms; split the rows")
    if block & (block - 1) or block < 16:
        raise ValueError(f"block must be a power of 2 >= 16, got {block}")
    lead = scores.shape[:-1]
    rows = counts.numel()
    if out is None:
        out = torch.empty(*lead, kmax, dtype=torch.int32, device=scores.device)
    elif out.shape != (*lead, kmax) or out.dtype != torch.int32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous int32 tensor of shape {(*lead, kmax)}, got {out.dtype} "
                         f"{tuple(out.shape)}")
    if rows == 0 or kmax == 0:
        return out
    flat = scores.reshape(rows, num)
    if flat.dtype != torch.float32:
        flat = flat.float()
    if flat.stride(-1) != 1:
        flat = flat.contiguous()
    flat_counts = counts.reshape(rows)
    if flat_counts.dtype not in (torch.int32, torch.int64):
        flat_counts = flat_counts.long()
    parts = programs_per_row or _programs_per_row(rows, num, scores.device, block)
    chunk = triton.cdiv(triton.cdiv(num, parts), block) * block
    parts = triton.cdiv(num, chunk)
    force = lens is not None
    rows_per_sample = rows // lens.numel() if force else 1
    if force and rows_per_sample * lens.numel() != rows:
        raise ValueError(f"lens [{lens.numel()}] must divide the {rows} rows (scores [B, ..., n], lens [B])")
    lens_arg = lens.to(device=scores.device, dtype=torch.int32) if force else flat_counts
    hist = torch.zeros(PASSES - 1, rows, BINS, dtype=torch.int32, device=scores.device)
    last_hist = torch.empty(rows, parts, BINS, dtype=torch.int32, device=scores.device)
    last_above = torch.empty(rows, parts, dtype=torch.int32, device=scores.device)
    grid = (rows, parts)
    for step in range(PASSES):
        _radix_pass_kernel[grid](flat, flat_counts, hist, last_hist, last_above, flat.stride(0), rows, num, chunk,
                                 lens_arg, rows_per_sample, PASS=step, BINS=BINS, BLOCK=block,
                                 NUM_FORCED=num_forced, FORCE=force, num_warps=8)
    out2 = out.view(rows, kmax)
    _compact_kernel[grid](flat, flat_counts, hist, last_hist, last_above, out2, flat.stride(0), out2.stride(0), rows,
                          num, chunk, kmax, lens_arg, rows_per_sample, DESCENDING=descending, BINS=BINS,
                          BLOCK=block, NUM_FORCED=num_forced, FORCE=force, num_warps=8)
    return out


# -- threshold_topk in Triton: the threshold is known (FlexPrefill reads it off its budget sort) ------------------


@triton.jit
def _threshold_count_kernel(SCORES, KTH, ABOVE, EQUAL, stride_r, n, chunk, BLOCK: tl.constexpr):
    """Program (row, chunk): how many of the chunk's scores are > kth and == kth (float comparisons)."""
    row = tl.program_id(0)
    part = tl.program_id(1)
    parts = tl.num_programs(1)
    kth = tl.load(KTH + row)
    offs = tl.arange(0, BLOCK)
    start = part * chunk
    stop = tl.minimum(start + chunk, n)
    above = tl.zeros([BLOCK], dtype=tl.int32)
    equal = tl.zeros([BLOCK], dtype=tl.int32)
    for t0 in range(start, stop, BLOCK):
        t = t0 + offs
        ok = t < stop
        s = tl.load(SCORES + row.to(tl.int64) * stride_r + t, mask=ok, other=float("-inf"))
        above += (ok & (s > kth)).to(tl.int32)
        equal += (ok & (s == kth)).to(tl.int32)
    tl.store(ABOVE + row * parts + part + tl.arange(0, 1), tl.sum(above, 0) + tl.zeros([1], tl.int32))
    tl.store(EQUAL + row * parts + part + tl.arange(0, 1), tl.sum(equal, 0) + tl.zeros([1], tl.int32))


@triton.jit
def _threshold_compact_kernel(SCORES, KTH, COUNTS, ABOVE, EQUAL, OUT, stride_r, stride_o, n, chunk, kmax,
                              DESCENDING: tl.constexpr, BLOCK: tl.constexpr, PARTS_POW2: tl.constexpr):
    """Program (row, chunk): the chunk's kept indices (> kth, or == kth among the first `count - #above` ties of
    the row), in index order, at their slots of the row's output; -1 in the slots [count, kmax) it covers."""
    row = tl.program_id(0)
    part = tl.program_id(1)
    parts = tl.num_programs(1)
    kth = tl.load(KTH + row)
    count = tl.load(COUNTS + row).to(tl.int64)
    q = tl.arange(0, PARTS_POW2)
    above = tl.load(ABOVE + row * parts + q, mask=q < parts, other=0).to(tl.int64)
    equal = tl.load(EQUAL + row * parts + q, mask=q < parts, other=0).to(tl.int64)
    ties_wanted = count - tl.sum(above, 0)
    above_before = tl.sum(tl.where(q < part, above, 0), 0)
    seen_equal = tl.sum(tl.where(q < part, equal, 0), 0)
    taken = above_before + tl.maximum(tl.minimum(seen_equal, ties_wanted), 0)
    offs = tl.arange(0, BLOCK)
    start = part * chunk
    stop = tl.minimum(start + chunk, n)
    for t0 in range(start, stop, BLOCK):
        t = t0 + offs
        ok = t < stop
        s = tl.load(SCORES + row.to(tl.int64) * stride_r + t, mask=ok, other=float("-inf"))
        is_equal = (ok & (s == kth)).to(tl.int32)
        equal_rank = seen_equal + (tl.cumsum(is_equal, 0) - is_equal).to(tl.int64)
        keep = (ok & (s > kth)) | ((is_equal != 0) & (equal_rank < ties_wanted))
        keep32 = keep.to(tl.int32)
        slot = taken + (tl.cumsum(keep32, 0) - keep32).to(tl.int64)
        if DESCENDING:
            slot = count - 1 - slot
        tl.store(OUT + row.to(tl.int64) * stride_o + slot, t, mask=keep & (slot >= 0) & (slot < kmax))
        taken += tl.sum(keep32, 0).to(tl.int64)
        seen_equal += tl.sum(is_equal, 0).to(tl.int64)
    for t0 in range(start, stop, BLOCK):  # -1 past the row's count; the chunks together cover [0, n) >= kmax
        s = t0 + offs
        tl.store(OUT + row.to(tl.int64) * stride_o + s, tl.full([BLOCK], -1, tl.int32), mask=(s >= count) & (s < kmax))


def triton_threshold_topk(scores: torch.Tensor, counts: torch.Tensor, kth: torch.Tensor, kmax: int,
                          descending: bool = False, block: int = THRESHOLD_BLOCK,
                          programs_per_row: int = None) -> torch.Tensor:
    """`threshold_topk(scores, counts, kth, descending)` (topk.py) entry for entry, in two launches, no host sync.

    Row r keeps every score > kth[r] and, of the scores == kth[r], the lowest indices until counts[r] are kept;
    the kept indices come out in index order (descending when `descending`), -1 padded to `kmax` slots. Replaces
    the reference's two int32 prefix sums over whole rows (FlexPrefill at 128K: ~1 ms of scans on an H200).
    The two launches are also available apart (`ThresholdTopk`): the counting one needs no `kmax`, so a caller
    that still has to read the width back can queue it first and keep the GPU busy during the read.

    Args:
        scores: `[..., n]` float (converted to fp32), no NaN.
        counts: `[...]` int, `0 <= counts <= kmax` and at most the entries >= kth (not checked: a host sync).
        kth: `[..., 1]` (or `[...]`) the counts-th largest score of each row (+inf where counts == 0).
        kmax: output width (the largest count, known on the host), `0 <= kmax <= n`.
    Returns:
        `[..., kmax]` int32.
    """
    return ThresholdTopk(scores, counts, kth, block, programs_per_row).compact(kmax, descending)


class ThresholdTopk:
    """`triton_threshold_topk` in two steps: the constructor validates and launches the counting kernel (> kth and
    == kth per row chunk), `compact(kmax, descending)` launches the compaction and returns `[..., kmax]` int32."""

    def __init__(self, scores: torch.Tensor, counts: torch.Tensor, kth: torch.Tensor, block: int = THRESHOLD_BLOCK,
                 programs_per_row: int = None):
        if counts.shape != scores.shape[:-1]:
            raise ValueError(f"counts {tuple(counts.shape)} must match scores {tuple(scores.shape)} without the last "
                             "dim")
        if block & (block - 1) or block < 16:
            raise ValueError(f"block must be a power of 2 >= 16, got {block}")
        self.lead, self.num, self.block = scores.shape[:-1], scores.shape[-1], block
        self.rows = rows = counts.numel()
        if kth.numel() != rows:
            raise ValueError(f"kth must hold one threshold per row ({rows}), got {tuple(kth.shape)}")
        self.device = scores.device
        if rows == 0:
            return
        flat = scores.reshape(rows, self.num).float()
        self.flat = flat if flat.stride(-1) == 1 else flat.contiguous()
        self.kth = kth.reshape(rows).float().contiguous()
        self.counts = counts.reshape(rows)
        if self.counts.dtype not in (torch.int32, torch.int64):
            self.counts = self.counts.long()
        parts = programs_per_row or _programs_per_row(rows, self.num, self.device, block, THRESHOLD_PROGRAMS_PER_SM)
        self.chunk = triton.cdiv(triton.cdiv(self.num, parts), block) * block
        self.parts = triton.cdiv(self.num, self.chunk)
        self.above = torch.empty(rows, self.parts, dtype=torch.int32, device=self.device)
        self.equal = torch.empty_like(self.above)
        _threshold_count_kernel[(rows, self.parts)](self.flat, self.kth, self.above, self.equal, self.flat.stride(0),
                                                    self.num, self.chunk, BLOCK=block, num_warps=8)

    def compact(self, kmax: int, descending: bool = False) -> torch.Tensor:
        if not 0 <= kmax <= self.num:
            raise ValueError(f"kmax must lie in [0, n={self.num}], got {kmax}: pass the largest count")
        out = torch.empty(*self.lead, kmax, dtype=torch.int32, device=self.device)
        if self.rows == 0 or kmax == 0:
            return out
        out2 = out.view(self.rows, kmax)
        _threshold_compact_kernel[(self.rows, self.parts)](
            self.flat, self.kth, self.counts, self.above, self.equal, out2, self.flat.stride(0), out2.stride(0),
            self.num, self.chunk, kmax, DESCENDING=descending, BLOCK=self.block,
            PARTS_POW2=max(16, triton.next_power_of_2(self.parts)), num_warps=8)
        return out
