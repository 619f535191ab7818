"""Top-k selection with a fixed tie rule, without sorting whole rows.

Every selection in this package (Block-Sparse key blocks, Vertical-Slash columns and diagonals) keeps the `count`
best entries of a row, and must do so deterministically: equal scores go to the lower index, so the CPU reference,
the GPU path and the vLLM path pick the same tokens. A stable full sort gives that rule but costs
`O(n log n)` per row and a copy of the row (8192 x 8192 pooled scores per head at 128K tokens and 16-token blocks).
Here each fp32 score and its index are packed into one int64 key whose order is the wanted order, so a plain
`torch.topk` on the keys (no stable variant needed: keys are distinct) selects exactly what a stable sort would.
"""
from typing import Optional

import torch

__all__ = ["stable_topk", "ordered_keys", "threshold_topk", "kth_largest"]

_LOW31 = 0x7FFFFFFF


def ordered_keys(scores: torch.Tensor) -> torch.Tensor:
    """int64 keys, one per score, ordered as (score descending, index ascending) when sorted descending.

    Args:
        scores: `[..., n]` float (converted to fp32; `n < 2**32`), no NaN.

    Returns:
        `[..., n]` int64: `key(score) << 32 | (n - 1 - index)`, where `key` maps fp32 to int32 monotonically
        (non-negative floats keep their bits; negative floats flip their 31 low bits). `-0.0` counts as `0.0`,
        as in a float comparison.
    """
    num = scores.shape[-1]
    bits = (scores.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    monotone = torch.where(bits < 0, bits ^ _LOW31, bits).to(torch.int64)
    tie_break = (num - 1) - torch.arange(num, device=scores.device, dtype=torch.int64)
    return (monotone << 32) | tie_break


def stable_topk(scores: torch.Tensor, counts: torch.Tensor, descending: bool = False,
                kmax: Optional[int] = None) -> torch.Tensor:
    """Indices of the `counts` largest scores of each row; equal scores go to the lower index.

    Args:
        scores: `[..., n]` float; use `-inf` for entries that must never be chosen (they are chosen only if
            `counts` exceeds the number of finite entries, so clamp `counts` first). No NaN.
        counts: `[...]` int, `0 <= counts <= n`, how many to keep per row.
        descending: order of the returned indices (ascending by default).
        kmax: optional host-known `max(counts)` (the caller's guarantee, e.g. Block-Sparse knows it from the shapes):
            then the counts are not read back (no host sync) and their bounds are not checked; the output is the
            same as without it.

    Returns:
        `[..., kmax]` int32 with `kmax = max(counts)`: the chosen indices sorted by index (not by score), unused
        slots `-1` at the end. The same indices as a stable descending sort of each row cut at `counts`.
    """
    num = scores.shape[-1]
    if counts.shape != scores.shape[:-1]:
        raise ValueError(f"counts {tuple(counts.shape)} must match scores {tuple(scores.shape)} without the last dim")
    if counts.numel() == 0:
        return torch.empty(*scores.shape[:-1], 0, dtype=torch.int32, device=scores.device)
    if kmax is None:
        low, high = torch.aminmax(counts)  # one host sync for both bounds and kmax
        low, kmax = int(low), int(high)
        if low < 0 or kmax > num:
            raise ValueError(f"counts must lie in [0, {num}], got {low} .. {kmax}")
    elif not 0 <= kmax <= num:
        raise ValueError(f"kmax must lie in [0, {num}], got {kmax}")
    if kmax == 0:
        return torch.empty(*scores.shape[:-1], 0, dtype=torch.int32, device=scores.device)
    chosen = torch.topk(ordered_keys(scores), kmax, dim=-1, sorted=True).indices  # best first
    unused = torch.arange(kmax, device=scores.device) >= counts[..., None]
    if descending:
        return torch.sort(chosen.masked_fill(unused, -1), dim=-1, descending=True).values.to(torch.int32)
    chosen = torch.sort(chosen.masked_fill(unused, num), dim=-1).values  # `num` sorts after every real index
    return chosen.masked_fill(chosen == num, -1).to(torch.int32)


def kth_largest(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """`[..., 1]` the `counts`-th largest score of each row (+inf where `counts == 0`), from one `torch.topk`.

    Args:
        scores: `[..., n]` float, no NaN; counts: `[...]` int in `[0, n]`.
    """
    num = scores.shape[-1]
    low, high = torch.aminmax(counts)  # one host sync for the bounds and the top-k width
    low, kmax = int(low), int(high)
    if low < 0 or kmax > num:
        raise ValueError(f"counts must lie in [0, {num}], got {low} .. {kmax}")
    if kmax == 0:
        return torch.full((*scores.shape[:-1], 1), float("inf"), device=scores.device, dtype=scores.dtype)
    values = torch.topk(scores, kmax, dim=-1, sorted=True).values
    kth = values.gather(-1, (counts.long() - 1).clamp(min=0)[..., None])
    return kth.masked_fill(counts[..., None] == 0, float("inf"))


def threshold_topk(scores: torch.Tensor, counts: torch.Tensor, kth: torch.Tensor = None,
                   descending: bool = False) -> torch.Tensor:
    """`stable_topk` (same result, entry for entry) through a threshold instead of sorting indices.

    Row r keeps every score above its `counts[r]`-th largest value `kth[r]` and, of the scores equal to it, the
    lowest indices until `counts[r]` are kept: exactly what a stable descending sort cut at `counts[r]` keeps. The
    kept indices come out in index order from a prefix sum (no sort): `[..., kmax]` int32, -1 padded.

    Args:
        scores: `[..., n]` float, no NaN (`-inf` for entries never to be kept, as in `stable_topk`).
        counts: `[...]` int in `[0, n]`.
        kth: optional `[..., 1]` the `counts`-th largest score of each row (+inf where `counts == 0`) when the caller
            already knows it (FlexPrefill reads it off the sort it makes for its budgets); else `kth_largest`.
        descending: indices in descending order (slash offsets) instead of ascending.
    """
    num = scores.shape[-1]
    if counts.shape != scores.shape[:-1]:
        raise ValueError(f"counts {tuple(counts.shape)} must match scores {tuple(scores.shape)} without the last dim")
    if counts.numel() == 0:
        return torch.empty(*scores.shape[:-1], 0, dtype=torch.int32, device=scores.device)
    if kth is None:
        kth = kth_largest(scores, counts)
    kmax = int(counts.max())
    if kmax == 0:
        return torch.empty(*scores.shape[:-1], 0, dtype=torch.int32, device=scores.device)
    counts = counts.long()[..., None]
    above = scores > kth
    tie = scores == kth
    ties_wanted = counts - above.sum(-1, keepdim=True)
    keep = above | (tie & (tie.cumsum(-1, dtype=torch.int32) <= ties_wanted))
    rank = keep.cumsum(-1, dtype=torch.int32) - 1  # slot of each kept index, ascending
    if descending:
        rank = counts.to(torch.int32) - 1 - rank
    slots = torch.where(keep, rank, kmax).long()  # dropped entries go to a spare last column
    positions = torch.arange(num, device=scores.device, dtype=torch.int32).expand_as(scores)
    out = torch.full((*scores.shape[:-1], kmax + 1), -1, dtype=torch.int32, device=scores.device)
    out.scatter_(-1, slots, positions)
    out = out[..., :kmax]
    # the spare column may be written by dropped entries only; slots >= count stay -1 (rank < count by the rule)
    return out.contiguous()
