"""Ratio helpers: the paper's sweep table (reference-system.md 5.1) and the failure messages."""
import pytest

from sparse_attn import ConfigError, Dense, build_config
from sparse_attn.compression import (
    PAPER_BLOCK_SPARSE, PAPER_BLOCK_SPARSE_RATIOS, PAPER_FLEXPREFILL, PAPER_RATIOS, PAPER_VERTICAL_SLASH,
    analytic_density, block_sparse_density, config_for_ratio, params_for_ratio, paper_sweep,
)

# Paper v1 Table 6 lists printed in full (16K) or by their ends (32K, 64K).
QUEST_16K = [816, 1088, 1632, 2176, 3280, 4912, 6560, 8192, 9824, 11472]
SNAPKV_ENDS = {16384: (819, 11468), 32768: (1638, 22937), 65536: (3276, 45875)}
QUEST_ENDS = {16384: (816, 11472), 32768: (1632, 22944), 65536: (3280, 45872)}


@pytest.mark.parametrize("length", sorted(PAPER_BLOCK_SPARSE))
def test_block_sparse_reproduces_paper(length):
    got = [params_for_ratio("block_sparse", r, length)["top_chunks"] for r in PAPER_BLOCK_SPARSE_RATIOS]
    assert got == list(PAPER_BLOCK_SPARSE[length])
    # and the analytic density of those values is within 1% of the target (the paper's "exactly 20x ... 2x")
    for ratio, top in zip(PAPER_BLOCK_SPARSE_RATIOS, got):
        assert 1 / block_sparse_density(length, 16, top) == pytest.approx(ratio, rel=0.01)


def test_quest_reproduces_paper_16k():
    assert [params_for_ratio("quest", r, 16384)["token_budget"] for r in PAPER_RATIOS] == QUEST_16K


@pytest.mark.parametrize("length", sorted(QUEST_ENDS))
def test_quest_and_snapkv_ends_reproduce_paper(length):
    quest = [params_for_ratio("quest", r, length)["token_budget"] for r in PAPER_RATIOS]
    snap = [params_for_ratio("snapkv", r, length)["token_capacity"] for r in PAPER_RATIOS]
    ada = [params_for_ratio("ada_snapkv", r, length)["token_capacity"] for r in PAPER_RATIOS]
    assert (quest[0], quest[-1]) == QUEST_ENDS[length]
    assert (snap[0], snap[-1]) == SNAPKV_ENDS[length]
    assert ada == snap
    assert all(b % 16 == 0 for b in quest) and quest == sorted(quest)


@pytest.mark.parametrize("length", sorted(PAPER_VERTICAL_SLASH))
def test_vertical_slash_exact_at_table_points(length):
    got = [params_for_ratio("vertical_slash", r, length) for r in PAPER_RATIOS]
    assert [p["vertical_size"] for p in got] == list(PAPER_VERTICAL_SLASH[length])
    assert all(p["vertical_size"] == p["slash_size"] for p in got)


def test_vertical_slash_interpolates_monotonically():
    # between tabulated ratios and lengths: sizes fall as the ratio grows and grow with the length
    sizes = [params_for_ratio("vertical_slash", r, 24000)["vertical_size"] for r in (2, 3, 4, 6, 8, 12)]
    assert sizes == sorted(sizes, reverse=True)
    low, mid, high = (params_for_ratio("vertical_slash", 6, L)["vertical_size"] for L in (16384, 24000, 32768))
    assert low < mid < high
    # outside the table the nearest length's size scales with L (constant density), floored at 64 diagonals
    assert params_for_ratio("vertical_slash", 2, 8192)["vertical_size"] == 1024 // 2
    assert params_for_ratio("vertical_slash", 20, 1024)["slash_size"] == 64


@pytest.mark.parametrize("length", sorted(PAPER_FLEXPREFILL))
def test_flexprefill_exact_at_table_points(length):
    got = [params_for_ratio("flexprefill", r, length) for r in PAPER_RATIOS[:7]]
    assert [(p["alpha"], p["min_budget"]) for p in got] == list(PAPER_FLEXPREFILL[length])


def test_flexprefill_outside_measured_lengths_raises():
    with pytest.raises(ConfigError, match="alpha and min_budget"):
        params_for_ratio("flexprefill", 5, 8192)


def test_composition_gets_both_parts_at_the_same_ratio():
    params = params_for_ratio("vertical_slash+quest", 10, 16384)
    assert params == {"vertical_size": 315, "slash_size": 315, "token_budget": 1632, "page_size": 16}
    config = config_for_ratio("block_sparse+snapkv", 5, 16384, chunk_size=32, local_window=64)
    assert config.prefill.chunk_size == 32 and config.decode.local_window == 64
    assert config.decode.token_capacity == 3276


def test_fixed_non_budget_parameters_change_the_rule():
    assert params_for_ratio("quest", 10, 16384, page_size=32)["token_budget"] == 1632  # 51 pages of 32
    assert params_for_ratio("quest", 10, 16384, page_size=64)["token_budget"] == 1664  # 25.6 -> 26 pages
    assert params_for_ratio("block_sparse", 10, 16384, chunk_size=64)["top_chunks"] < 53


@pytest.mark.parametrize("method,ratio,length,fixed,match", [
    ("quest", 0.5, 16384, {}, "ratio must be a number >= 1"),
    ("dense", 4, 16384, {}, "dense: compression ratio must be 1"),
    ("quest", 20, 100, {}, "less than one page"),
    ("quest", 1.2, 64, {}, "not reachable"),
    ("snapkv", 10, 1000, {}, "local_window \\+ prefix_tokens = 132"),
    ("block_sparse", 20, 256, {}, "below the minimum 3"),
    ("vertical_slash", 40, 16384, {}, "outside the paper's measured range"),
    ("quest", 10, 16384, {"token_budget": 512}, "either the ratio or"),
    ("quest", 10, 16384, {"chunk_size": 16}, "unknown"),
    ("nope", 10, 16384, {}, "unknown method"),
])
def test_impossible_requests_raise_naming_the_fix(method, ratio, length, fixed, match):
    with pytest.raises(ConfigError, match=match):
        params_for_ratio(method, ratio, length, **fixed)


def test_analytic_density():
    assert analytic_density(Dense(), 100) == 1.0
    quest = build_config("quest", token_budget=1024).decode
    assert analytic_density(quest, 16384) == pytest.approx((1024 + 16) / 16384)
    snap = build_config("snapkv", token_capacity=819).decode
    assert analytic_density(snap, 16384) == pytest.approx(819 / 16384)
    assert analytic_density(build_config("vertical_slash").prefill, 16384) is None  # content-dependent


def test_paper_sweep_lists_the_operating_points():
    points = paper_sweep("block_sparse", 32768)
    assert [p["top_chunks"] for _, p in points] == list(PAPER_BLOCK_SPARSE[32768])
