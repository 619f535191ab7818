"""The paper's cost model: prefill FLOPs and decode memory traffic per method configuration and length.

Formulas are the Sparse Frontier's (arXiv:2504.17768, Appendix B "Computational Cost Analysis"), written out in
../docs/cli.md and used by `sparse-attn report` for accuracy-vs-cost (isoFLOPS / isoCost) plots. Symbols:
L sequence length, d hidden size, h query heads, d_h head dim, n_kv KV heads, N layers, d_mlp MLP width,
|V| vocabulary, rho = attention density = 1 - sparsity, B batch.

Prefill (compute-bound), FLOPs::

    FLOPS_prefill = B (FLOPS_emb + FLOPS_attn + FLOPS_mlp + FLOPS_logits)                       (1)
    FLOPS_emb     = 2 L d                                                                         (2)
    FLOPS_attn    = N (2 L d (d + 2 d_h n_kv + d) + rho (2 h L^2 d_h + 3 h L^2 + 2 h L^2 d_h))   (3)
    FLOPS_mlp     = N (6 L d d_mlp + 2 L d_mlp)                                                   (4)
    FLOPS_logits  = 2 L d |V|                                                                     (5)

Decode (memory-bound), elements read per generated token (x bytes per element for bytes)::

    Memory_decode  = Memory_weights + B Memory_kv                                                 (6)
    Memory_kv      = N 2 L d_h n_kv rho                                                           (7)
    Memory_weights = N (4 d^2 + 3 d d_mlp) + d |V| + d                                            (8)

Indexing overheads::

    FLOPS_VS-indexing     = B N h (2 d_h L q + 3 L q + 2 L q + 2 L log2 L + (L / 64)(k_v + k_s))  (9)
    Memory_Quest-indexing = B N n_kv 2 d_h L / p                                                  (10)

Conventions kept from the paper on purpose (so our curves are comparable with its figures): the attention term
counts the full L^2 (no causal halving); (8) counts 4 d^2 attention weights (ignores the GQA reduction of K/V
projections). One reading differs: the paper writes d in (9) and (10); we read it as the head dim d_h, because
both terms are per head (q.k^T of q estimation queries for one head; one min and one max key vector per page and
KV head). With the hidden size, Quest's page metadata would cost more bytes than reading the whole KV cache
(Qwen2.5-7B, 16K: 822M vs 470M elements), which contradicts the method's point.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional

from .config import Composition, ConfigError
from .registry import build_config


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers the cost formulas need.

    hidden: d; heads: h (query heads); head_dim: d_h; kv_heads: n_kv; layers: N; mlp: d_mlp; vocab: |V|.
    """

    hidden: int
    heads: int
    head_dim: int
    kv_heads: int
    layers: int
    mlp: int
    vocab: int

    @classmethod
    def from_hf_config(cls, config: Any) -> "ModelShape":
        """From a transformers `PretrainedConfig` (or its dict). Multimodal configs use their `text_config`."""
        if not isinstance(config, Mapping):
            config = config.to_dict()
        if "text_config" in config and "hidden_size" not in config:
            config = config["text_config"]
        try:
            hidden = config["hidden_size"]
            heads = config["num_attention_heads"]
            return cls(
                hidden=hidden, heads=heads,
                head_dim=config.get("head_dim") or hidden // heads,
                kv_heads=config.get("num_key_value_heads") or heads,
                layers=config["num_hidden_layers"], mlp=config["intermediate_size"], vocab=config["vocab_size"],
            )
        except KeyError as missing:
            raise ConfigError(f"model config has no {missing} field; pass a ModelShape explicitly") from None

    @classmethod
    def from_pretrained(cls, path: str) -> "ModelShape":
        """From a local model folder (reads config.json only; no weights, no network)."""
        from transformers import AutoConfig

        return cls.from_hf_config(AutoConfig.from_pretrained(path))

    def to_dict(self) -> Dict[str, int]:
        return asdict(self)


