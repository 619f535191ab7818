"""sparse-attn: training-free sparse attention as a one-line switch for Transformers and vLLM.

    import sparse_attn
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="flexprefill")
    sparse_attn.configure(model, alpha=0.9)
    model.generate(...)
    sparse_attn.get_stats(model)   # {"sparsity": ..., "per_layer": [...]}
"""
__version__ = "0.1.0"

from .config import Composition, ConfigError, MethodConfig  # noqa: E402
from .methods import AdaSnapKV, BlockSparse, Dense, FlexPrefill, Quest, SnapKV, VerticalSlash  # noqa: E402
from .registry import (  # noqa: E402
    build_config,
    build_method,
    composition_names,
    get_method_class,
    list_methods,
    register_method,
)

__all__ = [
    "__version__", "Composition", "ConfigError", "MethodConfig",
    "Dense", "VerticalSlash", "BlockSparse", "FlexPrefill", "SnapKV", "AdaSnapKV", "Quest",
    "build_config", "build_method", "composition_names", "get_method_class", "list_methods", "register_method",
]

# The Transformers integration (configure, get_stats and the attn_implementation registration) is added here by
# sparse_attn.integrations.transformers; it is imported lazily so `import sparse_attn` stays cheap when only
# configs are needed.
