"""`story_multihop`: the item acquired just before a given item (reference section 3.5).

A target chapter is drawn among purchase chapters except the first; the gold answer is the item bought in the most
recent earlier purchase chapter. Score: exact match of the normalised `<answer>` content.
Reference bug fixed: a prediction without an `<answer>` block scores 0 (the reference skipped it, inflating scores).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

from .base import Task, TaskConfigError, answer_block
from .prompt import SINGLE_QUESTION, render
from .story.narrative import compile_narrative, generate_narrative
from .story.templates import TASK_INTRO
from .story_retrieval import normalize_story_answer

QUESTION = "What was the last item that the protagonist acquired before acquiring {item}?"
ANSWER_FORMAT = "ITEM_NAME"
EXTRA_INSTRUCTIONS = """- Provide only the item name in the answer section.
- Do not include articles like 'the' or 'a' in your answer.
- The item name must be exactly as mentioned in the text."""


def _render(context: str, item: str) -> str:
    return render(SINGLE_QUESTION, task_intro=TASK_INTRO, context=context, question=QUESTION.format(item=item),
                  answer_format=ANSWER_FORMAT, extra_instructions=EXTRA_INSTRUCTIONS)


class StoryMultiHop(Task):
    """Args: protagonist_name (default "Arion")."""

    name = "story_multihop"
    metric = "accuracy"
    args = {"protagonist_name": "Arion"}

    def build(self, rng, budget: int, index: int) -> Tuple[str, str, Dict[str, Any]]:
        reserved = self.counter.count(_render("", "item_component_1 item_component_2 item_component_3"))
        chapters = generate_narrative(self.counter, budget - reserved, rng, self.params["protagonist_name"])
        buying = [c for c in chapters if c.bought]
        if len(buying) < 2:
            raise TaskConfigError("story_multihop: fewer than two purchase chapters fit; use a larger length")
        target = rng.choice(buying[1:])
        previous = [c for c in buying if c.chapter_id < target.chapter_id][-1]
        extra = {"target_item": target.bought[0], "target_chapter": target.chapter_id,
                 "answer_chapter": previous.chapter_id, "num_chapters": len(chapters)}
        return _render(compile_narrative(chapters), target.bought[0]), previous.bought[0], extra

    @classmethod
    def score(cls, prediction: str, sample: Dict[str, Any]) -> float:
        block = answer_block(prediction)
        if block is None:
            return 0.0
        predicted = normalize_story_answer(block)
        return 1.0 if predicted and predicted == normalize_story_answer(sample["gold_answer"]) else 0.0
