"""Vertical-Slash sparse prefill (MInference).

Based on MInference 1.0 (Jiang et al. 2024, arXiv:2407.02490), as the Sparse Frontier study runs it
(uniform budgets for every head, layer and sample; no offline per-head pattern search).
"""
from dataclasses import dataclass

from ..config import MethodConfig

#: keys always kept as "attention sinks" (the first tokens of the prompt)
NUM_SINK_KEYS = 4
#: nearest diagonals always kept (a local window of 64 tokens); also the kernel's block size
NUM_LOCAL_DIAGONALS = 64


@dataclass
class VerticalSlash(MethodConfig):
    """Keep, per query head, the top `vertical_size` key columns and top `slash_size` diagonals.

    Scores come from the softmax of the last `approximation_size` prompt queries against all keys.
    The first 4 keys and the 64 nearest diagonals are always kept.

    Parameters
    ----------
    vertical_size: key columns kept per head (>= 4). Default: 512.
    slash_size: diagonals kept per head (>= 64). Default: 512.
    approximation_size: last prompt queries used to estimate the pattern. Default: 256.
    """

    vertical_size: int = 512
    slash_size: int = 512
    approximation_size: int = 256

    name = "vertical_slash"
    phase = "prefill"
    paper = "MInference 1.0, Jiang et al. 2024 (arXiv:2407.02490)"

    def validate(self) -> None:
        self._require_int("vertical_size", NUM_SINK_KEYS, f"the {NUM_SINK_KEYS} sink keys are always kept")
        self._require_int("slash_size", NUM_LOCAL_DIAGONALS,
                          f"the {NUM_LOCAL_DIAGONALS} nearest diagonals are always kept")
        self._require_int("approximation_size", 1)
