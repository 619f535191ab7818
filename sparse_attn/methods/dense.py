"""Dense causal attention: the baseline every sparse method is measured against."""
from dataclasses import dataclass

from ..config import MethodConfig


@dataclass
class Dense(MethodConfig):
    """Dense causal attention (no parameters). Achieved sparsity is 0 by definition."""

    name = "dense"
    phase = "dense"
    paper = "Vaswani et al. 2017, Attention Is All You Need (arXiv:1706.03762)"
