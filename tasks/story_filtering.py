"""`story_filtering`: find the chapters without a purchase (reference section 3.5).

`chapters_in_question` random chapters lose their purchase sentence. Score: IoU of the chapter ids in `<answer>`
("Chapter N" mentions if any, else all integers) with the gold ids.
Reference bugs fixed: (1) a later chapter could still sell an item whose purchase was deleted; those sale sentences
are deleted too, so the story stays consistent; (2) empty predictions were skipped; they now score 0.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Tuple

from .base import Task, TaskConfigError, answer_block, iou
from .prompt import SINGLE_QUESTION, render
from .story.narrative import Narrative
from .story.templates import TASK_INTRO

QUESTION = """Identify all chapters where the protagonist did not buy any item.
Note: There are exactly {n} chapters without any purchases."""
ANSWER_FORMAT = "chapter_id_1, chapter_id_2, ..."
EXTRA_INSTRUCTIONS = "- In the answer section, provide only the chapter IDs separated by commas."


def _render(context: str, n: int) -> str:
    return render(SINGLE_QUESTION, task_intro=TASK_INTRO, context=context, question=QUESTION.format(n=n),
                  answer_format=ANSWER_FORMAT, extra_instructions=EXTRA_INSTRUCTIONS)


def chapter_ids(text: str) -> set:
    mentions = re.findall(r"Chapter\s+(\d+)", text, re.IGNORECASE)
    if mentions:
        return {int(m) for m in mentions}
    return {int(m) for m in re.findall(r"\d+", text)}


class StoryFiltering(Task):
    """Args: chapters_in_question (default 3), protagonist_name (default "Arion")."""

    name = "story_filtering"
    metric = "iou"
    args = {"chapters_in_question": 3, "protagonist_name": "Arion"}

    def check_params(self):
        if not isinstance(self.params["chapters_in_question"], int) or self.params["chapters_in_question"] < 1:
            raise TaskConfigError("story_filtering: chapters_in_question must be an integer >= 1")

    def build(self, rng, budget: int, index: int) -> Tuple[str, str, Dict[str, Any]]:
        n = self.params["chapters_in_question"]
        reserved = self.counter.count(_render("", 1))
        story = Narrative(self.counter, rng, self.params["protagonist_name"]).extend(budget - reserved)
        if len(story.chapters) < n:
            raise TaskConfigError(f"story_filtering: only {len(story.chapters)} chapters fit; use a larger length")
        chosen = sorted(rng.sample(range(1, len(story.chapters) + 1), n))
        never_bought = set()
        for chapter in story.chapters:
            if chapter.chapter_id in chosen:
                never_bought.update(chapter.remove_purchases())
            chapter.remove_sales_of(never_bought)
        story.inventory = [item for item in story.inventory if item not in never_bought]
        story.extend(budget - reserved)  # refill the room freed by the deleted sentences (new chapters all buy)
        extra = {"chapters": chosen, "num_chapters": len(story.chapters)}
        return _render(story.text(), n), ", ".join(map(str, chosen)), extra

    @classmethod
    def score(cls, prediction: str, sample: Dict[str, Any]) -> float:
        block = answer_block(prediction)
        predicted = chapter_ids(block) if block is not None else set()
        return iou(predicted, set(sample["chapters"]), both_empty=0.0)
