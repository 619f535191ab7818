"""FlexPrefill (simplified, as in Sparse Frontier): vertical-slash with coverage-based per-head budgets.

Based on FlexPrefill (Lai et al. 2025, arXiv:2502.20766). As in the Sparse Frontier study (its issue #4, paper
appendix A.1.3) only the vertical-slash branch is kept, so FlexPrefill differs from Vertical-Slash only by
adaptive budgeting; the query-aware block branch and the Jensen-Shannon pattern choice are omitted on purpose.
"""
from dataclasses import dataclass

from ..config import MethodConfig


@dataclass
class FlexPrefill(MethodConfig):
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
