"""Quest: query-aware sparse decoding over pages of the full KV cache.

Based on Quest (Tang et al. 2024, arXiv:2406.10774).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..config import ConfigError, MethodConfig


@dataclass
class QuestPages:
    """Per-layer page metadata an integration holds across decode steps.

    page_min, page_max: `[B, Hkv, P, D]` elementwise min / max of the keys of each page (pages aligned at token 0,
        `page_size` tokens each); pages without tokens hold (+inf, -inf).
    page_size: tokens per page.
    """

    page_min: torch.Tensor
    page_max: torch.Tensor
    page_size: int

    @classmethod
    def from_cache(cls, k: torch.Tensor, lens: torch.Tensor, page_size: int, backend: str = "auto") -> "QuestPages":
        """Summarise a prompt cache `k [B, Hkv, S, D]` with `lens [B]` valid tokens (right padding)."""
        from ..kernels.quest import build_page_meta

        page_min, page_max = build_page_meta(k, lens, page_size, backend=backend)
        return cls(page_min=page_min, page_max=page_max, page_size=page_size)

    @property
    def num_pages(self) -> int:
        return self.page_min.shape[2]

    def append(self, k_new: torch.Tensor, positions: torch.Tensor, backend: str = "auto",
               max_position: Optional[int] = None) -> "QuestPages":
        """Fold the key just written at token `positions [B]` (`k_new [B, Hkv, D]`) into its page, in place.

        The metadata grows by empty pages when a position falls past the last page (the cache grew).
        max_position: `max(positions)` when the caller knows it on the host (the Transformers cache layer does):
            then nothing is read back from the device (else one read-back per layer and decode step, which makes
            the host wait for the GPU instead of queueing the next launches).
        """
        from ..kernels.quest import update_page_meta

        if max_position is None:
            max_position = int(positions.max())
        self.reserve(max_position)
        update_page_meta(self.page_min, self.page_max, k_new, positions, self.page_size, backend=backend)
        return self

    def reserve(self, max_position: int) -> None:
        """Make room for a key at token `max_position` (a host int): empty pages are added when it falls past the
        last page, geometrically (1/8 more, at least 64 pages) so that a long decode rarely copies the metadata.
        Empty pages hold (+inf, -inf) and are never candidates, so the extra capacity changes no selection."""
        needed = max_position // self.page_size + 1
        if needed > self.num_pages:
            self._grow(max(needed, self.num_pages + max(64, self.num_pages // 8)))

    def _grow(self, pages: int) -> None:
        batch, heads, old, dim = self.page_min.shape
        extra = (batch, heads, pages - old, dim)
        fill_min = torch.full(extra, float("inf"), dtype=self.page_min.dtype, device=self.page_min.device)
        self.page_min = torch.cat([self.page_min, fill_min], dim=2)
        self.page_max = torch.cat([self.page_max, -fill_min], dim=2)


@dataclass
class PageSelection:
    """The pages one decode step reads, and what that costs.

    page_index: `[B, Hsel, n]` int32 selected page ids, ascending, -1 padding (Hsel = Hkv with share_pages else Hq).
    head_tokens_read: `[B, Hsel]` int32 valid tokens in the selected pages, per selection head.
    head_sparsity: `[B, Hsel]` fp32 `1 - head_tokens_read / lens`, measured from the selection at this step
        (a snapshot: the cache's `lens` moves on at the next step).
    tokens_read, sparsity: `[B]` fp32 means over the selection heads (computed when asked for, so that a decode
        step launches nothing to measure itself).
    """

    page_index: torch.Tensor
    head_tokens_read: torch.Tensor
    head_sparsity: torch.Tensor

    @property
    def tokens_read(self) -> torch.Tensor:
        return self.head_tokens_read.float().mean(dim=1)

    @property
    def sparsity(self) -> torch.Tensor:
        return self.head_sparsity.mean(dim=1)


@dataclass
class Quest(MethodConfig):
    """At each decode step attend only to the `token_budget / page_size` best pages plus the current page.

    A page's score is the upper bound sum_d max(q_d * min_d, q_d * max_d) from the elementwise min/max of its keys.

    Differences from the reference system (documented fixes, section 6.6): sparsity is measured at every decode
    step from the pages actually read (`1 - tokens_read / context_len`), not the prefill proxy `1 - budget / T`;
    a context with at most `page_budget` past pages reads all of them (dense step, sparsity 0) instead of failing
    the reference's assertion; ties between equal page scores go to the lower page id. As in the reference, no
    sink page is forced and `share_pages` defaults to True (the paper runs used per-query-head pages:
    `share_pages=False`).

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

    def select_pages(self, q: torch.Tensor, pages: QuestPages, lens: torch.Tensor,
                     backend: str = "auto") -> PageSelection:
        """Pages read at this decode step.

        Args:
            q: `[B, Hq, D]` the new token's queries (post-RoPE).
            pages: metadata already updated with the new token's key (`QuestPages.append`).
            lens: `[B]` int, tokens in the cache including the new one.

        Returns:
            `PageSelection` with `page_index [B, Hsel, n]`, tokens read and sparsity per sample.
        """
        from ..kernels.quest import quest_page_scores, quest_select_pages

        if pages.page_size != self.page_size:
            raise ValueError(f"QuestPages were built with page_size={pages.page_size}, "
                             f"quest.page_size={self.page_size}")
        if q.shape[1] % pages.page_min.shape[1]:
            raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of KV heads ({pages.page_min.shape[1]})")
        scores = quest_page_scores(q, pages.page_min, pages.page_max, lens, self.page_size, self.share_pages,
                                   backend=backend)
        page_index, head_tokens, head_sparsity = quest_select_pages(scores, lens, self.page_size, self.page_budget,
                                                                    return_reads=True, backend=backend)
        return PageSelection(page_index=page_index, head_tokens_read=head_tokens, head_sparsity=head_sparsity)

    def measure(self, page_index: torch.Tensor, lens: torch.Tensor) -> PageSelection:
        """Count the valid tokens a page selection reads (`page_index [B, Hsel, n]`, -1 = unused slot), in torch."""
        from ..kernels.quest import naive_selection_reads

        head_tokens, head_sparsity = naive_selection_reads(page_index, lens, self.page_size)
        return PageSelection(page_index=page_index, head_tokens_read=head_tokens, head_sparsity=head_sparsity)

    def decode(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        lens: torch.Tensor,
        pages: QuestPages,
        scale: Optional[float] = None,
        backend: str = "auto",
    ) -> Tuple[torch.Tensor, PageSelection]:
        """One Quest decode step over the full cache.

        Args:
            q: `[B, Hq, D]`; k, v: `[B, Hkv, S, D]` with the new token already written at `lens - 1`.
            lens: `[B]` int, tokens in the cache including the new one.
            pages: metadata already updated with the new key.

        Returns:
            `(out [B, Hq, D], PageSelection)`.
        """
        from ..kernels.quest import quest_decode

        selection = self.select_pages(q, pages, lens, backend=backend)
        out = quest_decode(q, k, v, lens, selection.page_index, self.page_size, scale=scale, backend=backend)
        return out, selection
