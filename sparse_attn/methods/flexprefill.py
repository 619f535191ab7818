"""FlexPrefill (simplified, as in Sparse Frontier): vertical-slash with coverage-based per-head budgets.

Based on FlexPrefill (Lai et al. 2025, arXiv:2502.20766). As in the Sparse Frontier study (its issue #4, paper
appendix A.1.3) only the vertical-slash branch is kept, so FlexPrefill differs from Vertical-Slash only by
adaptive budgeting; the query-aware block branch and the Jensen-Shannon pattern choice are omitted on purpose.

Per sample and query head (L = sample length, w = min(approximation_size, L)):
1. the last `w` queries attend to all keys (causal inside the last `w x w` square, softmax in fp32);
2. vertical distribution = mean over the `w` queries (sums to 1); budget
   `kv = min(L, max(min_budget, #{descending cumulative mass <= alpha} + 1))`; the first 4 keys are forced (+inf)
   after the budget is computed; the top `kv` keys are the verticals;
3. slash distribution = diagonal sums / w (sums to 1); budget `ks` by the same rule; offsets 0..63 forced;
   the top `ks` offsets are the slashes;
4. the same MInference index and mixed block + column attention as Vertical-Slash.
Budgets differ per sample and head.

Differences from the reference system (deliberate, documented):
- sparsity is the exact count of causal pairs the index computes (section 6, item 7 of the reference);
- the slash distribution is divided by the number of window queries actually used (`w`), not by
  `approximation_size`, so it sums to 1 like the vertical one also for prompts shorter than the window (identical
  for prompts of at least `approximation_size` tokens);
- estimation stays in fp32; ties go to the lower key / offset; batches (B >= 1, varlen) and GQA without repeats.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..config import MethodConfig
from ..kernels._dispatch import resolve_backend
from ..kernels._varlen import HostLengths
from ..kernels.estimation import last_window_sums
from ._prefill import (
    NUM_LOCAL_DIAGONALS,
    NUM_SINK_KEYS,
    VerticalSlashSelection,
    check_inputs,
    VerticalSlashPrefill,
    sample_lengths,
    select_vertical_slash,
)


def _covered(sorted_desc: torch.Tensor, alpha: float, floor: int, lens: torch.Tensor) -> torch.Tensor:
    """The coverage budget from the rows already sorted descending (see `coverage_budget`)."""
    covered = (sorted_desc.cumsum(dim=-1) <= alpha).sum(dim=-1) + 1
    return torch.minimum(covered.clamp(min=floor), lens[:, None].to(covered.device))


def coverage_budget(distribution: torch.Tensor, alpha: float, floor: int, lens: torch.Tensor) -> torch.Tensor:
    """FlexPrefill budget: the fewest entries whose mass reaches `alpha`, at least `floor`, at most `L`.

    Args:
        distribution: `[B, Hq, n]` non-negative, each row summing to ~1 over its `L_b` valid entries (0 beyond).
        alpha: mass to cover in [0, 1].
        floor: minimum budget (`min_budget`).
        lens: `[B]` sample lengths.

    Returns:
        `[B, Hq]` int64: `min(L_b, max(floor, #{sorted-descending cumulative mass <= alpha} + 1))`.
    """
    return _covered(torch.sort(distribution, dim=-1, descending=True).values, alpha, floor, lens)


def budget_and_threshold(distribution: torch.Tensor, alpha: float, floor: int, lens: torch.Tensor,
                         num_forced: int, backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """`coverage_budget` and, from the same sort, the budget-th largest FORCED score of each row.

    The selection keeps the `num_forced` first entries (+inf) and then the best of the rest, so its threshold is
    the `(budget - forced)`-th largest distribution value among the non-forced valid entries (+inf when the forced
    entries fill the budget): read off the sorted rows by counting non-forced entries, no second top-k.

    Args:
        distribution: `[B, Hq, n]` as in `coverage_budget`; lens `[B]`; num_forced: entries `< num_forced` forced.
        backend: "auto" (Triton for CUDA tensors), "naive" (this torch code, the reference) or "triton". After the
            sort, the Triton kernel (`triton_budget_and_threshold`) scans only the short prefixes that hold the
            answers and stops (budgets of ~512-4000 entries in rows of 128K) instead of four scans over whole rows
            (~0.75 ms per layer at 128K on an H200); its fp32 running sum may put a budget off by one where a
            partial sum lies within rounding of alpha (kernels/estimation/coverage_triton.py).

    Returns:
        budget `[B, Hq]` int64 and kth `[B, Hq, 1]` fp32, for `select_vertical_slash(..., *_kth=kth)`.
    """
    values, order = torch.sort(distribution.float(), dim=-1, descending=True)
    lens = lens.to(distribution.device)
    if resolve_backend(backend, distribution) == "triton":
        from ..kernels.estimation.coverage_triton import triton_budget_and_threshold

        return triton_budget_and_threshold(values, order, alpha, floor, lens, num_forced)
    budget = _covered(values, alpha, floor, lens)
    free = (order >= num_forced) & (order < lens[:, None, None])  # sorted slots holding non-forced valid entries
    need = budget - lens.clamp(max=num_forced)[:, None]  # [B, Hq] non-forced entries to keep
    slot = (free.cumsum(dim=-1, dtype=torch.int32) < need[..., None]).sum(dim=-1, keepdim=True)
    kth = values.gather(-1, slot.clamp(max=values.shape[-1] - 1))
    return budget, kth.masked_fill(need[..., None] <= 0, float("inf"))


@dataclass
class FlexPrefill(VerticalSlashPrefill, MethodConfig):
    """Per query head, keep the fewest columns / diagonals whose attention mass reaches `alpha`.

    Budgets never go below `min_budget`; the first 4 keys and the 64 nearest diagonals are always kept.

    Parameters
    ----------
    alpha: attention mass to cover, in [0, 1] (0 means: exactly `min_budget`). Default: 0.65.
    approximation_size: last prompt queries used to estimate the pattern. Default: 512.
    min_budget: floor on columns and on diagonals per head (>= 64). Default: 512.
    """

    alpha: float = 0.65
    approximation_size: int = 512
    min_budget: int = 512

    name = "flexprefill"
    phase = "prefill"
    paper = "FlexPrefill, Lai et al. 2025 (arXiv:2502.20766)"

    def validate(self) -> None:
        self._require_fraction("alpha")
        self._require_int("approximation_size", 1)
        self._require_int("min_budget", 64, "the 64 nearest diagonals are always kept")

    def select(self, q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, scale: Optional[float] = None,
               backend: str = "auto", seq_lens: Optional[HostLengths] = None) -> VerticalSlashSelection:
        """Per-head coverage budgets, then verticals, slashes and the kernel index of every sample and query head.

        q `[N, Hq, D]`, k `[N, Hkv, D]` varlen packed, cu_seqlens `[B+1]` int32; scale defaults to `D ** -0.5`.
        seq_lens: optional host lengths `[B]` matching cu_seqlens: cu_seqlens is then not read back for them (the
        one remaining host read is the top-k output widths, see `select_vertical_slash`).
        """
        # host lengths: the sums and the index read nothing back
        max_len = max(check_inputs(q, k, cu_seqlens, seq_lens=seq_lens))
        vertical, slash = last_window_sums(q, k, cu_seqlens, self.approximation_size, scale=scale, backend=backend,
                                           max_len=max_len)
        lens = sample_lengths(cu_seqlens).to(q.device)
        window = lens.clamp(max=self.approximation_size).float()[:, None, None]  # w_b queries per sample
        vertical, slash = vertical / window, slash / window  # [B, Hq, max_len], rows sum to 1
        # one sort per pattern gives both the budget and the selection threshold (no top-k of budget width)
        vertical_budget, vertical_kth = budget_and_threshold(vertical, self.alpha, self.min_budget, lens,
                                                             NUM_SINK_KEYS, backend=backend)
        slash_budget, slash_kth = budget_and_threshold(slash, self.alpha, self.min_budget, lens, NUM_LOCAL_DIAGONALS,
                                                       backend=backend)
        return select_vertical_slash(cu_seqlens, vertical, slash, vertical_budget, slash_budget, backend=backend,
                                     vertical_kth=vertical_kth, slash_kth=slash_kth, max_len=max_len)
