"""What the prefill methods share: result and selection types, dense causal attention, vertical-slash selection.

Every prefill method (Dense, VerticalSlash, BlockSparse, FlexPrefill) offers the same two calls on the varlen packed
layout (`q [N, Hq, D]`, `k, v [N, Hkv, D]`, `cu_seqlens [B+1]` int32, causal within each sample):

- `select(q, k, cu_seqlens, scale=None, backend="auto", seq_lens=None)` -> a selection (index tensors of
  docs/architecture.md) with `sparsity() -> [B, Hq]` measured exactly from the index;
- `prefill(q, k, v, cu_seqlens, scale=None, backend="auto", seq_lens=None)` -> `PrefillResult(out [N, Hq, D],
  sparsity [B, Hq], selection)`.

`seq_lens` (optional, keyword): the sample lengths `[L_0, ..., L_{B-1}]` on the host (Python ints or a CPU tensor),
matching `cu_seqlens` (the caller guarantees it, as vLLM's host `query_start_loc` does). Given, nothing on the
prefill path reads the lengths back from the GPU (a `cu_seqlens.tolist()` drains the CUDA queue: ~0.5 ms of idle
GPU per select at 128K on an H200); the integrations pass them. None: read from `cu_seqlens` (one host sync).

Decisions are made per query head (Hq), reading the shared KV head `h // (Hq // Hkv)`, as in the reference system.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..kernels._dispatch import resolve_backend
from ..kernels._varlen import HostLengths, check_varlen
from ..kernels.estimation.topk import stable_topk, threshold_topk
from ..kernels.vertical_slash import (build_vertical_slash_index, canonical_index, vertical_slash_attention,
                                      vertical_slash_pair_counts)

#: keys always kept by vertical-slash methods as "attention sinks" (the first tokens of the prompt)
NUM_SINK_KEYS = 4
#: nearest diagonals always kept by vertical-slash methods (offsets 0..63, a local window of 64 tokens)
NUM_LOCAL_DIAGONALS = 64


def sample_lengths(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """`[B]` int64 lengths from `cu_seqlens [B+1]`."""
    return (cu_seqlens[1:] - cu_seqlens[:-1]).long()


def causal_pairs(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """`[B]` int64: causal (q, k) pairs of dense attention per sample, `L (L + 1) / 2`."""
    lens = sample_lengths(cu_seqlens)
    return lens * (lens + 1) // 2


def sparsity_from_pairs(pairs: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """`1 - pairs / (L (L + 1) / 2)` as `[B, Hq]` float32 from exact pair counts `pairs [B, Hq]`."""
    total = causal_pairs(cu_seqlens).to(pairs.device)
    return 1.0 - pairs.double() / total[:, None].double()


@dataclass
class PrefillResult:
    """What `prefill` returns: `out [N, Hq, D]` in q's dtype, `sparsity [B, Hq]` float32, the selection used."""

    out: torch.Tensor
    sparsity: torch.Tensor
    selection: Any


@dataclass
class DenseSelection:
    """Dense causal attention selects every causal pair: sparsity 0 for each of the `num_heads` query heads."""

    cu_seqlens: torch.Tensor
    num_heads: int

    def pair_counts(self) -> torch.Tensor:
        """`[B, Hq]` int64 computed causal pairs (all of them)."""
        return causal_pairs(self.cu_seqlens)[:, None].expand(-1, self.num_heads).clone()

    def sparsity(self) -> torch.Tensor:
        return sparsity_from_pairs(self.pair_counts(), self.cu_seqlens).float()


