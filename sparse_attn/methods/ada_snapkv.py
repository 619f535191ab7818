"""Ada-SnapKV: SnapKV with adaptive per-KV-head budgets (Ada-KV).

Based on Ada-KV (Feng et al. 2024, arXiv:2407.11550) applied to SnapKV (Li et al. 2024, arXiv:2404.14469).
"""
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from ..kernels.decode import ada_cuts, compact_kept, keep_top
from ._kv import (
    KeptTokens,
    keys_of,
    reference_kept_from_mask,
    reference_top_positions,
)
from .snapkv import SnapKV


@dataclass
class AdaSnapKV(SnapKV):
    """The total budget `token_capacity x num_kv_heads` is shared across KV heads of a layer.

    Each head first keeps its own top `max(token_capacity * min_head_capacity_ratio, local_window + prefix_tokens)`
    tokens (the floor); the remaining slots go to the globally best remaining scores, so heads keep different
    numbers of tokens. Importance is the max (not mean/sum) over window queries and the group's query heads.
    Kept tokens are in positional order; prompts of at most `token_capacity` tokens are kept whole (the reference
    asserted `token_capacity <= T` instead); ties go to the earlier head, then the earlier token.

    Parameters
    ----------
    (SnapKV's) plus
    min_head_capacity_ratio: per-head floor as a fraction of token_capacity, in [0, 1]. Default: 0.2.
    """

    min_head_capacity_ratio: float = 0.2

    #: how `_allocate` finds the cuts (not a config parameter; set on the class or an instance for an A/B):
    #: "radix" (default) = `kernels.decode.ada_cuts`: a radix select over the int64 keys (on CUDA 8 launches of
    #: one Triton kernel, no torch.topk), the width read from the device; "topk" = `keep_top` + one `torch.topk`
    #: over the flat `[Hkv * T]` remainder + `lens.max()`. Both keep exactly `reference_allocate`'s set; radix is
    #: faster (H200, 32K: compress 0.70 vs 0.86 ms, 4.7% vs 5.8% of dense prefill; benchmarks/RESULTS.md).
    allocation: ClassVar[str] = "radix"

    name = "ada_snapkv"
    phase = "compression"
    paper = "Ada-KV, Feng et al. 2024 (arXiv:2407.11550) + SnapKV (arXiv:2404.14469)"

    def validate(self) -> None:
        super().validate()
        self._require_fraction("min_head_capacity_ratio")

    @property
    def head_floor(self) -> int:
        """Tokens every KV head keeps at least."""
        return max(int(self.token_capacity * self.min_head_capacity_ratio), self.local_window + self.prefix_tokens)

    _reduce = "max"  # importance: max over window queries and the group's query heads (pooled, forced)

    def _check_budget(self, scores: torch.Tensor):
        num_kv_heads, seq_len = scores.shape
        floor = self.head_floor
        total = self.token_capacity * num_kv_heads
        if floor > seq_len or total > seq_len * num_kv_heads:
            raise ValueError(
                f"ada_snapkv: a prompt of {seq_len} tokens cannot hold head_floor={floor} / total budget {total}; "
                f"lower token_capacity or min_head_capacity_ratio"
            )
        return num_kv_heads, floor, total

    def _allocate(self, scores: torch.Tensor, keys: Optional[torch.Tensor] = None) -> KeptTokens:
        """Adaptive budget: each KV head keeps its top `head_floor`, then the remaining
        `token_capacity * Hkv - head_floor * Hkv` slots go to the best remaining scores over all heads.

        With distinct int64 ranking keys (score descending, then flat index `h * T + t`: `keys`, computed from
        `scores` when None) both stages are thresholds: head h keeps the keys >= its floor-th largest key `f_h`,
        the shared stage the keys >= the `extra`-th largest key `g` of the rest, so head h keeps exactly the keys
        >= min(f_h, g). `keep_top` (per head) and one `torch.topk` over the rest give the cuts; `compact_kept` writes
        the kept positions in positional order at a host-known upper width; the one host sync (the cache width)
        comes last. `allocation = "radix"` finds the same cuts by a radix select (`ada_cuts`, see the class
        attribute). Pooled scores are never -inf (the reference's masked -inf would tie with such scores).
        """
        num_kv_heads, floor, total = self._check_budget(scores)
        seq_len = scores.shape[1]
        if keys is None:
            keys = keys_of(scores)
        extra = total - floor * num_kv_heads
        upper = min(seq_len, floor + extra)  # most tokens one head can keep: the width before the sync
        if self.allocation == "radix":
            cut, width = ada_cuts(keys, floor, total)  # cut [Hkv] = min(f_h, g), width on the device
            index, lens = compact_kept(keys, cut, upper)
            width = int(width)  # the one host sync: the cache width (no extra launch: the select wrote it)
            return KeptTokens(index=index[:, :width], lens=lens)
        if self.allocation != "topk":
            raise ValueError(f"ada_snapkv.allocation must be 'topk' or 'radix', got {self.allocation!r}")
        if floor > 0:
            # the floor-th largest key of each head, as the minimum key of the head's top-`floor` set (`keep_top`:
            # an fp32 topk + one kernel on CUDA, cheaper to launch than an int64 topk's radix passes)
            cut = keys.gather(1, keep_top(scores, floor)[0]).amin(dim=-1, keepdim=True)  # [Hkv, 1]
        else:
            cut = torch.full((num_kv_heads, 1), torch.iinfo(torch.int64).max, device=keys.device)
        if extra > 0:
            rest = keys.masked_fill(keys >= cut, torch.iinfo(torch.int64).min)  # below every real key
            shared = torch.topk(rest.view(-1), extra, sorted=False).values.amin()
            cut = torch.minimum(cut, shared)
        index, lens = compact_kept(keys, cut, upper)  # one Triton launch on CUDA (keys >= cut, prefix sums)
        width = int(lens.max())  # the one host sync: the cache width
        return KeptTokens(index=index[:, :width], lens=lens)

    def reference_allocate(self, scores: torch.Tensor) -> KeptTokens:
        """PyTorch reference of `_allocate`: full stable sorts (per head, then over all heads) and a sort that packs
        the kept positions to the left. `_allocate` must return exactly this."""
        num_kv_heads, floor, total = self._check_budget(scores)
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask.scatter_(1, reference_top_positions(scores, floor), True)
        rest = scores.masked_fill(mask, float("-inf")).flatten()
        extra = reference_top_positions(rest[None, :], total - floor * num_kv_heads)[0]
        mask.view(-1)[extra] = True
        return reference_kept_from_mask(mask)
