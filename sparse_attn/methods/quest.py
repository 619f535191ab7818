"""Quest: query-aware sparse decoding over pages of the full KV cache.

Based on Quest (Tang et al. 2024, arXiv:2406.10774).
"""
from dataclasses import dataclass

from ..config import ConfigError, MethodConfig


@dataclass
class Quest(MethodConfig):
    """At each decode step attend only to the `token_budget / page_size` best pages plus the current page.

    A page's score is the upper bound sum_d max(q_d * min_d, q_d * max_d) from the elementwise min/max of its keys.

    Parameters
    ----------
    token_budget: tokens attended per step (a multiple of page_size). Default: 1024.
    page_size: tokens per page. Default: 16.
    share_pages: one page ranking per KV head (scores summed over its query heads) instead of per query head.
        Default: True.
    """

    token_budget: int = 1024
    page_size: int = 16
    share_pages: bool = True

    name = "quest"
    phase = "decode"
    paper = "Quest, Tang et al. 2024 (arXiv:2406.10774)"

    def validate(self) -> None:
        self._require_int("page_size", 1)
        self._require_int("token_budget", self.page_size, "at least one page")
        if self.token_budget % self.page_size:
            lower = self.token_budget // self.page_size * self.page_size
            raise ConfigError(
                f"quest.token_budget={self.token_budget} must be a multiple of page_size={self.page_size}: "
                f"use {lower} or {lower + self.page_size}"
            )
        if not isinstance(self.share_pages, bool):
            raise ConfigError(f"quest.share_pages must be true or false, got {self.share_pages!r}")

    @property
    def page_budget(self) -> int:
        """Past pages selected per step (the current page comes on top)."""
        return self.token_budget // self.page_size