@dataclass
class VerticalSlashSelection:
    """The pattern of Vertical-Slash / FlexPrefill for every sample and query head, and the kernel index built from it.

    Pattern (index ascending / offsets descending, first `count` entries valid, -1 padded):
        vertical_idx `[B, Hq, NV]` int32 key positions, vertical_count `[B, Hq]` int32;
        slash_offsets `[B, Hq, NS]` int32 offsets `q_pos - k_pos`, slash_count `[B, Hq]` int32.
    Kernel index (MInference format, BLOCK = 64, see `sparse_attn.kernels.vertical_slash`):
        block_count `[B, Hq, n_rows]`, block_offset `[B, Hq, n_rows, WB]`, column_count `[B, Hq, n_rows]`,
        column_index `[B, Hq, n_rows, WC]` (widths of the widest row: WB <= min(NS, n_rows), WC <= min(NV, max_len)).
        Slots past a row's count: -1 from the reference builder, unwritten (arbitrary) from the Triton one; no
        kernel reads them, `trimmed()` gives the canonical form.
    """

    cu_seqlens: torch.Tensor
    vertical_idx: torch.Tensor
    vertical_count: torch.Tensor
    slash_offsets: torch.Tensor
    slash_count: torch.Tensor
    block_count: torch.Tensor
    block_offset: torch.Tensor
    column_count: torch.Tensor
    column_index: torch.Tensor
    max_len: Optional[int] = None  # longest sample, when known on the host (the attention then reads nothing back)

    def pair_counts(self) -> torch.Tensor:
        """`[B, Hq]` int64: causal (q, k) pairs the index computes (exact)."""
        return vertical_slash_pair_counts(
            self.cu_seqlens, self.block_count, self.block_offset, self.column_count, self.column_index
        )

    def sparsity(self) -> torch.Tensor:
        """`[B, Hq]` float32: `1 - computed causal pairs / (L (L + 1) / 2)`."""
        return sparsity_from_pairs(self.pair_counts(), self.cu_seqlens).float()

    def trimmed(self) -> "VerticalSlashSelection":
        """The same selection in canonical form: the index cut to its widest row (`max(1, max count)` slots; one
        device read) and every slot past a row's count -1.

        The one-pass Triton builder sizes the index to its upper bounds (`index_widths`) and leaves the slots past
        each row's count unwritten; the reference builder pads them with -1. Two selections are the same exactly
        when their trimmed fields are equal.
        """
        block_width = max(1, int(self.block_count.max())) if self.block_count.numel() else 1
        column_width = max(1, int(self.column_count.max())) if self.column_count.numel() else 1
        _, block_offset, _, column_index = canonical_index(
            self.block_count, self.block_offset[..., :block_width], self.column_count,
            self.column_index[..., :column_width])
        return dataclasses.replace(self, block_offset=block_offset.contiguous(), column_index=column_index.contiguous())


def check_inputs(
    q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, v: Optional[torch.Tensor] = None,
    seq_lens: Optional[HostLengths] = None,
) -> List[int]:
    """Validate the varlen layout (raises ValueError naming the problem); returns the sample lengths.

    With host `seq_lens` they are checked on the host and returned, and cu_seqlens' values are not read
    (`check_varlen`).
    """
    return check_varlen(q, k, cu_seqlens, v, seq_lens=seq_lens)


def dense_causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    scale: Optional[float] = None,
    upcast: bool = False,
    seq_lens: Optional[HostLengths] = None,
) -> torch.Tensor:
    """Causal attention per sample with torch SDPA (GQA through `enable_gqa`, K/V not repeated): `[N, Hq, D]`.

    `upcast=True` computes in fp32 (the reference); otherwise in the input dtype (SDPA's fused kernels accumulate
    in fp32). The output is in q's dtype. `seq_lens`: optional host lengths (see `check_inputs`); the sample starts
    are their prefix sums either way, so cu_seqlens is read back at most once (never with seq_lens).
    """
    lens = check_inputs(q, k, cu_seqlens, v, seq_lens=seq_lens)
    out = torch.empty_like(q)
    start = 0
    for length in lens:
        rows = slice(start, start + length)
        start += length
        q_s, k_s, v_s = (t[rows].transpose(0, 1)[None] for t in (q, k, v))  # [1, H, L, D]
        if upcast:
            q_s, k_s, v_s = q_s.float(), k_s.float(), v_s.float()
        o = F.scaled_dot_product_attention(q_s, k_s, v_s, is_causal=True, scale=scale, enable_gqa=True)
        out[rows] = o[0].transpose(0, 1).to(q.dtype)
    return out


