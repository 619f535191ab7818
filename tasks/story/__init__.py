"""Procedural narratives for the story tasks (`story_retrieval`, `story_multihop`, `story_filtering`)."""
from .narrative import Chapter, generate_narrative

__all__ = ["Chapter", "generate_narrative"]
