"""The seven methods. Each file holds one method's config (and its PyTorch reference logic)."""
from .ada_snapkv import AdaSnapKV
from .block_sparse import BlockSparse
from .dense import Dense
from .flexprefill import FlexPrefill
from .quest import Quest
from .snapkv import SnapKV
from .vertical_slash import VerticalSlash

__all__ = ["Dense", "VerticalSlash", "BlockSparse", "FlexPrefill", "SnapKV", "AdaSnapKV", "Quest"]