def forced_scores(scores: torch.Tensor, lens: torch.Tensor, num_forced: int) -> torch.Tensor:
    """`[B, Hq, max_len]` fp32 selection scores: entries `< num_forced` +inf (always kept), entries `>= L_b` -inf."""
    positions = torch.arange(scores.shape[-1], device=scores.device)
    beyond = positions[None, None, :] >= lens[:, None, None]  # [B, 1, max_len]
    return scores.float().masked_fill(positions < num_forced, float("inf")).masked_fill(beyond, float("-inf"))


def _threshold_select(vertical_scores, slash_scores, vertical_count, slash_count, vertical_kth, slash_kth, lens):
    """The Triton known-threshold selection of both patterns (FlexPrefill): `(vertical_idx, slash_offsets)`.

    The output widths (the largest counts) depend on the scores, so they are read back once. On CUDA the read is
    an asynchronous copy into pinned memory, and the forced scores and both counting launches are queued behind
    it: the GPU works on them while the host waits, then the host queues the compactions while the GPU is still
    busy (a blocking `.tolist()` first left the GPU idle for the ~0.5 ms of host work after it, at 128K on an
    H200: benchmarks/results/sums_s7b/select_kernels.log).
    """
    from ..kernels.estimation.topk_triton import ThresholdTopk

    widths = torch.stack([vertical_count.max(), slash_count.max()])
    copied = None
    if widths.is_cuda:
        host = torch.empty(widths.shape, dtype=widths.dtype, pin_memory=True)
        host.copy_(widths, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        widths = host
    vertical = ThresholdTopk(forced_scores(vertical_scores, lens, NUM_SINK_KEYS), vertical_count, vertical_kth)
    slash = ThresholdTopk(forced_scores(slash_scores, lens, NUM_LOCAL_DIAGONALS), slash_count, slash_kth)
    if copied is not None:
        copied.synchronize()
    vertical_width, slash_width = widths.tolist()
    return vertical.compact(int(vertical_width), False), slash.compact(int(slash_width), True)


def select_vertical_slash(
    cu_seqlens: torch.Tensor,
    vertical_scores: torch.Tensor,
    slash_scores: torch.Tensor,
    vertical_budget: torch.Tensor,
    slash_budget: torch.Tensor,
    backend: str = "auto",
    vertical_kth: Optional[torch.Tensor] = None,
    slash_kth: Optional[torch.Tensor] = None,
    max_budget: Optional[Tuple[int, int]] = None,
    max_len: Optional[int] = None,
) -> VerticalSlashSelection:
    """Top verticals and slashes per sample and query head, with the forced sinks and local diagonals, and the index.

    Args:
        cu_seqlens: `[B+1]` int32.
        vertical_scores: `[B, Hq, max_len]` score per key (only `j < L_b` are candidates).
        slash_scores: `[B, Hq, max_len]` score per offset `o = q_pos - k_pos` (only `o < L_b` are candidates).
        vertical_budget, slash_budget: `[B, Hq]` int, how many to keep (clamped here to `L_b`).
        backend: index builder backend.
        vertical_kth, slash_kth: optional `[B, Hq, 1]`: the budget-th largest of the FORCED scores
            (`forced_scores`), when the caller knows it already (FlexPrefill, from its budget sort); else one
            `torch.topk` per pattern finds it.
        max_budget: optional host-side `(vertical, slash)` largest entries of the budgets (VerticalSlash: its sizes),
            so that the Triton top-k (`triton_stable_topk`, backend "triton" / CUDA) knows its output width without
            reading the budgets back (a host sync). Must equal the budgets' maxima (a smaller value would cut rows).
        max_len: optional host-side longest sample length (`check_inputs` returns the lengths): the Triton index
            builder and the attention then read nothing back from the device (see `build_vertical_slash_index`).

    The first `NUM_SINK_KEYS` keys and the `NUM_LOCAL_DIAGONALS` nearest diagonals score +inf, so they are kept
    whenever the budget allows (the configs require budgets >= those numbers). Ties go to the lower index
    (`threshold_topk`: the same selection as a stable sort).
    """
    lens = sample_lengths(cu_seqlens).to(vertical_scores.device)  # [B]
    vertical_count = torch.minimum(vertical_budget.long(), lens[:, None])
    slash_count = torch.minimum(slash_budget.long(), lens[:, None])
    # With a known threshold (FlexPrefill) no top-k is needed: the kept entries are those above it plus the lowest
    # tied ones (threshold_topk; on the Triton backend triton_threshold_topk, two launches instead of two int32
    # prefix sums over whole rows, ~1 ms at 128K, with ONE read of both output widths). Without one: on the Triton
    # backend, with the widths known on the host, a radix select + compaction (triton_stable_topk, no host sync);
    # else the int64-key top-k (0.72 ms for 32 heads x 128K, k = 512, H100: profile_vs_estimation_128k.log).
    # All select the same entries (ties -> lower index).
    on_triton = resolve_backend(backend, vertical_scores) == "triton"
    use_triton = max_budget is not None and on_triton
    if on_triton and vertical_kth is not None and slash_kth is not None:
        vertical_idx, slash_offsets = _threshold_select(vertical_scores, slash_scores, vertical_count, slash_count,
                                                        vertical_kth, slash_kth, lens)
    else:
        def pick(raw, num_forced, c, kth, desc, budget):
            if kth is None and use_triton:  # the Triton top-k applies the forcing while it reads the scores
                from ..kernels.estimation.topk_triton import triton_stable_topk

                return triton_stable_topk(raw, c, min(int(budget), raw.shape[-1]), desc, lens=lens,
                                          num_forced=num_forced)
            s = forced_scores(raw, lens, num_forced)
            if kth is not None:
                return threshold_topk(s, c, kth, desc)
            return stable_topk(s, c, desc)

        vertical_idx = pick(vertical_scores, NUM_SINK_KEYS, vertical_count, vertical_kth, False,
                            max_budget and max_budget[0])  # ascending key positions
        slash_offsets = pick(slash_scores, NUM_LOCAL_DIAGONALS, slash_count, slash_kth, True,
                             max_budget and max_budget[1])  # descending offsets
    vertical_count, slash_count = vertical_count.int(), slash_count.int()
    index = build_vertical_slash_index(cu_seqlens, vertical_idx, vertical_count, slash_offsets, slash_count,
                                       backend=backend, max_len=max_len)
    return VerticalSlashSelection(cu_seqlens, vertical_idx, vertical_count, slash_offsets, slash_count, *index,
                                  max_len=max_len)


def run_vertical_slash(
    selection: VerticalSlashSelection,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: Optional[float],
    backend: str,
) -> PrefillResult:
    """Mixed block + column attention over a `VerticalSlashSelection`; returns the `PrefillResult`."""
    s = selection
    out = vertical_slash_attention(q, k, v, s.cu_seqlens, s.block_count, s.block_offset, s.column_count,
                                   s.column_index, scale=scale, backend=backend, max_len=s.max_len)
    return PrefillResult(out=out, sparsity=s.sparsity(), selection=s)


class VerticalSlashPrefill:
    """`prefill` shared by the vertical-slash family (VerticalSlash, FlexPrefill): they differ only in `select`."""

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                scale: Optional[float] = None, backend: str = "auto",
                seq_lens: Optional[HostLengths] = None) -> PrefillResult:
        """Sparse causal prefill: `select`, then mixed block + column attention. `out [N, Hq, D]` in q's dtype.

        seq_lens: optional host lengths matching cu_seqlens (module docstring): no length is read back.
        """
        seq_lens = check_inputs(q, k, cu_seqlens, v, seq_lens=seq_lens)
        selection = self.select(q, k, cu_seqlens, scale=scale, backend=backend, seq_lens=seq_lens)
        return run_vertical_slash(selection, q, k, v, scale, backend)
