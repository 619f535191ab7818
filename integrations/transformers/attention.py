"""The attention function registered for every sparse_attn name (`AttentionInterface`).

transformers calls `fn(module, query [B, Hq, Sq, D], key, value [B, Hkv, Skv, D], attention_mask, dropout=,
scaling=, **kwargs)` after RoPE and after the cache update (`key` / `value` include the cached prefix) and expects
`(out [B, Sq, Hq, D], None)`. Per layer and phase:

| phase                       | sliding-window layer | full-attention layer                                          |
|-----------------------------|----------------------|---------------------------------------------------------------|
| prefill (`Sq == Skv > 1`)   | dense SDPA + window  | prefill method on the varlen-packed prompt, else dense SDPA;  |
|                             |                      | then snapkv/ada compress into, or quest commits to, the cache |
| decode (`Sq == 1`)          | dense SDPA + window  | dense SDPA (prefill-only methods), snapkv/ada decode over the |
|                             |                      | kept tokens, or quest decode over the selected pages          |

Dense phases call transformers' own `sdpa_attention_forward` with the mask transformers would build, so they equal
`attn_implementation="sdpa"`. Unsupported cases raise; nothing falls back to dense silently.
"""
from __future__ import annotations

from typing import Optional

import torch

from .cache import CompressedKVLayer, QuestLayer, consume_published_layer
from .layout import Varlen, dense_sdpa, key_padding
from .settings import resolve
from .stats import layer_stats


def make_attention_function(name: str):
    """The attention function for attn_implementation `name` (a method or ``"<prefill>+<decode>"`` composition)."""

    def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: Optional[float] = None,
                  **kwargs):
        return sparse_attention_forward(name, module, query, key, value, attention_mask, dropout=dropout,
                                        scaling=scaling, **kwargs)

    attention.__name__ = attention.__qualname__ = f"sparse_attn_{name.replace('+', '_')}_attention"
    attention.__doc__ = f"sparse_attn attention for attn_implementation={name!r} (see sparse_attention_forward)."
    return attention


def _check_supported(module, query: torch.Tensor, dropout: float, kwargs: dict) -> None:
    if kwargs.get("output_attentions"):
        raise NotImplementedError("sparse_attn attention never materialises attention weights: output_attentions=True "
                                  "needs attn_implementation='eager'")
    if dropout and getattr(module, "training", False):
        raise NotImplementedError("sparse_attn methods are for inference: call model.eval() (attention dropout "
                                  f"{dropout} is active in training mode)")
    if kwargs.get("cache") is not None:
        raise NotImplementedError("sparse_attn does not support transformers' continuous batching (paged cache); "
                                  "use generate() or vLLM (sparse_attn.integrations.vllm)")
    if kwargs.get("is_causal") is False or getattr(module, "is_causal", True) is False:
        raise NotImplementedError("sparse_attn methods are causal decoder attention; this layer is bidirectional")


def sparse_attention_forward(name: str, module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: Optional[torch.Tensor], dropout: float = 0.0,
                             scaling: Optional[float] = None, sliding_window: Optional[int] = None, **kwargs):
    """Route one attention call to the method's phase (see module docstring). Returns `(out [B, Sq, Hq, D], None)`."""
    layer_idx = getattr(module, "layer_idx", None)
    cache_layer = consume_published_layer(layer_idx)
    _check_supported(module, query, dropout, kwargs)
    composition = resolve(module, name)
    batch, _, q_len, head_dim = query.shape
    kv_len = key.shape[2]
    scale = head_dim**-0.5 if scaling is None else scaling
    # Our committed cache layers return their own buffers (per-sample lengths, no padding): the mask is unused there.
    committed = cache_layer is not None and cache_layer.state == "committed"
    padding = None if committed else key_padding(attention_mask, batch, kv_len)
    stats = layer_stats(module, name)
    # A new prompt: several tokens, or a 1-token prompt (nothing cached before it), or our cache says so.
    is_prefill = q_len > 1 or kv_len == q_len or (cache_layer is not None and cache_layer.state == "pending")

    if sliding_window is not None:  # Gemma-3 local layers (and Mistral/Qwen2 sliding configs) keep their window
        _require_global_layers(module, sliding_window)
        if is_prefill:
            stats.reset(name, kind="sliding_window")
        return dense_sdpa(module, query, key, value, padding, scale, sliding_window=sliding_window, **kwargs), None

    if is_prefill:
        stats.reset(name)
        if kv_len != q_len and composition.name != "dense":
            raise NotImplementedError(
                f"{name}: {q_len} new tokens over {kv_len - q_len} cached ones (chunked prefill, a second turn over "
                f"the same cache, assisted decoding) is not supported; run the prompt in one forward with a fresh cache"
            )
        if composition.decode is not None and kwargs.get("use_cache") is False:
            raise NotImplementedError(
                f"{name}: {composition.decode.name} acts on the KV cache, but use_cache=False recomputes the whole "
                f"sequence densely at every step; generate with use_cache=True"
            )
        return _prefill(composition, module, query, key, value, padding, scale, cache_layer, stats, kwargs), None

    return _decode(composition, name, module, query, key, value, padding, scale, cache_layer, stats, kwargs), None