#: The reference system's model table (Qwen2.5-Instruct), for cost plots without the checkpoints.
PAPER_MODELS = {
    "qwen2.5-7b": ModelShape(hidden=3584, heads=28, head_dim=128, kv_heads=4, layers=28, mlp=18944, vocab=152064),
    "qwen2.5-14b": ModelShape(hidden=5120, heads=40, head_dim=128, kv_heads=8, layers=48, mlp=13824, vocab=152064),
    "qwen2.5-32b": ModelShape(hidden=5120, heads=40, head_dim=128, kv_heads=8, layers=64, mlp=27648, vocab=152064),
    "qwen2.5-72b": ModelShape(hidden=8192, heads=64, head_dim=128, kv_heads=8, layers=80, mlp=29568, vocab=152064),
}


def _check_density(density: float) -> float:
    if not 0.0 <= density <= 1.0:
        raise ConfigError(f"attention density must be in [0, 1] (1 - sparsity), got {density}")
    return float(density)


# -- prefill ------------------------------------------------------------------------------------------------------
def prefill_flops(shape: ModelShape, length: int, density: float = 1.0, batch: int = 1) -> Dict[str, float]:
    """Prefill FLOPs by part, eqs. (1)-(5): {"embedding", "attention_projections", "attention_scores", "mlp",
    "logits", "total"}. `attention_scores` is the rho-scaled QK^T + softmax + PV term of (3)."""
    rho = _check_density(density)
    s, L = shape, float(length)
    emb = 2 * L * s.hidden
    projections = s.layers * 2 * L * s.hidden * (s.hidden + 2 * s.head_dim * s.kv_heads + s.hidden)
    scores = s.layers * rho * (2 * s.heads * L * L * s.head_dim + 3 * s.heads * L * L
                               + 2 * s.heads * L * L * s.head_dim)
    mlp = s.layers * (6 * L * s.hidden * s.mlp + 2 * L * s.mlp)
    logits = 2 * L * s.hidden * s.vocab
    parts = {"embedding": emb, "attention_projections": projections, "attention_scores": scores, "mlp": mlp,
             "logits": logits}
    parts = {k: batch * v for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def vertical_slash_indexing_flops(shape: ModelShape, length: int, approximation_size: int, verticals: int,
                                  slashes: int, batch: int = 1) -> float:
    """Eq. (9): estimating the vertical / slash pattern from `approximation_size` last queries (q) and
    selecting k_v verticals and k_s slashes, per layer and query head."""
    s, L, q = shape, float(length), float(min(approximation_size, length))
    per_head = (2 * s.head_dim * L * q + 3 * L * q + 2 * L * q + 2 * L * math.log2(max(L, 2))
                + (L / 64) * (verticals + slashes))
    return batch * s.layers * s.heads * per_head


# -- decode -------------------------------------------------------------------------------------------------------
def weights_elements(shape: ModelShape) -> float:
    """Eq. (8): weight elements read per decode step (paper convention: 4 d^2 for attention)."""
    s = shape
    return s.layers * (4 * s.hidden ** 2 + 3 * s.hidden * s.mlp) + s.hidden * s.vocab + s.hidden


def kv_elements(shape: ModelShape, length: int, density: float = 1.0) -> float:
    """Eq. (7): KV-cache elements read per decode step for one sequence of `length` tokens."""
    s = shape
    return s.layers * 2 * float(length) * s.head_dim * s.kv_heads * _check_density(density)


def quest_indexing_elements(shape: ModelShape, length: int, page_size: int = 16, batch: int = 1) -> float:
    """Eq. (10): page min/max metadata read per decode step by Quest's page scoring."""
    s = shape
    return batch * s.layers * s.kv_heads * 2 * s.head_dim * float(length) / page_size


def decode_bytes(shape: ModelShape, length: int, density: float = 1.0, batch: int = 1,
                 bytes_per_element: int = 2) -> Dict[str, float]:
    """Decode memory traffic per generated token, eqs. (6)-(8), in bytes: {"weights", "kv", "total"}."""
    weights = weights_elements(shape) * bytes_per_element
    kv = batch * kv_elements(shape, length, density) * bytes_per_element
    return {"weights": weights, "kv": kv, "total": weights + kv}


# -- per method configuration -------------------------------------------------------------------------------------
def method_cost(method: Any, shape: ModelShape, length: int, output_tokens: int = 1, batch: int = 1,
                prefill_density: Optional[float] = None, decode_density: Optional[float] = None,
                bytes_per_element: int = 2) -> Dict[str, float]:
    """Cost of running `method` (name, dict or `Composition`) on a `length`-token prompt + `output_tokens`.

    Densities: pass the *measured* ones when known (a sweep's achieved sparsity); otherwise the budgeted density
    from `sparse_attn.compression.analytic_density` is used, and for content-dependent prefill methods
    (vertical_slash, flexprefill) a ConfigError asks for the measured value. Indexing overheads (9) and (10)
    are added for vertical_slash / flexprefill and quest.

    Returns {"prefill_flops", "indexing_flops", "decode_bytes_per_token", "decode_bytes", "indexing_bytes",
    "prefill_density", "decode_density"}; `decode_bytes` sums the per-token traffic over `output_tokens` steps at
    the prompt length (context growth during decoding is ignored, as in the paper).
    """
    from .compression import analytic_density  # compression imports the registry only; keep cost importable

    composition: Composition = method if isinstance(method, Composition) else build_config(method)
    prefill, decode = composition.prefill, composition.decode

    if prefill_density is None:
        prefill_density = 1.0
        if prefill is not None:
            prefill_density = analytic_density(prefill, length)
            if prefill_density is None:
                raise ConfigError(f"{prefill.name}: its prefill density depends on the content; pass the measured "
                                  f"prefill_density (1 - achieved sparsity)")
    if decode_density is None:
        decode_density = 1.0 if decode is None else analytic_density(decode, length)

    indexing_flops = 0.0
    if prefill is not None and prefill.name == "vertical_slash":
        indexing_flops = vertical_slash_indexing_flops(shape, length, prefill.approximation_size,
                                                       prefill.vertical_size, prefill.slash_size, batch)
    elif prefill is not None and prefill.name == "flexprefill":
        # budgets are adaptive: charge the estimation with min_budget selections (the floor)
        indexing_flops = vertical_slash_indexing_flops(shape, length, prefill.approximation_size,
                                                       prefill.min_budget, prefill.min_budget, batch)
    indexing_bytes = 0.0
    if decode is not None and decode.name == "quest":
        indexing_bytes = quest_indexing_elements(shape, length, decode.page_size, batch) * bytes_per_element

    flops = prefill_flops(shape, length, prefill_density, batch)["total"] + indexing_flops
    per_token = decode_bytes(shape, length, decode_density, batch, bytes_per_element)["total"] + indexing_bytes
    return {
        "prefill_flops": flops,
        "indexing_flops": indexing_flops,
        "decode_bytes_per_token": per_token,
        "decode_bytes": per_token * output_tokens,
        "indexing_bytes": indexing_bytes,
        "prefill_density": prefill_density,
        "decode_density": decode_density,
    }


def attention_share(shape: ModelShape, length: int) -> float:
    """Fraction of dense prefill FLOPs in attention, eq. (3) (projections + the L^2 term) over eq. (1).

    The paper reports 40% at 16K, 68% at 64K and 80% at 128K averaged over Qwen2.5 7B-72B; `PAPER_MODELS`
    reproduces that (tests/test_cost.py).
    """
    parts = prefill_flops(shape, length)
    return (parts["attention_projections"] + parts["attention_scores"]) / parts["total"]
