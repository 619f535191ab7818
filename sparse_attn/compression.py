"""Target compression ratio + sequence length -> each method's parameters, as the paper's sweep table does.

The Sparse Frontier study (arXiv:2504.17768, v1 Table 6) sweeps every method over the same compression targets
20x, 15x, 10x, 7.5x, 5x, 3.33x, 2.5x, 2x, 1.67x, 1.43x (sparsity 0.95 ... 0.30). `params_for_ratio` turns a target
into the method's budget parameters so a sweep can say "quest at 10x" instead of "quest token_budget=1632":

=================  ======================================================================================
method             rule (L = prompt length in tokens, r = target ratio = 1 / density)
=================  ======================================================================================
dense              r must be 1 (nothing to choose)
block_sparse       top_chunks whose *analytic* density (causal block count, see `block_sparse_density`)
                   is nearest to 1/r; reproduces the paper's values exactly (16K: 26, 35, 53, 71, 108, 188, 300)
quest              token_budget = round(int(L / r) / page_size) * page_size (half to even, as numpy/Python
                   round), at least one page; reproduces the paper's 16K-64K lists exactly (16K: 816 ... 11472)
snapkv, ada_snapkv token_capacity = int(L / r) (paper: 16K -> 819 ... 11468)
vertical_slash     the paper's measured table (vertical_size = slash_size): log-log interpolation in r and L
                   inside the table; outside 16384..128000 tokens the size of the nearest tabulated length is
                   scaled by L / L_table (density ~ (v + s) / L keeps the ratio); exact at tabulated points
flexprefill        the paper's (alpha, min_budget) table for 16384..65536 tokens: alpha and min_budget
                   interpolated linearly in log r (and log L between tabulated lengths); exact at tabulated
                   points; outside that range it raises (FlexPrefill's density depends on the content, and the
                   paper measured nothing there: give alpha / min_budget explicitly)
=================  ======================================================================================

Prefill + decode compositions (``"vertical_slash+quest"``) get both parts at the same ratio.
Every impossible request (ratio < 1, a budget below the method's floor, a budget that keeps every token of the
prompt) raises `ConfigError` naming the method, the length and the fix.
"""
from __future__ import annotations

import bisect
import math
from fractions import Fraction
from typing import Any, Dict, Optional, Sequence

from .config import Composition, ConfigError, MethodConfig
from .registry import build_config, get_method_class

#: The paper's compression targets, as exact fractions (3.33 = 10/3, 1.67 = 5/3, 1.43 = 10/7).
PAPER_RATIOS = (20.0, 15.0, 10.0, 7.5, 5.0, 10 / 3, 2.5, 2.0, 5 / 3, 10 / 7)
#: Block-Sparse was swept at these (the paper rounds 10/3 to 3 for this method).
PAPER_BLOCK_SPARSE_RATIOS = (20.0, 15.0, 10.0, 7.5, 5.0, 3.0, 2.0)

#: Paper v1 Table 6, Vertical-Slash (vertical_size = slash_size), one value per `PAPER_RATIOS` entry.
PAPER_VERTICAL_SLASH = {
    16384: (164, 240, 315, 400, 448, 576, 768, 1024, 1536, 2304),
    32768: (290, 384, 448, 576, 704, 1024, 1536, 2304, 3584, 4608),
    65536: (400, 448, 544, 640, 960, 1280, 2304, 4096, 6144, 8192),
    128000: (480, 768, 1024, 1536, 2048, 3584, 5632, 10240, 13312, 18432),
}
#: Paper v1 Table 6, FlexPrefill (alpha, min_budget), for the first seven `PAPER_RATIOS` (20x ... 2.5x).
PAPER_FLEXPREFILL = {
    16384: ((0.0, 164), (0.0, 240), (0.0, 315), (0.0, 400), (0.55, 512), (0.71, 512), (0.88, 512)),
    32768: ((0.0, 290), (0.0, 384), (0.45, 512), (0.6, 512), (0.7, 512), (0.8, 512), (0.92, 512)),
    65536: ((0.0, 400), (0.45, 512), (0.55, 512), (0.7, 512), (0.77, 512), (0.85, 512), (0.94, 512)),
}
#: Paper v1 Table 6, Block-Sparse top_chunks at chunk_size 16, one per `PAPER_BLOCK_SPARSE_RATIOS` entry.
PAPER_BLOCK_SPARSE = {
    16384: (26, 35, 53, 71, 108, 188, 300),
    32768: (52, 69, 105, 141, 216, 376, 600),
    65536: (104, 139, 210, 283, 432, 752, 1200),
}


