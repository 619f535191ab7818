"""SnapKV: after prefill, keep per KV head the `token_capacity` tokens the last prompt queries attend to most.

Based on SnapKV (Li et al. 2024, arXiv:2404.14469).
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..config import ConfigError, MethodConfig
from ..kernels.decode import keep_top
from ._kv import (
    CompressedKV,
    KeptTokens,
    check_window_shapes,
    host_bounds,
    keep_all,
    pack,
    pooled_scores_and_keys,
    reference_kept_from_mask,
    reference_top_positions,
)


@dataclass
class SnapKV(MethodConfig):
    """KV-cache eviction after prefill; decoding attends densely over the kept tokens.

    Importance per KV head = softmax scores of the last `approximation_window` prompt queries, averaged over the
    query heads of the group, summed over the window, smoothed by average pooling of width `kernel_size`.
    The last `local_window` and the first `prefix_tokens` tokens are always kept. Prompts of at most
    `token_capacity` tokens are kept whole (full budget = dense decoding).

    Differences from the reference system (documented fixes): kept tokens are stored in positional order (the
    reference kept score order, section 6.13); window probabilities stay in fp32 (the reference cast them to the
    model dtype); ties in the ranking go to the earlier token (stable sort), so the selection is deterministic;
    a prompt shorter than `approximation_window` is scored with all its queries instead of failing.

    Parameters
    ----------
    token_capacity: tokens kept per KV head. Default: 1024.
    approximation_window: last prompt queries used to score tokens. Default: 256.
    kernel_size: average-pooling width (odd). Default: 21.
    local_window: most recent tokens always kept. Default: 128.
    prefix_tokens: first tokens always kept. Default: 4.
    """

    token_capacity: int = 1024
    approximation_window: int = 256
    kernel_size: int = 21
    local_window: int = 128
    prefix_tokens: int = 4

    name = "snapkv"
    phase = "compression"
    paper = "SnapKV, Li et al. 2024 (arXiv:2404.14469)"

    def validate(self) -> None:
        self._require_int("approximation_window", 1)
        self._require_int("kernel_size", 1)
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"{self.name}.kernel_size={self.kernel_size} must be odd (same-length pooling)")
        self._require_int("local_window", 0)
        self._require_int("prefix_tokens", 0)
        self._require_int("token_capacity", 1)
        always_kept = self.local_window + self.prefix_tokens
        if self.token_capacity <= always_kept:
            raise ConfigError(
                f"{self.name}.token_capacity={self.token_capacity} must exceed local_window + prefix_tokens = "
                f"{always_kept} (those tokens are always kept): raise token_capacity or lower the windows"
            )

    # -- selection ---------------------------------------------------------------------------------------------
    def window_size(self, seq_len: int) -> int:
        """Prompt queries used to score a prompt of `seq_len` tokens: the last `min(approximation_window, T)`."""
        return min(self.approximation_window, seq_len)

    #: window-score reduction over the group's query heads and the window queries (see `window_importance`)
    _reduce = "mean_sum"

    def importance(self, q_window: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
        """`[Hkv, T]` fp32 token scores: window probabilities averaged over the group's query heads, summed over
        the window queries, pooled, with the prefix and local window forced to +inf."""
        return self.scores_and_keys(q_window, k, scale)[0]

    def scores_and_keys(self, q_window: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None):
        """(`importance` `[Hkv, T]` fp32, its int64 ranking keys `[Hkv, T]`: score descending, then `h * T + t`
        ascending; see `_kv.pooled_scores_and_keys`)."""
        from ..kernels.decode import window_importance

        # = window_probs(q_window, k, scale).mean(dim=1).sum(dim=1) (SnapKV) / .amax(dim=2).amax(dim=1) (Ada); on
        # CUDA a fused Triton kernel that never materialises the [Hkv, G, W, T] probabilities (32K: 0.4 ms, not 6)
        raw = window_importance(q_window, k, scale, reduce=self._reduce)
        return pooled_scores_and_keys(raw, self.kernel_size, self.local_window, self.prefix_tokens)

    def select_kept(self, q_window: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None) -> KeptTokens:
        """Tokens one sample keeps per KV head.

        Args:
            q_window: `[Hq, W, D]` the last `W = min(approximation_window, T)` prompt queries (post-RoPE).
            k: `[Hkv, T, D]` the sample's prompt keys (post-RoPE).
            scale: softmax scale. Default: `D ** -0.5`.

        Returns:
            `KeptTokens(index [Hkv, C] positional order, lens [Hkv])`; `C = min(token_capacity, T)` here.
        """
        seq_len = k.shape[1]
        check_window_shapes(q_window, k, self.window_size(seq_len))
        if seq_len <= self.token_capacity:
            return keep_all(k.shape[0], seq_len, k.device)
        scores, keys = self.scores_and_keys(q_window, k, scale)
        return self._allocate(scores, keys)

    def _allocate(self, scores: torch.Tensor, keys: Optional[torch.Tensor] = None) -> KeptTokens:
        """Uniform budget: the `token_capacity` best tokens of every KV head (ties: the earlier token), in
        positional order; the width is `token_capacity`, known on the host: no device sync.

        `kernels.decode.keep_top`: on CUDA one fp32 `torch.topk` gives each head's cut (the C-th largest score)
        and one Triton launch writes the scores above it plus the earliest ties, in order (no int64 radix select,
        no sort); elsewhere `torch.topk` on the int64 ranking keys and a sort of the kept positions. `keys` (the
        ranking keys, used by Ada-SnapKV) is not needed here."""
        index, lens = keep_top(scores, self.token_capacity)
        return KeptTokens(index=index, lens=lens, uniform=True)

    def reference_allocate(self, scores: torch.Tensor) -> KeptTokens:
        """PyTorch reference of `_allocate` (the readable definition): full stable sorts, a mask, then a sort that
        packs the kept positions to the left. `_allocate` must return exactly this."""
        keep = reference_top_positions(scores, self.token_capacity)
        mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, keep, True)
        return reference_kept_from_mask(mask)

    def compress(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cu_seqlens: torch.Tensor,
        scale: Optional[float] = None,
        seq_lens: Optional[Sequence[int]] = None,
    ) -> CompressedKV:
        """Compress a varlen packed batch of prompts right after prefill.

        Args:
            q: `[N, Hq, D]` packed prompt queries (post-RoPE); only each sample's last window is read.
            k, v: `[N, Hkv, D]` packed prompt keys / values.
            cu_seqlens: `[B + 1]` int, sample b owns rows `cu_seqlens[b] : cu_seqlens[b + 1]`.
            scale: softmax scale. Default: `D ** -0.5`.
            seq_lens: optional host per-sample lengths (`[B]` ints, matching `cu_seqlens`). Without them a CUDA
                `cu_seqlens` is read back once (a sync that waits for the queued prefill); a CPU one costs nothing.

        Returns:
            `CompressedKV(k, v [B, Hkv, C, D], lens [B, Hkv] int32, index [B, Hkv, C], sparsity [B, Hkv])`.

        SnapKV runs with no other host sync; Ada-SnapKV reads each sample's longest head count back once (the
        cache width).
        """
        bounds = host_bounds(cu_seqlens, seq_lens)
        kept = []
        for start, end in zip(bounds, bounds[1:]):
            sample_k = k[start:end].transpose(0, 1)  # [Hkv, T, D]
            window = self.window_size(end - start)
            q_window = q[end - window:end].transpose(0, 1)  # [Hq, W, D]
            kept.append(self.select_kept(q_window, sample_k, scale))
        return pack(kept, k, v, bounds, cu_seqlens if cu_seqlens.device == k.device else None)

    # -- decoding ----------------------------------------------------------------------------------------------
    @staticmethod
    def decode(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        lens: torch.Tensor,
        scale: Optional[float] = None,
        backend: str = "auto",
    ) -> torch.Tensor:
        """Dense decode attention over the compressed cache: `q [B, Hq, D]`, `k, v [B, Hkv, C, D]`,
        `lens [B, Hkv]` (kept tokens plus any appended ones) -> `out [B, Hq, D]`."""
        from ..kernels.decode import decode

        return decode(q, k, v, lens, scale=scale, backend=backend)
