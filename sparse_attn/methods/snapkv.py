"""SnapKV: after prefill, keep per KV head the `token_capacity` tokens the last prompt queries attend to most.

Based on SnapKV (Li et al. 2024, arXiv:2404.14469).
"""
from dataclasses import dataclass

from ..config import ConfigError, MethodConfig


@dataclass
class SnapKV(MethodConfig):
    """KV-cache eviction after prefill; decoding attends densely over the kept tokens.

    Importance per KV head = softmax scores of the last `approximation_window` prompt queries, averaged over the
    query heads of the group, summed over the window, smoothed by average pooling of width `kernel_size`.
    The last `local_window` and the first `prefix_tokens` tokens are always kept.

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
