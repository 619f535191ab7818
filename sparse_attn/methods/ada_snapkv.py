"""Ada-SnapKV: SnapKV with adaptive per-KV-head budgets (Ada-KV).

Based on Ada-KV (Feng et al. 2024, arXiv:2407.11550) applied to SnapKV (Li et al. 2024, arXiv:2404.14469).
"""
from dataclasses import dataclass
from typing import Optional

import torch

from ._kv import (
    KeptTokens,
    kept_from_mask,
    pool_and_force,
    reference_kept_from_mask,
    reference_top_positions,
    top_positions,
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

    def importance(self, q_window: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
        """`[Hkv, T]` fp32 token scores: max over window queries and the group's query heads, pooled, with the
        prefix and local window forced to +inf."""
        from ..kernels.decode import window_importance

        # = window_probs(q_window, k, scale).amax(dim=2).amax(dim=1); on CUDA a fused Triton kernel that never
        # materialises the [Hkv, G, W, T] probabilities (32K prompt, H100: 0.56 ms instead of 6.1 ms)
        scores = window_importance(q_window, k, scale, reduce="max")
        return pool_and_force(scores, self.kernel_size, self.local_window, self.prefix_tokens)

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

    def _allocate(self, scores: torch.Tensor) -> KeptTokens:
        """Adaptive budget: each KV head keeps its top `head_floor`, then the remaining
        `token_capacity * Hkv - head_floor * Hkv` slots go to the best remaining scores over all heads."""
        num_kv_heads, floor, total = self._check_budget(scores)
        # torch.topk on (score, position) keys (ties: earlier head, then earlier token, as a stable sort); the
        # positional order comes from a cumsum compaction of the mask, not a sort. One host sync: the width.
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask.scatter_(1, top_positions(scores, floor, sorted=False), True)
        rest = scores.masked_fill(mask, float("-inf")).flatten()
        extra = top_positions(rest[None, :], total - floor * num_kv_heads, sorted=False)[0]
        mask.view(-1)[extra] = True
        return kept_from_mask(mask)

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
