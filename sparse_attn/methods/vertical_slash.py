"""Vertical-Slash sparse prefill (MInference).

Based on MInference 1.0 (Jiang et al. 2024, arXiv:2407.02490), as the Sparse Frontier study runs it
(uniform budgets for every head, layer and sample; no offline per-head pattern search).

Per sample and query head (L = sample length):
1. clamp: `v = min(vertical_size, L)`, `s = min(slash_size, L)`, `w = min(approximation_size, L)`;
2. the last `w` queries attend to all keys (causal inside the last `w x w` square, softmax in fp32);
3. vertical score of key j = sum of its probabilities over the `w` queries; the first 4 keys are forced (+inf);
   the top `v` keys are the verticals;
4. slash score of offset o = q_pos - k_pos = sum of the probabilities on that diagonal; offsets 0..63 are forced;
   the top `s` offsets are the slashes;
5. MInference's index (64-query rows; slashes as 64-wide key blocks, verticals as columns) and the mixed
   block + column attention.

Differences from the reference system (deliberate, documented):
- sparsity is the exact count of causal pairs the index computes (the reference counted whole 64 x 64 blocks and
  64-row columns, including causally masked halves; its section 6, item 7);
- estimation stays in fp32 (the reference cast probabilities back to the model dtype before summing);
- ties are broken towards the lower key / offset (stable sort), so selections are reproducible across backends;
- batches (B >= 1, varlen) in one call; GQA without repeating K/V.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from ..config import MethodConfig
from ..kernels._varlen import HostLengths
from ..kernels.estimation import last_window_sums
from ._prefill import (
    NUM_LOCAL_DIAGONALS,
    NUM_SINK_KEYS,
    VerticalSlashSelection,
    check_inputs,
    VerticalSlashPrefill,
    select_vertical_slash,
)


@dataclass
class VerticalSlash(VerticalSlashPrefill, MethodConfig):
    """Keep, per query head, the top `vertical_size` key columns and top `slash_size` diagonals.

    Scores come from the softmax of the last `approximation_size` prompt queries against all keys.
    The first 4 keys and the 64 nearest diagonals are always kept.

    Parameters
    ----------
    vertical_size: key columns kept per head (>= 4). Default: 512.
    slash_size: diagonals kept per head (>= 64). Default: 512.
    approximation_size: last prompt queries used to estimate the pattern. Default: 256.
    """

    vertical_size: int = 512
    slash_size: int = 512
    approximation_size: int = 256

    name = "vertical_slash"
    phase = "prefill"
    paper = "MInference 1.0, Jiang et al. 2024 (arXiv:2407.02490)"

    def validate(self) -> None:
        self._require_int("vertical_size", NUM_SINK_KEYS, f"the {NUM_SINK_KEYS} sink keys are always kept")
        self._require_int("slash_size", NUM_LOCAL_DIAGONALS,
                          f"the {NUM_LOCAL_DIAGONALS} nearest diagonals are always kept")
        self._require_int("approximation_size", 1)

    def select(self, q: torch.Tensor, k: torch.Tensor, cu_seqlens: torch.Tensor, scale: Optional[float] = None,
               backend: str = "auto", seq_lens: Optional[HostLengths] = None) -> VerticalSlashSelection:
        """The verticals, slashes and kernel index of every sample and query head.

        q `[N, Hq, D]`, k `[N, Hkv, D]` varlen packed, cu_seqlens `[B+1]` int32; scale defaults to `D ** -0.5`.
        seq_lens: optional host lengths `[B]` matching cu_seqlens (the integrations pass them): then cu_seqlens is
        not read back either (`check_inputs`), so the select queues behind earlier GPU work without a sync.
        """
        lens = check_inputs(q, k, cu_seqlens, seq_lens=seq_lens)
        max_len = max(lens)  # known on the host: no kernel below reads lengths back from the device
        vertical, slash = last_window_sums(q, k, cu_seqlens, self.approximation_size, scale=scale, backend=backend,
                                           max_len=max_len)
        shape = (len(lens), q.shape[1])
        vertical_budget = torch.full(shape, self.vertical_size, dtype=torch.long, device=q.device)
        slash_budget = torch.full(shape, self.slash_size, dtype=torch.long, device=q.device)
        # the sizes are the budgets' maxima, known here: the Triton top-k needs no read-back of the budgets
        return select_vertical_slash(cu_seqlens, vertical, slash, vertical_budget, slash_budget, backend=backend,
                                     max_budget=(self.vertical_size, self.slash_size), max_len=max_len)
