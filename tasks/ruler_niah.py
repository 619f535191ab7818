"""`ruler_niah`: multi-key needle retrieval among distractor key-value pairs (RULER-style, reference section 3.1).

Needles and distractors are sentences "The value for key {key} is: {value}." with keys and values of the form
`xxxxxxxx-xxxxxxxx-xxxxxxxx-xxxxxxxx` ([a-z0-9]), unique within a sample. The haystack is only distractor pairs.
Score: per sample, the fraction of the `num_queries` keys whose numbered answer line has the right key and value.
"""
from __future__ import annotations

import re
import string
from typing import Any, Dict, List, Tuple

from .base import Task, TaskConfigError, answer_block
from .prompt import MULTIPLE_QUESTIONS, render

TASK_INTRO = ("I will provide you with a document containing multiple key-value pairs. Your task is to extract "
              "specific values associated with given keys.")
ANSWER_FORMAT = """1. The answer for <key1> is <value1>.
2. The answer for <key2> is <value2>.
etc."""
EXTRA_INSTRUCTIONS = """- Provide answers in the exact order of the requested keys
- Each answer must follow the format: "<number>. The answer for <key> is <value>."
- Ensure exact key matches - do not modify or paraphrase the keys
- Values must match exactly as they appear in the document"""
_ALPHABET = string.ascii_lowercase + string.digits
_ANSWER_LINE = re.compile(r"(\d+)\.\s*The answer for\s+([\w-]+)\s+is:?\s+(.+?)(?:\.|$)", re.IGNORECASE | re.MULTILINE)


def _unique_id(rng, used: set) -> str:
    while True:
        candidate = "-".join("".join(rng.choices(_ALPHABET, k=8)) for _ in range(4))
        if candidate not in used:
            used.add(candidate)
            return candidate


def _sentence(key: str, value: str) -> str:
    return f"The value for key {key} is: {value}."


def _render(sentences: List[str], keys: List[str]) -> str:
    return render(MULTIPLE_QUESTIONS, task_intro=TASK_INTRO, context=" ".join(sentences),
                  question=f"Extract the values for the following keys: {', '.join(keys)}",
                  answer_format=ANSWER_FORMAT, extra_instructions=EXTRA_INSTRUCTIONS)


def _normalize_value(text: str) -> str:
    text = re.sub(r"\s+", " ", text.lower().strip())
    return re.sub(r"\bis:\s+", "is ", text)


class RulerNIAH(Task):
    """Args: num_queries (default 4): needles asked for."""

    name = "ruler_niah"
    metric = "accuracy"
    args = {"num_queries": 4}

    def check_params(self):
        if not isinstance(self.params["num_queries"], int) or self.params["num_queries"] < 1:
            raise TaskConfigError("ruler_niah: num_queries must be an integer >= 1")

    def build(self, rng, budget: int, index: int) -> Tuple[str, str, Dict[str, Any]]:
        used_keys, used_values = set(), set()
        needles = [(_unique_id(rng, used_keys), _unique_id(rng, used_values))
                   for _ in range(self.params["num_queries"])]
        keys = [key for key, _ in needles]
        queries = [_sentence(k, v) for k, v in needles]
        rng.shuffle(queries)
        room = budget - self.counter.count(_render(queries, keys))
        if room < 0:
            raise TaskConfigError(f"ruler_niah: the needles alone need {budget - room} tokens > budget {budget}")
        distractors: List[str] = []
        while True:  # draw distractors in batches and count them in one tokenizer call
            batch = [_sentence(_unique_id(rng, used_keys), _unique_id(rng, used_values)) for _ in range(256)]
            full = False
            for sentence, cost in zip(batch, self.counter.count_in_context([" " + b for b in batch], ".")):
                if cost > room:
                    full = True
                    break
                distractors.append(sentence)
                room -= cost
            if full:
                break
        sentences = queries + distractors
        rng.shuffle(sentences)
        gold = "\n".join(f"{i + 1}. The answer for {k} is {v}." for i, (k, v) in enumerate(needles))
        return _render(sentences, keys), gold, {"answers": [[k, v] for k, v in needles]}

    @classmethod
    def score(cls, prediction: str, sample: Dict[str, Any]) -> float:
        block = answer_block(prediction)
        text = block if block is not None else (prediction or "")
        predicted: Dict[int, Tuple[str, str]] = {}
        for match in _ANSWER_LINE.finditer(text):
            predicted.setdefault(int(match.group(1)), (match.group(2).strip(), _normalize_value(match.group(3))))
        answers = sample["answers"]
        correct = sum(1 for i, (key, value) in enumerate(answers, start=1)
                      if predicted.get(i) == (key, _normalize_value(value)))
        return correct / len(answers) if answers else 0.0
