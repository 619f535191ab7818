"""Mean-pooled blocks of queries or keys, the input of Block-Sparse block scores (plain torch, any device)."""
from typing import Optional, Sequence

import torch

__all__ = ["pooled_block_means"]


def pooled_block_means(x: torch.Tensor, cu_seqlens: torch.Tensor, chunk_size: int,
                       seq_lens: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Per sample, the sum of each `chunk_size`-token block divided by `chunk_size` (fp32 accumulation).

    Args:
        x: `[N, H, D]` varlen packed queries or keys; cu_seqlens `[B+1]` int32; chunk_size: tokens per block.
        seq_lens: optional host lengths `[L_0, ..., L_{B-1}]` matching cu_seqlens (already validated, e.g. by
            `check_varlen`): the sample bounds then come from them, and cu_seqlens is not read back from the device.

    Returns:
        `[B, nb, H, D]` fp32, `nb = ceil(max_len / chunk_size)`. A sample's partial last block counts its missing
        tokens as zeros (divided by `chunk_size`, as the reference's zero padding); blocks past its end are 0.
    """
    if seq_lens is None:
        bounds = cu_seqlens.tolist()
    else:  # host lengths: the same bounds without a device -> host copy
        bounds = [0]
        for length in seq_lens:
            bounds.append(bounds[-1] + int(length))
    batch, (num_heads, head_dim) = len(bounds) - 1, x.shape[1:]
    num_blocks = -(-max(b - a for a, b in zip(bounds[:-1], bounds[1:])) // chunk_size)
    sums = torch.zeros(batch, num_blocks, num_heads, head_dim, device=x.device, dtype=torch.float32)
    for b, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        whole = (end - start) // chunk_size
        if whole:  # a [whole, chunk, H, D] view: no fp32 copy of x
            sums[b, :whole] = x[start: start + whole * chunk_size].view(whole, chunk_size, num_heads,
                                                                        head_dim).sum(1, dtype=torch.float32)
        if start + whole * chunk_size < end:
            sums[b, whole] = x[start + whole * chunk_size: end].sum(0, dtype=torch.float32)
    return sums.div_(chunk_size)
