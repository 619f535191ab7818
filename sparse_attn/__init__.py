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

# Transformers integration: registers every method name as an attn_implementation (AttentionInterface + mask) and
# the generate hook, so `import sparse_attn` is all a script needs. Skipped only when transformers is not installed.
try:
    import transformers as _transformers  # noqa: F401
except ImportError:  # pragma: no cover - transformers is a dependency; vLLM-only or config-only installs may lack it
    _transformers = None
if _transformers is not None:
    from .integrations.transformers import (  # noqa: E402
        CompressedKVCache,
        QuestCache,
        SparseCache,
        configure,
        get_stats,
        make_cache,
        method_config,
    )
    from .integrations.transformers import register as register_transformers  # noqa: E402

    register_transformers()
    __all__ += ["configure", "get_stats", "method_config", "make_cache", "SparseCache", "CompressedKVCache",
                "QuestCache", "register_transformers"]