# -- analytic densities ----------------------------------------------------------------------------------------
def block_sparse_density(length: int, chunk_size: int, top_chunks: int) -> float:
    """Fraction of causal (query block, key block) pairs Block-Sparse computes at `length` tokens.

    With nb = ceil(L / chunk_size) query blocks and k = min(top_chunks, nb): query block m computes
    min(m + 1, k) key blocks, i.e. ``k (k + 1) / 2 + (nb - k) k`` of the ``nb (nb + 1) / 2`` causal pairs
    (the paper's analytic sparsity; the reference system reports 1 minus this).
    """
    blocks = math.ceil(length / chunk_size)
    k = min(top_chunks, blocks)
    return (k * (k + 1) / 2 + (blocks - k) * k) / (blocks * (blocks + 1) / 2)


def analytic_density(method: MethodConfig, length: int) -> Optional[float]:
    """Attention density (1 - sparsity) a method is *budgeted* for at `length`, or None if content-dependent.

    block_sparse: the causal block count; quest: (token_budget + current page) / L at the first decode step;
    snapkv / ada_snapkv: kept tokens / L; dense: 1. vertical_slash and flexprefill depend on which diagonals and
    columns the content selects (overlaps, causal clipping), so they return None: use the measured sparsity.
    """
    if method.phase == "dense":
        return 1.0
    if method.name == "block_sparse":
        return block_sparse_density(length, method.chunk_size, method.top_chunks)
    if method.name == "quest":
        return min(1.0, (method.token_budget + method.page_size) / length)
    if method.name in ("snapkv", "ada_snapkv"):
        return min(1.0, method.token_capacity / length)
    return None


# -- ratio -> parameters -----------------------------------------------------------------------------------------
def params_for_ratio(method: str, ratio: float, length: int, **fixed: Any) -> Dict[str, Any]:
    """Budget parameters giving `method` a compression `ratio` (= 1 / density) at `length` prompt tokens.

    `method` is a method or composition name (``"quest"``, ``"vertical_slash+quest"``); `fixed` holds the
    non-budget parameters the rule depends on (e.g. ``chunk_size``, ``page_size``) and is merged into the result.
    Returns the flat parameter dict accepted by `sparse_attn.build_config(method, **params)`; the result is
    validated (`ConfigError` names the parameter and the fix).

    >>> params_for_ratio("block_sparse", 20, 16384)
    {'chunk_size': 16, 'top_chunks': 26}
    >>> params_for_ratio("quest", 10, 16384)
    {'token_budget': 1632, 'page_size': 16}
    """
    _check_ratio_and_length(method, ratio, length)
    composition = build_config(method, **fixed)  # routes `fixed` to its parts; unknown names raise
    if not composition.methods and ratio != 1:
        raise ConfigError(f"dense: compression ratio must be 1 (got {ratio}); dense attention keeps every token")
    chosen: Dict[str, Any] = {}
    for part in composition.methods:
        if part.name not in _RULES:
            raise ConfigError(f"{part.name}: no compression-ratio rule; give its budget parameters explicitly "
                              f"(or add one with sparse_attn.compression.register_ratio_rule)")
        chosen.update(_RULES[part.name](part, float(ratio), int(length)))
    clashes = sorted(k for k in fixed if k.split(".")[-1] in chosen and fixed[k] != chosen[k.split(".")[-1]])
    if clashes:
        raise ConfigError(f"{method}: {clashes} are set by the compression ratio {ratio}; give either the ratio or "
                          f"these parameters, not both")
    params = {**fixed, **chosen}
    build_config(method, **params)  # validate the combination
    return params


def config_for_ratio(method: str, ratio: float, length: int, **fixed: Any) -> Composition:
    """`params_for_ratio` as a validated `Composition`."""
    return build_config(method, **params_for_ratio(method, ratio, length, **fixed))


