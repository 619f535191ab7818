"""PyTorch operations on vLLM's paged KV cache: writes, gathers, and the attention variants the backend needs.

All functions take the key / value views from `compat.kv_views`: `key_cache, value_cache [num_blocks, block_size,
Hkv, D]` (writable views of vLLM's memory, any strides), and a request's `block_table` row (physical block ids).
Token position `p` of a request lives at `(block_table[p // block_size], p % block_size)`.

The attention math itself is the shared method code: decode over a gathered compact cache is
`sparse_attn.kernels.decode.decode` (Triton on CUDA, PyTorch reference elsewhere); Quest page scores and
selection are `sparse_attn.kernels.quest`. What is vLLM-specific here is only *where the tokens are* (gathers by
block table) and the Quest page metadata kept per physical block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def write_kv(key_cache: torch.Tensor, value_cache: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Write new tokens: `key, value [N, Hkv, D]` at flat slots `slot_mapping [N]` (slot = block * bs + offset).

    Slots < 0 are padding and are skipped (vLLM pads the batch on GPU).
    """
    block_size = key_cache.shape[1]
    count = min(slot_mapping.shape[0], key.shape[0])
    slots = slot_mapping[:count].long()
    keep = slots >= 0
    if not bool(keep.all()):
        slots, key, value = slots[keep], key[:count][keep], value[:count][keep]
    else:
        key, value = key[:count], value[:count]
    blocks, offsets = slots // block_size, slots % block_size
    key_cache[blocks, offsets] = key.to(key_cache.dtype)
    value_cache[blocks, offsets] = value.to(value_cache.dtype)


def physical(block_table: torch.Tensor, positions: torch.Tensor, block_size: int):
    """(block ids, offsets) of token `positions` (any shape, >= 0) of one request (`block_table [max_blocks]`)
    or of many (`block_table [B, max_blocks]` with `positions [B, ...]`)."""
    column = (positions // block_size).clamp_(max=block_table.shape[-1] - 1)
    if block_table.dim() == 1:
        blocks = block_table.long()[column]
    else:
        flat = column.reshape(column.shape[0], -1)
        blocks = torch.gather(block_table.long(), 1, flat).view_as(column)
    return blocks, positions % block_size


def gather_request(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The first `length` tokens of one request: `[length, Hkv, D]` (a copy)."""
    positions = torch.arange(length, device=cache.device)
    blocks, offsets = physical(block_table, positions, cache.shape[1])
    return cache[blocks, offsets]


def gather_per_head(cache: torch.Tensor, block_tables: torch.Tensor, positions: torch.Tensor,
                    heads: torch.Tensor) -> torch.Tensor:
    """Tokens of several requests, a different position list per head: `[B, H, C, D]`.

    block_tables [B, max_blocks]; positions [B, H, C] (>= 0; invalid entries may hold any valid position);
    heads [H] KV head read for each output head (lets per-query-head selections read their KV head).
    """
    batch, num_heads, capacity = positions.shape
    blocks, offsets = physical(block_tables, positions, cache.shape[1])
    head_index = heads.view(1, num_heads, 1).expand(batch, num_heads, capacity)
    return cache[blocks, offsets, head_index]


# -- attention over contiguous tokens (prefill) -----------------------------------------------------------------
def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     q_offset: int = 0) -> torch.Tensor:
    """Dense causal attention of `q [T, Hq, D]` (token positions q_offset .. q_offset+T-1) over `k, v [S, Hkv, D]`
    (positions 0 .. S-1); GQA by `enable_gqa`. Returns `[T, Hq, D]` in q's dtype (torch SDPA: fused kernels)."""
    qt, kt, vt = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    if q_offset == 0 and q.shape[0] == k.shape[0]:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, enable_gqa=True)
    else:
        rows = torch.arange(q.shape[0], device=q.device)[:, None] + q_offset
        mask = torch.arange(k.shape[0], device=q.device)[None, :] <= rows
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)


