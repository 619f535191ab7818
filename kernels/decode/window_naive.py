"""SnapKV / Ada-SnapKV window importance: the readable PyTorch reference of `window_triton.py`.

Materialises the `[Hkv, G, W, T]` fp32 probabilities of the last W prompt queries (causal inside the final W x W
square) and reduces them: SnapKV = mean over the group's query heads, sum over the window; Ada-SnapKV = max over
both. The probabilities come from `kernels/_window.py:causal_window_probs`, as in the methods.
"""
from typing import Optional

import torch

from .._window import causal_window_probs


def naive_window_importance(
    q_window: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None, reduce: str = "mean_sum"
) -> torch.Tensor:
    """Token importance `[Hkv, T]` fp32 (before pooling).

    Args:
        q_window: `[Hq, W, D]` queries at positions `T - W .. T - 1`.
        k: `[Hkv, T, D]` keys (not repeated to query heads).
        scale: softmax scale. Default: `D ** -0.5`.
        reduce: "mean_sum" (SnapKV) or "max" (Ada-SnapKV).
    """
    if reduce not in ("mean_sum", "max"):
        raise ValueError(f"reduce must be 'mean_sum' (snapkv) or 'max' (ada_snapkv), got {reduce!r}")
    probs = causal_window_probs(q_window, k, scale)  # [Hkv, G, W, T]
    return probs.mean(dim=1).sum(dim=1) if reduce == "mean_sum" else probs.amax(dim=2).amax(dim=1)
