"""SnapKV / Ada-SnapKV window importance: the readable PyTorch reference of `window_triton.py`.

Materialises the `[Hkv, G, W, T]` fp32 probabilities of the last W prompt queries (causal inside the final W x W
square) and reduces them: SnapKV = mean over the group's query heads, sum over the window; Ada-SnapKV = max over
both. Same math as `sparse_attn.methods._kv.window_probs` + the methods' reductions.
"""
from typing import Optional

import torch


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
    num_q_heads, window, head_dim = q_window.shape
    num_kv_heads, seq_len, _ = k.shape
    group = num_q_heads // num_kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    q32 = q_window.float().view(num_kv_heads, group, window, head_dim)
    logits = torch.einsum("hgwd,htd->hgwt", q32, k.float()) * scale
    query_pos = torch.arange(seq_len - window, seq_len, device=k.device)
    causal = torch.arange(seq_len, device=k.device)[None, :] <= query_pos[:, None]  # [W, T]
    probs = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)
    return probs.mean(dim=1).sum(dim=1) if reduce == "mean_sum" else probs.amax(dim=2).amax(dim=1)