def _check_ratio_and_length(method: str, ratio: float, length: int) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio >= 1:
        raise ConfigError(f"{method}: compression ratio must be a number >= 1 (1 = dense), got {ratio!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"{method}: length must be a positive number of tokens, got {length!r}")


def _dense(method: MethodConfig, ratio: float, length: int) -> Dict[str, Any]:
    return {}


def _block_sparse(method: MethodConfig, ratio: float, length: int) -> Dict[str, Any]:
    """top_chunks whose analytic density is nearest to 1 / ratio (ties: the smaller, i.e. sparser, budget)."""
    chunk = method.chunk_size
    blocks = math.ceil(length / chunk)
    target = 1.0 / ratio
    # density(k) is increasing in k; solve k(k+1)/2 + (nb-k)k = target * nb(nb+1)/2 for real k, check neighbours
    total = target * blocks * (blocks + 1) / 2
    b = blocks + 0.5
    real_k = b - math.sqrt(max(b * b - 2 * total, 0.0))
    candidates = {min(max(int(math.floor(real_k)) + d, 1), blocks) for d in (-1, 0, 1, 2)}
    best = min(sorted(candidates), key=lambda k: abs(block_sparse_density(length, chunk, k) - target))
    if best < 3:
        raise ConfigError(
            f"block_sparse: {ratio}x at {length} tokens needs top_chunks={best}, below the minimum 3 (sink, "
            f"diagonal, sub-diagonal): use a lower ratio, a longer length or a smaller chunk_size (now {chunk})"
        )
    if ratio > 1 and best >= blocks:
        raise ConfigError(f"block_sparse: {length} tokens have only {blocks} blocks of {chunk}; {ratio}x is not "
                          f"reachable: use a longer length or a smaller chunk_size")
    return {"chunk_size": chunk, "top_chunks": best}


def _quest(method: MethodConfig, ratio: float, length: int) -> Dict[str, Any]:
    """token_budget = int(L / r) rounded (half to even) to whole pages, as the paper's lists."""
    page = method.page_size
    budget = round(int(length / ratio) / page) * page
    if budget < page:
        raise ConfigError(f"quest: {ratio}x at {length} tokens leaves {int(length / ratio)} tokens, less than one "
                          f"page of {page}: use a lower ratio, a longer length or a smaller page_size")
    if ratio > 1 and budget + page >= length:
        raise ConfigError(f"quest: token_budget={budget} plus the current page covers all {length} tokens, so "
                          f"{ratio}x is not reachable: use a longer length or a smaller page_size")
    return {"token_budget": budget, "page_size": page}


def _snapkv(method: MethodConfig, ratio: float, length: int) -> Dict[str, Any]:
    capacity = int(length / ratio)
    floor = method.local_window + method.prefix_tokens
    if capacity <= floor:
        raise ConfigError(
            f"{method.name}: {ratio}x at {length} tokens keeps {capacity} tokens, not more than the always-kept "
            f"local_window + prefix_tokens = {floor}: use a lower ratio, a longer length or smaller windows"
        )
    return {"token_capacity": capacity}


def _vertical_slash(method: MethodConfig, ratio: float, length: int) -> Dict[str, Any]:
    size = _table_size(PAPER_VERTICAL_SLASH, PAPER_RATIOS, ratio, length, "vertical_slash")
    size = max(size, 64)
    if ratio > 1 and size >= length:
        raise ConfigError(f"vertical_slash: {ratio}x at {length} tokens needs {size} verticals and slashes, the "
                          f"whole prompt: use a longer length or a lower ratio")
    return {"vertical_size": size, "slash_size": size}


def _flexprefill(method: MethodConfig, ratio: float, length: int) -> Dict[str, Any]:
    lengths = sorted(PAPER_FLEXPREFILL)
    ratios = PAPER_RATIOS[:7]
    if not lengths[0] <= length <= lengths[-1]:
        raise ConfigError(
            f"flexprefill: no compression-ratio rule at {length} tokens (the paper measured FlexPrefill at "
            f"{lengths[0]}..{lengths[-1]} only and its density depends on the content): give alpha and min_budget "
            f"instead of a ratio"
        )
    _check_in_table_range("flexprefill", ratio, ratios)

    def at(table_length: int) -> tuple[float, float]:
        points = PAPER_FLEXPREFILL[table_length]
        alpha = _interp_log(ratios, [a for a, _ in points], ratio, log_values=False)
        budget = _interp_log(ratios, [b for _, b in points], ratio, log_values=True)
        return alpha, budget

    low, high, weight = _bracket(lengths, length)
    (a0, b0), (a1, b1) = at(low), at(high)
    alpha = a0 + (a1 - a0) * weight
    budget = math.exp(math.log(b0) + (math.log(b1) - math.log(b0)) * weight)
    return {"alpha": round(alpha, 4), "min_budget": max(64, int(round(budget)))}


_RULES = {
    "dense": _dense,
    "block_sparse": _block_sparse,
    "quest": _quest,
    "snapkv": _snapkv,
    "ada_snapkv": _snapkv,
    "vertical_slash": _vertical_slash,
    "flexprefill": _flexprefill,
}


def register_ratio_rule(method_name: str, rule) -> None:
    """Add the ratio rule of a new method: ``rule(method_config, ratio, length) -> {param: value}``."""
    get_method_class(method_name)  # raises for unknown methods
    _RULES[method_name] = rule


def has_ratio_rule(method: str) -> bool:
    return all(part in _RULES for part in method.split("+"))


# -- table interpolation -------------------------------------------------------------------------------------------
def _check_in_table_range(name: str, ratio: float, ratios: Sequence[float]) -> None:
    lo, hi = min(ratios), max(ratios)
    if not lo - 1e-9 <= ratio <= hi + 1e-9:
        raise ConfigError(f"{name}: ratio {ratio} is outside the paper's measured range {lo:.3g}..{hi:g}x for this "
                          f"method: give its budget parameters explicitly")


def _interp_log(ratios: Sequence[float], values: Sequence[float], ratio: float, log_values: bool) -> float:
    """Piecewise-linear interpolation in log(ratio) (and log(value) when `log_values`); exact at table points."""
    xs = [math.log(r) for r in ratios][::-1]  # ascending
    ys = [math.log(v) if log_values else v for v in values][::-1]
    x = math.log(ratio)
    i = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
    if abs(x - xs[i - 1]) < 1e-9:
        y = ys[i - 1]
    else:
        t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
        y = ys[i - 1] + (ys[i] - ys[i - 1]) * t
    return math.exp(y) if log_values else y


def _bracket(lengths: Sequence[int], length: int) -> tuple[int, int, float]:
    """Neighbouring tabulated lengths and the log-length weight of the upper one."""
    i = min(max(bisect.bisect_left(lengths, length), 1), len(lengths) - 1)
    low, high = lengths[i - 1], lengths[i]
    if length == low:
        return low, low, 0.0
    return low, high, (math.log(length) - math.log(low)) / (math.log(high) - math.log(low))


def _table_size(table: Dict[int, Sequence[int]], ratios: Sequence[float], ratio: float, length: int,
                name: str) -> int:
    _check_in_table_range(name, ratio, ratios)
    lengths = sorted(table)
    if length < lengths[0] or length > lengths[-1]:
        nearest = lengths[0] if length < lengths[0] else lengths[-1]
        return int(round(_interp_log(ratios, table[nearest], ratio, True) * length / nearest))
    low, high, weight = _bracket(lengths, length)
    log_low = math.log(_interp_log(ratios, table[low], ratio, True))
    log_high = math.log(_interp_log(ratios, table[high], ratio, True))
    return int(round(math.exp(log_low + (log_high - log_low) * weight)))


def paper_sweep(method: str, length: int) -> list[tuple[float, Dict[str, Any]]]:
    """The paper's operating points for `method` at a tabulated `length`: [(ratio, params), ...].

    Useful to build sweep grids identical to the study's (`sparse-attn sweep` accepts ``ratios: paper``).
    """
    ratios = PAPER_BLOCK_SPARSE_RATIOS if method == "block_sparse" else PAPER_RATIOS
    if method == "flexprefill":
        ratios = PAPER_RATIOS[:7]
    return [(r, params_for_ratio(method, r, length)) for r in ratios]


def ratio_label(ratio: float) -> str:
    """Compact label: 20 -> '20x', 10/3 -> '3.33x'."""
    frac = Fraction(ratio).limit_denominator(100)
    return f"{float(frac):.3g}x"
