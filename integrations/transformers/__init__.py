"""Transformers-native integration: every sparse_attn method is an `attn_implementation`.

    import sparse_attn
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="flexprefill")   # or "snapkv",
    sparse_attn.configure(model, alpha=0.9)                                                 # "vertical_slash+quest"...
    out = model.generate(**tokenizer(prompts, return_tensors="pt", padding=True))
    sparse_attn.get_stats(model)   # {"sparsity": ..., "per_layer": [...], "prefill": ..., "decode": ...}

`register()` (idempotent) registers, for every name of `sparse_attn.composition_names()`, an attention function
(`AttentionInterface`) and our padding-mask function (`AttentionMaskInterface`, without which transformers silently
drops the padding mask of custom names), and installs the generate hook that creates the sparse KV cache for
snapkv / ada_snapkv / quest models. It runs on `import sparse_attn`, and on `import transformers` through the
autoload hook (`sparse_attn_autoload.py`), so `lm_eval --model hf --model_args attn_implementation=...` works.

Parameters from strings (CLIs): the environment variable `SPARSE_ATTN_CONFIG` (JSON object or JSON file path), and
`model.config.sparse_attn` (see `settings.py`).
"""
# `register` is defined before anything imports transformers: importing transformers.modeling_utils fires the autoload
# hook, which calls `register` on this (then half-imported) package; `_IMPORTING` makes that call wait for the end of
# this file, where `register()` runs for real.
_IMPORTING = True
_REGISTERED = False


def register() -> None:
    """Register every sparse_attn method name with transformers (idempotent)."""
    global _REGISTERED
    if _REGISTERED or _IMPORTING:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from ...registry import composition_names
    from . import generate_hook
    from .attention import make_attention_function
    from .layout import padding_mask

    for name in composition_names():
        if name in ("sdpa", "eager") or "/" in name or ":" in name:
            raise ValueError(f"method name {name!r} cannot be an attn_implementation (reserved or hub-kernel syntax)")
        AttentionInterface.register(name, make_attention_function(name))
        AttentionMaskInterface.register(name, padding_mask)
    generate_hook.install()
    _REGISTERED = True


from .cache import CompressedKVCache, QuestCache, SparseCache, make_cache  # noqa: E402
from .settings import ENV_VAR, configure, method_config  # noqa: E402
from .stats import get_stats  # noqa: E402

__all__ = ["register", "configure", "get_stats", "method_config", "make_cache", "SparseCache", "CompressedKVCache",
           "QuestCache", "ENV_VAR"]

_IMPORTING = False
register()
