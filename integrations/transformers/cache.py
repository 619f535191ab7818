"""KV caches for the decode-phase methods: a transformers `Cache` whose full-attention layers are ours.

- `CompressedKVCache` (snapkv, ada_snapkv): after prefill each full-attention layer stores only the kept tokens per
  KV head, `keys, values [B, Hkv, C, D]` with per-head lengths `lens [B, Hkv]` (valid tokens at `0..lens-1`, in
  positional order): memory really shrinks to about `token_capacity / prompt_length` of a dense cache.
- `QuestCache` (quest): each full-attention layer stores the whole cache per sample, `keys, values [B, Hkv, S, D]`
  with `lens [B]` (real tokens first, padding removed, pages aligned at each sample's first token), plus the page
  min/max metadata (`QuestPages`) kept up to date on every append; decode reads only the selected pages.

Sliding-window layers (Gemma-3) keep transformers' own `DynamicSlidingWindowLayer`.

Positions stay right because transformers' generate derives RoPE positions from the attention mask, not the cache
length; our layers report the logical length (tokens seen, padding included) from `get_seq_length`, like
`DynamicSlidingWindowLayer` does, and the stored length from `lens`.

transformers calls `cache.update(k, v, layer_idx)` right before the attention function but does not pass the cache
to it. `SparseCache.update` therefore publishes the layer in a `ContextVar`, and the attention function consumes it
(and clears it, so nothing stale is ever read).
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Optional, Tuple

import torch
from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING, Cache, DynamicLayer, get_layer_types_and_kwargs

from ...config import ConfigError
from .quest_graph import QuestStepGraph, eager_step
from .settings import CONFIG_ATTR, build_for, is_sparse_attn_name

_PUBLISHED: ContextVar[Optional[Tuple[int, "SparseLayer"]]] = ContextVar("sparse_attn_cache_layer", default=None)


def consume_published_layer(layer_idx: int) -> Optional["SparseLayer"]:
    """The cache layer `SparseCache.update` just published for `layer_idx` (None if none); clears the handoff."""
    published = _PUBLISHED.get()
    if published is None:
        return None
    _PUBLISHED.set(None)
    index, layer = published
    return layer if index == layer_idx and isinstance(layer, SparseLayer) else None


def _grow(x: torch.Tensor, capacity: int) -> torch.Tensor:
    """Zero-pad dim 2 of `[B, H, C, D]` to `capacity` slots."""
    extra = capacity - x.shape[2]
    return torch.cat([x, x.new_zeros(x.shape[0], x.shape[1], extra, x.shape[3])], dim=2)


class SparseLayer(DynamicLayer):
    """Base of our cache layers: the prompt arrives whole (`state="pending"`), the attention function commits it
    in the method's layout (`state="committed"`), then decode steps append one token per sample.

    `seen` is the logical length (every position transformers has fed, padding included); `max_len` the largest
    stored length (a Python int, so appends never synchronise with the GPU).
    """

    is_croppable = False
    is_compileable = False

    def __init__(self, **kwargs):
        super().__init__()
        self.seen = 0
        self.state = "empty"
        self.lens: Optional[torch.Tensor] = None
        self.max_len = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self.state == "empty":
            self.keys, self.values, self.state = key_states, value_states, "pending"
            self.seen = new
            return key_states, value_states
        if self.state == "pending":
            raise RuntimeError(
                f"{type(self).__name__}: the prompt was cached but never committed by a sparse_attn attention "
                f"function; this cache only works with a model loaded with a sparse_attn attn_implementation"
            )
        if new != 1:
            raise NotImplementedError(
                f"{type(self).__name__}: feeding {new} tokens at once after the prompt (chunked prefill, a second "
                f"turn over the same cache, assisted decoding) is not supported; start from a fresh cache"
            )
        self._append(key_states[:, :, 0], value_states[:, :, 0])
        self.seen += 1
        self.max_len += 1
        return self.keys, self.values

    def _ensure_capacity(self) -> None:
        capacity = self.keys.shape[2]
        if self.max_len + 1 > capacity:
            capacity = capacity + max(16, capacity // 8)  # geometric growth: few copies, little slack
            self.keys, self.values = _grow(self.keys, capacity), _grow(self.values, capacity)

    def _append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        raise NotImplementedError

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot be cropped (assisted decoding / rollback): the "
                                  f"evicted tokens are gone")

    def reset(self) -> None:
        self.keys = self.values = self.lens = None
        self.seen, self.max_len, self.state, self.is_initialized = 0, 0, "empty", False

    def _batch_tensors(self) -> list[str]:
        return ["keys", "values", "lens"]

    def _map_batch(self, fn) -> None:
        if self.state != "committed":
            if self.keys is not None:
                self.keys, self.values = fn(self.keys), fn(self.values)
            return
        for name in self._batch_tensors():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, fn(value))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_batch(lambda x: x.index_select(0, beam_idx.to(x.device)))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map_batch(lambda x: x[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_batch(lambda x: x.repeat_interleave(repeats, dim=0))

    def stored_bytes(self) -> int:
        """Bytes of every tensor this layer holds (keys, values and bookkeeping)."""
        return sum(t.numel() * t.element_size() for t in self._stored_tensors() if t is not None)

    def _stored_tensors(self) -> list:
        return [self.keys, self.values, self.lens]

    def dense_bytes(self) -> int:
        """Bytes a dense `DynamicLayer` would hold for the same tokens: `2 * B * Hkv * seen * D * itemsize`."""
        if self.keys is None:
            return 0
        batch, heads, _, dim = self.keys.shape
        return 2 * batch * heads * self.seen * dim * self.keys.element_size()


class CompressedKVLayer(SparseLayer):
    """SnapKV / Ada-SnapKV layer: `keys, values [B, Hkv, C, D]`, `lens [B, Hkv]` int32, `index [B, Hkv, C]` (the
    original prompt positions of the kept tokens, -1 beyond the prompt's kept length)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.index: Optional[torch.Tensor] = None
        self.prompt_lens: Optional[torch.Tensor] = None

    def commit(self, compressed) -> None:
        """Replace the pending prompt by `CompressedKV(k, v [B, Hkv, C, D], lens [B, Hkv], index, sparsity)`."""
        self.keys, self.values = compressed.k, compressed.v
        self.lens = compressed.lens.to(torch.int32).clone()
        self.index = compressed.index
        self.max_len = int(compressed.lens.max())
        self.state = "committed"

    def _append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        self._ensure_capacity()
        batch, heads = self.lens.shape
        b = torch.arange(batch, device=self.lens.device)[:, None]
        h = torch.arange(heads, device=self.lens.device)[None, :]
        slot = self.lens.long()
        self.keys[b, h, slot] = k_new  # [B, Hkv, D] into each head's next free slot
        self.values[b, h, slot] = v_new
        self.lens += 1

    def _batch_tensors(self) -> list[str]:
        return ["keys", "values", "lens", "index"]

    def _stored_tensors(self) -> list:
        return [self.keys, self.values, self.lens, self.index]


class QuestLayer(SparseLayer):
    """Quest layer: the full cache per sample, `keys, values [B, Hkv, S, D]`, `lens [B]` int32, and `pages`
    (`QuestPages`: page min/max `[B, Hkv, P, D]`, updated on every append).

    A decode step's new key / value are held by `update` and written by the attention function's `decode_step`,
    together with the page selection and the attention: on CUDA the whole step replays as one CUDA graph
    (`quest_graph.py`; `cuda_graphs=False` runs it eagerly, as on the CPU).
    """

    def __init__(self, cuda_graphs: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.pages = None
        self.cuda_graphs = cuda_graphs
        self.pending: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self.step_graph = None

    def commit(self, keys: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor, page_size: int) -> None:
        """Store the prompt (`[B, Hkv, S, D]`, each sample's real tokens first) and build its page metadata."""
        from ...methods.quest import QuestPages

        self.keys, self.values = keys, values
        self.lens = lengths.to(torch.int32).clone()
        self.max_len = int(lengths.max())
        self.pages = QuestPages.from_cache(keys, self.lens, page_size)
        self.state = "committed"

    def _append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        if self.pending is not None:
            raise RuntimeError("QuestLayer: a decode token was cached but its attention never ran (the cache must be "
                               "used with a model loaded with a sparse_attn quest attn_implementation)")
        self._ensure_capacity()
        self.pages.reserve(self.max_len)  # max(lens) before the append, host-known: no read-back
        # written by `decode_step` (append, selection and attention together: one CUDA graph on the GPU)
        self.pending = (k_new, v_new)

    def decode_step(self, method, q: torch.Tensor, scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
        """Append the pending token (K/V at each sample's `lens`, its key folded into its page, `lens += 1`) and
        attend: `(out [B, Hq, D], head_sparsity [B, Hsel])` for the query `q [B, Hq, D]` (`method`: `Quest`)."""
        if self.pending is None:
            raise RuntimeError("QuestLayer.decode_step without a new token: call the cache's update first")
        (k_new, v_new), self.pending = self.pending, None
        if not (self.cuda_graphs and q.is_cuda):
            return eager_step(self, method, q, k_new, v_new, scale)
        if self.step_graph is None:
            self.step_graph = QuestStepGraph()
        return self.step_graph.step(self, method, q, k_new, v_new, scale)

    def reset(self) -> None:
        super().reset()
        self.pages, self.pending = None, None
        if self.step_graph is not None:
            self.step_graph.clear()

    def _map_batch(self, fn) -> None:
        super()._map_batch(fn)
        if self.state == "committed" and self.pages is not None:
            self.pages.page_min, self.pages.page_max = fn(self.pages.page_min), fn(self.pages.page_max)

    def _stored_tensors(self) -> list:
        pages = [self.pages.page_min, self.pages.page_max] if self.pages is not None else []
        return [self.keys, self.values, self.lens] + pages


class SparseCache(Cache):
    """A transformers `Cache` whose full-attention layers are `layer_class`; sliding layers stay transformers'.

    Build it from a model (or its config) loaded with a matching sparse_attn attn_implementation:
    ``model.generate(**inputs, past_key_values=sparse_attn.QuestCache(model))``. generate() creates one
    automatically when none is passed; passing one is useful to inspect it afterwards (`stored_bytes()`).
    """

    layer_class: type = SparseLayer
    phases: tuple = ()

    def __init__(self, model_or_config, method: Optional[str] = None, **layer_options):
        config = getattr(model_or_config, "config", model_or_config)
        text_config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        name = method or getattr(text_config, "_attn_implementation", None)
        if not is_sparse_attn_name(name):
            raise ConfigError(f"{type(self).__name__} needs a model loaded with a sparse_attn attn_implementation "
                              f"(got {name!r})")
        composition = build_for(name, getattr(text_config, CONFIG_ATTR, None) or {})
        if composition.decode is None or composition.decode.phase not in self.phases:
            expected = "snapkv / ada_snapkv" if "compression" in self.phases else "quest"
            raise ConfigError(f"{type(self).__name__} serves {expected} (alone or composed); the model runs {name!r}. "
                              f"Use sparse_attn.make_cache(model) to get the right cache, or none for prefill methods")
        self.method_name = name
        layer_types, layer_kwargs = get_layer_types_and_kwargs(text_config)
        if isinstance(layer_kwargs, dict):  # transformers < 5.19 returns one dict for every layer
            layer_kwargs = [layer_kwargs] * len(layer_types)
        layers = []
        for layer_type, kwargs in zip(layer_types, layer_kwargs):
            if layer_type == "full_attention":
                layers.append(self.layer_class(**layer_options))
            elif layer_type in ("sliding_attention", "chunked_attention"):
                layers.append(DYNAMIC_LAYER_TYPE_MAPPING[layer_type](sliding_window=kwargs["sliding_window"]))
            else:
                raise NotImplementedError(f"{type(self).__name__}: layer type {layer_type!r} is not supported "
                                          f"(full_attention and sliding_attention layers are)")
        super().__init__(layers=layers)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        keys, values = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        _PUBLISHED.set((layer_idx, self.layers[layer_idx]))
        return keys, values

    def stored_bytes(self) -> int:
        """Bytes held by the sparse layers (sliding layers excluded)."""
        return sum(layer.stored_bytes() for layer in self.layers if isinstance(layer, SparseLayer))

    def dense_bytes(self) -> int:
        """Bytes a dense cache would hold for the same layers and tokens."""
        return sum(layer.dense_bytes() for layer in self.layers if isinstance(layer, SparseLayer))


class CompressedKVCache(SparseCache):
    """Cache for snapkv / ada_snapkv: stores only the kept tokens per KV head (see module docstring)."""

    layer_class = CompressedKVLayer
    phases = ("compression",)


class QuestCache(SparseCache):
    """Cache for quest: full cache per sample plus page min/max kept up to date (see module docstring).

    cuda_graphs: replay each layer's decode step (append, page scores, selection, attention) as a CUDA graph on
        the GPU. Default True; False runs the same kernels eagerly.
    """

    layer_class = QuestLayer
    phases = ("decode",)

    def __init__(self, model_or_config, method: Optional[str] = None, cuda_graphs: bool = True):
        super().__init__(model_or_config, method=method, cuda_graphs=cuda_graphs)


def cache_class_for(composition) -> Optional[type]:
    """The cache class a composition's decode part needs, or None (prefill-only and dense methods)."""
    if composition.decode is None:
        return None
    return CompressedKVCache if composition.decode.phase == "compression" else QuestCache


def make_cache(model, method: Optional[str] = None) -> SparseCache:
    """The sparse_attn cache matching the model's method (raises for methods that need none)."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    name = method or getattr(config, "_attn_implementation", None)
    if not is_sparse_attn_name(name):
        raise ConfigError(f"make_cache needs a model loaded with a sparse_attn attn_implementation (got {name!r})")
    cls = cache_class_for(build_for(name, getattr(config, CONFIG_ATTR, None) or {}))
    if cls is None:
        raise ConfigError(f"{name!r} acts on prefill only and uses transformers' DynamicCache; no sparse cache needed")
    return cls(model, method=name)
