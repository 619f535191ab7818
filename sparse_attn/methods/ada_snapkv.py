"""Ada-SnapKV: SnapKV with adaptive per-KV-head budgets (Ada-KV).

Based on Ada-KV (Feng et al. 2024, arXiv:2407.11550) applied to SnapKV (Li et al. 2024, arXiv:2404.14469).
"""
from dataclasses import dataclass

from .snapkv import SnapKV


@dataclass
class AdaSnapKV(SnapKV):
    """The total budget `token_capacity x num_kv_heads` is shared across KV heads of a layer.

    Each head first keeps its own top `max(token_capacity * min_head_capacity_ratio, local_window + prefix_tokens)`
    tokens (the floor); the remaining slots go to the globally best remaining scores, so heads keep different
    numbers of tokens. Importance is the max (not mean/sum) over window queries and the group's query heads.

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
