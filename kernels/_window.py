"""The last-window attention every estimator starts from (the one definition the references share).

Vertical-Slash / FlexPrefill (`kernels/estimation/naive.py`) and SnapKV / Ada-SnapKV (`kernels/decode/window_naive.py`,
`sparse_attn/methods/_kv.py`) all score keys by the softmax of the LAST `W` prompt queries over all `T` keys, causal
inside the final `W x W` square.
"""
from typing import Optional

import torch


def causal_window_probs(q_window: torch.Tensor, k: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
    """Causal softmax of the last W queries against all T keys, per GQA group, in fp32.

    Args:
        q_window: `[Hq, W, D]` queries at positions `T - W .. T - 1` (query head h reads KV head h // G).
        k: `[Hkv, T, D]` keys (not repeated to query heads).
        scale: softmax scale. Default: `D ** -0.5`.

    Returns:
        `[Hkv, G, W, T]` fp32 probabilities (G = Hq // Hkv), rows sum to 1; entry `(h, g, i, j)` is 0 for future keys `j > T - W + i`.
    """
    num_q_heads, window, head_dim = q_window.shape
    num_kv_heads, seq_len, _ = k.shape
    scale = head_dim**-0.5 if scale is None else scale
    grouped = q_window.float().view(num_kv_heads, num_q_heads // num_kv_heads, window, head_dim)
    logits = torch.einsum("hgwd,htd->hgwt", grouped, k.float()) * scale
    query_pos = torch.arange(seq_len - window, seq_len, device=k.device)
    future = torch.arange(seq_len, device=k.device)[None, :] > query_pos[:, None]  # [W, T]
    return torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1)
