"""Method configs, validation, registry and composition (no tensors)."""
import json

import pytest

import sparse_attn
from sparse_attn import ConfigError, build_config, build_method, list_methods

from .method_matrix import METHODS

# Reference defaults (../shared/spec/reference-system.md section 1, the configs/attention/*.yaml values).
REFERENCE_DEFAULTS = {
    "dense": {},
    "vertical_slash": {"vertical_size": 512, "slash_size": 512, "approximation_size": 256},
    "block_sparse": {"chunk_size": 16, "top_chunks": 64},
    "flexprefill": {"alpha": 0.65, "approximation_size": 512, "min_budget": 512},
    "snapkv": {"token_capacity": 1024, "approximation_window": 256, "kernel_size": 21, "local_window": 128,
               "prefix_tokens": 4},
    "ada_snapkv": {"token_capacity": 1024, "approximation_window": 256, "kernel_size": 21, "local_window": 128,
                   "prefix_tokens": 4, "min_head_capacity_ratio": 0.2},
    "quest": {"token_budget": 1024, "page_size": 16, "share_pages": True},
}


def test_list_methods_returns_the_seven_names():
    assert list_methods() == ["dense", "vertical_slash", "block_sparse", "flexprefill", "snapkv", "ada_snapkv",
                              "quest"]


def test_every_method_has_a_test_matrix_entry():
    assert sorted(METHODS) == sorted(list_methods())


@pytest.mark.parametrize("name", list(REFERENCE_DEFAULTS))
def test_defaults_match_the_reference_system(name):
    assert build_method(name).to_dict() == REFERENCE_DEFAULTS[name]


@pytest.mark.parametrize("name", list(METHODS))
def test_test_matrix_parameters_are_valid(name):
    for budget in ("full", "small"):
        assert build_method(name, **METHODS[name][budget]).to_dict().items() >= METHODS[name][budget].items()


@pytest.mark.parametrize(
    "name, params, fragment",
    [
        ("snapkv", {"token_capacity": 100}, "token_capacity=100 must exceed local_window + prefix_tokens = 132"),
        ("ada_snapkv", {"token_capacity": 132}, "token_capacity"),
        ("snapkv", {"kernel_size": 4}, "kernel_size=4 must be odd"),
        ("quest", {"token_budget": 1000}, "token_budget=1000 must be a multiple of page_size=16: use 992 or 1008"),
        ("quest", {"token_budget": 8}, "quest.token_budget=8 is too small"),
        ("quest", {"share_pages": "yes"}, "share_pages"),
        ("vertical_slash", {"slash_size": 32}, "slash_size=32 is too small: set it to at least 64"),
        ("vertical_slash", {"vertical_size": 2}, "vertical_size=2 is too small"),
        ("block_sparse", {"top_chunks": 2}, "top_chunks=2 is too small"),
        ("block_sparse", {"chunk_size": 24}, "chunk_size=24 must be a power of two"),
        ("flexprefill", {"alpha": 1.5}, "alpha=1.5 must be a number in [0.0, 1.0]"),
        ("ada_snapkv", {"min_head_capacity_ratio": -0.1}, "min_head_capacity_ratio"),
        ("vertical_slash", {"vertical_size": 512.0}, "vertical_size must be an integer"),
    ],
)
def test_invalid_parameters_raise_errors_naming_the_parameter(name, params, fragment):
    with pytest.raises(ConfigError) as error:
        build_method(name, **params)
    assert fragment in str(error.value)


def test_unknown_parameter_names_raise_and_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['budget'\].*token_budget"):
        build_method("quest", budget=10)
    with pytest.raises(ConfigError, match="unknown method 'quests'"):
        build_method("quests")


def test_composition_routes_parameters_to_their_part():
    config = build_config("vertical_slash+quest", vertical_size=256, token_budget=2048)
    assert config.name == "vertical_slash+quest"
    assert config.prefill.vertical_size == 256 and config.decode.token_budget == 2048
    assert config.prefill.slash_size == 512 and config.decode.page_size == 16
    # the flat dict form round-trips (this is what vLLM's additional_config and the env JSON carry)
    assert build_config(config.to_dict()) == config
    assert build_config(json.dumps(config.to_dict())) == config
    # "part.param" disambiguates explicitly
    assert build_config("flexprefill+snapkv", **{"snapkv.token_capacity": 512}).decode.token_capacity == 512


def test_composition_rejects_two_methods_of_the_same_phase_and_unknown_parameters():
    with pytest.raises(ConfigError, match="cannot be the prefill part"):
        build_config("quest+snapkv")
    with pytest.raises(ConfigError, match="cannot be the decode part"):
        build_config("vertical_slash+block_sparse")
    with pytest.raises(ConfigError, match="'chunk_size' is unknown"):
        build_config("vertical_slash+quest", chunk_size=32)
    with pytest.raises(ConfigError, match="does not compose"):
        build_config("dense+quest")


def test_nested_spec_and_single_methods():
    nested = build_config({"prefill": {"method": "block_sparse", "top_chunks": 8},
                           "decode": {"method": "ada_snapkv", "token_capacity": 512}})
    assert nested.name == "block_sparse+ada_snapkv"
    assert nested.prefill.top_chunks == 8 and nested.decode.token_capacity == 512
    assert build_config("snapkv").prefill is None and build_config("snapkv").decode.name == "snapkv"
    assert build_config("dense").methods == [] and build_config(None).name == "dense"
    assert build_config(sparse_attn.Quest(token_budget=64)).decode.token_budget == 64


def test_composition_names_cover_every_pair():
    names = sparse_attn.composition_names()
    assert set(list_methods()) <= set(names)
    assert "vertical_slash+quest" in names and "flexprefill+ada_snapkv" in names
    assert len(names) == 7 + 3 * 3


def test_replace_validates():
    quest = build_method("quest")
    assert quest.replace(token_budget=2048).token_budget == 2048
    with pytest.raises(ConfigError):
        quest.replace(token_budget=2047)