def _prefill(composition, module, query, key, value, padding, scale, cache_layer, stats, kwargs) -> torch.Tensor:
    batch, _, seq_len, _ = query.shape
    needs_varlen = composition.prefill is not None or isinstance(cache_layer, CompressedKVLayer)
    varlen = Varlen.from_padding(padding, batch, seq_len, query.device)
    packed = None
    if needs_varlen:
        packed = (varlen.pack(query), varlen.pack(key), varlen.pack(value))
    if composition.prefill is not None:
        # host lengths (known without a read when unpadded, read once in from_padding otherwise): the method then
        # never reads cu_seqlens back, a sync that would stall the GPU queue at the start of every layer's select
        result = composition.prefill.prefill(*packed, varlen.cu_seqlens, scale=scale, backend="auto",
                                             seq_lens=varlen.host_lengths)
        out = varlen.unpack(result.out)
        stats.prefill = result.sparsity
    else:
        out = dense_sdpa(module, query, key, value, padding, scale, **kwargs)
    stats.prompt_tokens = varlen.lengths

    if composition.decode is None:
        return out
    if cache_layer is None:
        # A plain forward (e.g. lm-eval loglikelihood) with transformers' own cache: the prompt's attention is dense
        # for snapkv / quest by definition; a later decode step over that cache raises in `_decode`.
        stats.notes.append(f"{composition.decode.name}: no sparse_attn cache in this forward, nothing compressed")
        return out
    if isinstance(cache_layer, CompressedKVLayer):
        if composition.decode.phase != "compression":
            raise TypeError(f"a CompressedKVCache was passed to a model running {composition.name!r}")
        # host lengths (`Varlen.host_lengths`, padded or not): no device read-back of cu_seqlens, which would wait
        # for the queued prefill
        compressed = composition.decode.compress(*packed, varlen.cu_seqlens, scale=scale,
                                                 seq_lens=varlen.host_lengths)
        cache_layer.commit(compressed)
        stats.kv = compressed.sparsity
    elif isinstance(cache_layer, QuestLayer):
        if composition.decode.phase != "decode":
            raise TypeError(f"a QuestCache was passed to a model running {composition.name!r}")
        cache_layer.commit(varlen.right_aligned(key, padding), varlen.right_aligned(value, padding), varlen.lengths,
                           composition.decode.page_size)
    stats.record_cache(cache_layer)
    return out


def _decode(composition, name, module, query, key, value, padding, scale, cache_layer, stats, kwargs) -> torch.Tensor:
    if composition.decode is None:  # prefill-only methods and dense: decode stays dense (fast SDPA)
        return dense_sdpa(module, query, key, value, padding, scale, **kwargs)
    if cache_layer is None:
        from .generate_hook import hook_status

        raise RuntimeError(
            f"{name}: decoding with {composition.decode.name} needs sparse_attn's cache, but this step runs over "
            f"transformers' own cache. generate() creates it automatically ({hook_status()}); otherwise pass "
            f"past_key_values=sparse_attn.make_cache(model)"
        )
    q = query[:, :, 0]  # [B, Hq, D]
    if isinstance(cache_layer, CompressedKVLayer):
        out = composition.decode.decode(q, cache_layer.keys, cache_layer.values, cache_layer.lens, scale=scale,
                                        backend="auto")
    else:  # the pending token's append, the page selection and the attention (one CUDA graph on the GPU)
        out, head_sparsity = cache_layer.decode_step(composition.decode, q, scale)
        stats.decode_steps.append(head_sparsity)  # [B, Hsel], written by the selection kernel
    return out[:, None]  # [B, 1, Hq, D]


def _require_global_layers(module, sliding_window: int) -> None:
    """A model whose every layer is sliding-window would never run the method: fail loudly instead."""
    config = module.config
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "full_attention" in layer_types:
        return
    raise NotImplementedError(
        f"every attention layer of this model uses a sliding window of {sliding_window} tokens, and sparse_attn "
        f"methods act on global (full-attention) layers only, so nothing would be sparse. For Mistral-style models "
        f"with full attention in practice, load with sliding_window=None (config.sliding_window = None)"
    )