# -- Quest page metadata per physical block ------------------------------------------------------------------------
class PageMeta:
    """Elementwise min / max of the keys of every page, for every physical block of one layer.

    `page_min, page_max [num_blocks * pages_per_block, Hkv, D]` (global page id = slot // page_size); a page is
    `page_size` tokens, `page_size` divides the block size (vLLM blocks hold whole pages). Kept up to date at every
    cache write, only for the pages written: the first token of a page resets it (a freed block being reused), later
    tokens fold in. Because it is keyed by physical block, prefix-cache hits and preempted-then-resumed requests find
    valid metadata.
    Memory: 2 / page_size of the K cache (vLLM's profiler does not see it; leave headroom).
    """

    def __init__(self, key_cache: torch.Tensor, page_size: int):
        num_blocks, block_size, num_kv_heads, head_size = key_cache.shape
        if block_size % page_size:
            raise ValueError(f"quest.page_size={page_size} must divide vLLM's block_size={block_size}")
        self.page_size = page_size
        self.pages_per_block = block_size // page_size
        shape = (num_blocks * self.pages_per_block, num_kv_heads, head_size)
        self.page_min = torch.full(shape, float("inf"), dtype=key_cache.dtype, device=key_cache.device)
        self.page_max = torch.full(shape, float("-inf"), dtype=key_cache.dtype, device=key_cache.device)
        self.block_size = block_size

    def update(self, key: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        """Fold new keys `[N, Hkv, D]` written at `slot_mapping [N]` into their pages (`kernels.quest`
        `paged_update_page_meta`: one Triton launch on GPU, the scatter-reduce reference on CPU)."""
        from ...kernels.quest import paged_update_page_meta

        paged_update_page_meta(self.page_min, self.page_max, key, slot_mapping, self.page_size)

    def gather(self, block_tables: torch.Tensor, num_pages: int):
        """Metadata of pages `0 .. num_pages-1` of each request: `page_min, page_max [B, Hkv, num_pages, D]`."""
        batch = block_tables.shape[0]
        page = torch.arange(num_pages, device=block_tables.device).expand(batch, num_pages)
        blocks, _ = physical(block_tables, page * self.page_size, self.block_size)
        flat = blocks * self.pages_per_block + page % self.pages_per_block
        return self.page_min[flat].transpose(1, 2), self.page_max[flat].transpose(1, 2)


# -- compacted (SnapKV / Ada-SnapKV) requests ------------------------------------------------------------------
class CompactionTable:
    """Per request, how its prompt was compacted in place: kept tokens per KV head and the prompt length.

    Keyed by the request's first physical block id (`block_table[row, 0]`): stable for the request's lifetime,
    overwritten by the next full prefill that starts in that block. `kept [num_blocks, Hkv]`, `prompt [num_blocks]`
    (-1 = no compacted prompt starts in that block).
    """

    def __init__(self, num_blocks: int, num_kv_heads: int, device):
        self.kept = torch.zeros(num_blocks, num_kv_heads, dtype=torch.int32, device=device)
        self.prompt = torch.full((num_blocks,), -1, dtype=torch.int32, device=device)

    def record(self, first_block: int, kept: torch.Tensor, prompt_len: int) -> None:
        self.kept[first_block] = kept.to(torch.int32)
        self.prompt[first_block] = prompt_len

    def lookup(self, first_blocks: torch.Tensor):
        return self.kept[first_blocks.long()], self.prompt[first_blocks.long()]


def write_compacted(key_cache: torch.Tensor, value_cache: torch.Tensor, block_table: torch.Tensor,
                    k: torch.Tensor, v: torch.Tensor, lens: torch.Tensor) -> None:
    """Write one request's kept tokens `k, v [Hkv, C, D]` (positional order) to positions `0 .. lens[h]-1` of its
    own blocks, per KV head (`lens [Hkv]`). The tokens beyond stay in memory but are never read again."""
    num_kv_heads, capacity, _ = k.shape
    positions = torch.arange(capacity, device=k.device).expand(num_kv_heads, capacity)
    valid = positions < lens.to(k.device)[:, None]
    heads = torch.arange(num_kv_heads, device=k.device)[:, None].expand(num_kv_heads, capacity)
    blocks, offsets = physical(block_table, positions, key_cache.shape[1])
    key_cache[blocks[valid], offsets[valid], heads[valid]] = k[valid].to(key_cache.dtype)
    value_cache[blocks[valid], offsets[valid], heads[valid]] = v[valid].to(value_cache.dtype)
