"""The test matrix: one entry per method. Adding a method adds one entry here.

`full` parameters make the method keep everything for prompts up to `FULL_BUDGET_MAX_LEN` tokens (so its output
must equal dense attention); `small` parameters make it drop most of a ~300-token prompt (so the method must
visibly act). Kept small so CPU tests stay fast.
"""
FULL_BUDGET_MAX_LEN = 2048

METHODS = {
    "dense": {"full": {}, "small": {}},
    "vertical_slash": {
        "full": {"vertical_size": 4096, "slash_size": 4096, "approximation_size": 64},
        "small": {"vertical_size": 8, "slash_size": 64, "approximation_size": 32},
    },
    "block_sparse": {
        "full": {"chunk_size": 16, "top_chunks": 512},
        "small": {"chunk_size": 16, "top_chunks": 3},
    },
    "flexprefill": {
        "full": {"alpha": 1.0, "approximation_size": 64, "min_budget": 4096},
        "small": {"alpha": 0.1, "approximation_size": 32, "min_budget": 64},
    },
    "snapkv": {
        "full": {"token_capacity": 4096, "approximation_window": 16, "kernel_size": 5, "local_window": 8,
                 "prefix_tokens": 4},
        "small": {"token_capacity": 48, "approximation_window": 16, "kernel_size": 5, "local_window": 8,
                  "prefix_tokens": 4},
    },
    "ada_snapkv": {
        "full": {"token_capacity": 4096, "approximation_window": 16, "kernel_size": 5, "local_window": 8,
                 "prefix_tokens": 4, "min_head_capacity_ratio": 0.2},
        "small": {"token_capacity": 48, "approximation_window": 16, "kernel_size": 5, "local_window": 8,
                  "prefix_tokens": 4, "min_head_capacity_ratio": 0.2},
    },
    "quest": {
        "full": {"token_budget": 4096, "page_size": 16, "share_pages": True},
        "small": {"token_budget": 32, "page_size": 16, "share_pages": True},
    },
}

PREFILL_METHODS = ["vertical_slash", "block_sparse", "flexprefill"]
DECODE_METHODS = ["snapkv", "ada_snapkv", "quest"]
