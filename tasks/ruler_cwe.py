"""`ruler_cwe`: common word extraction from a long numbered word list (reference section 3.3).

Vocabulary: wonderwords' noun, adjective and verb lists (deduplicated, sorted, shuffled with the task seed, words
with "-" removed). Per sample the first `num_common_words` words of a shuffled vocabulary appear
`common_word_frequency` times, as many further words as fit appear `rare_word_frequency` times.
Score: IoU between the numbered words in the `<answer>` block and the common words; no block scores 0.
"""
from __future__ import annotations

import random
import re
from functools import lru_cache
from itertools import accumulate
from typing import Any, Dict, List, Tuple

from .base import Task, TaskConfigError, answer_block, iou
from .prompt import SINGLE_QUESTION, render

TASK_INTRO = ("You will be given a numbered list of words. Your task is to identify the most frequently occurring "
              "words. You should solve this task by carefully reading and analyzing the word list. Do not attempt to "
              "write code or use programming tools to count frequencies. This is a test of your ability to track "
              "word frequencies directly.")
QUESTION = """The list contains exactly {num_common} words that appear {common_freq} times each. All other words appear {rare_freq} times each. The order of words in the list is randomized.
Your task is to identify the {num_common} words that appear {common_freq} times each."""
ANSWER_FORMAT = """1. word_one
2. word_two
...
{num_common}. word_{num_common}

Note: List exactly {num_common} words, one per line, numbered from 1 to {num_common}."""
_NUMBERED = re.compile(r"^\d+[.)\-]?\s*(.+)$")


@lru_cache(maxsize=1)
def wonderwords_vocabulary() -> Tuple[str, ...]:
    """Sorted, deduplicated nouns + adjectives + verbs shipped with the `wonderwords` package (offline)."""
    try:
        from wonderwords import random_word
    except ImportError as error:
        raise ImportError("ruler_cwe needs the `wonderwords` package: pip install 'sparse-attn[tasks]'") from error
    words = []
    for name in ("nounlist.txt", "adjectivelist.txt", "verblist.txt"):
        words += random_word._get_words_from_text_file(name)
    return tuple(sorted(set(words)))


def _numbered(words: List[str]) -> str:
    return "\n".join(f"{i + 1}. {word}" for i, word in enumerate(words))


class RulerCWE(Task):
    """Args: num_common_words (10), common_word_frequency (30), rare_word_frequency (3)."""

    name = "ruler_cwe"
    metric = "iou"
    args = {"num_common_words": 10, "common_word_frequency": 30, "rare_word_frequency": 3}

    def check_params(self):
        for arg in self.args:
            if not isinstance(self.params[arg], int) or self.params[arg] < 1:
                raise TaskConfigError(f"ruler_cwe: {arg} must be an integer >= 1")
        if self.params["common_word_frequency"] <= self.params["rare_word_frequency"]:
            raise TaskConfigError("ruler_cwe: common_word_frequency must be greater than rare_word_frequency")
        words = list(wonderwords_vocabulary())
        random.Random(self.seed).shuffle(words)  # the task-level shuffle of the reference
        self.words = [word for word in words if "-" not in word]
        self._word_cost = dict(zip(self.words, self.counter.count_in_context([" " + w for w in self.words], "1.")))
        self._number_cost: List[int] = [0]  # prefix sums of tokens of "\n{i}." line heads, grown on demand

    def _numbering_cost(self, lines: int) -> int:
        while len(self._number_cost) <= lines:
            start = len(self._number_cost)
            heads = [f"\n{i}." for i in range(start, start + 4096)]
            costs = self.counter.count_in_context(heads, "word")
            self._number_cost += list(accumulate(costs, initial=self._number_cost[-1]))[1:]
        return self._number_cost[lines]

    def _render(self, context: str) -> str:
        p = self.params
        question = QUESTION.format(num_common=p["num_common_words"], common_freq=p["common_word_frequency"],
                                   rare_freq=p["rare_word_frequency"])
        return render(SINGLE_QUESTION, task_intro=TASK_INTRO, context=context, question=question,
                      answer_format=ANSWER_FORMAT.format(num_common=p["num_common_words"]), extra_instructions="")

    def build(self, rng, budget: int, index: int) -> Tuple[str, str, Dict[str, Any]]:
        p = self.params
        words = self.words.copy()
        rng.shuffle(words)
        common, rare = words[:p["num_common_words"]], words[p["num_common_words"]:]
        fixed = self.counter.count(self._render(""))
        common_cost = p["common_word_frequency"] * sum(self._word_cost[w] for w in common)
        rare_prefix = list(accumulate((self._word_cost[w] for w in rare), initial=0))

        def cost(num_rare: int) -> int:  # additive estimate of the whole prompt; exact check in generate_sample
            lines = p["num_common_words"] * p["common_word_frequency"] + num_rare * p["rare_word_frequency"]
            return fixed + self._numbering_cost(lines) + common_cost + p["rare_word_frequency"] * rare_prefix[num_rare]

        # largest number of rare words whose prompt fits (binary search over an O(1) cost)
        low, high = 0, len(rare)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if cost(mid) <= budget else (low, mid - 1)
        if low == 0:
            raise TaskConfigError(f"ruler_cwe: the common words alone fill the {budget}-token budget; use a larger "
                                  "length or lower common_word_frequency / num_common_words")
        final = common * p["common_word_frequency"] + rare[:low] * p["rare_word_frequency"]
        rng.shuffle(final)
        gold = "\n".join(f"{i + 1}. {w.lower()}" for i, w in enumerate(common))
        extra = {"common_words": [w.lower() for w in common], "num_total_words": len(final),
                 "common_frequency": p["common_word_frequency"], "rare_frequency": p["rare_word_frequency"]}
        return self._render(_numbered(final)), gold, extra

    def too_short_hint(self, length: int) -> str:
        return (f"the vocabulary ({len(self.words)} words) may be exhausted at this length; lower "
                "rare_word_frequency or raise common_word_frequency")

    @classmethod
    def score(cls, prediction: str, sample: Dict[str, Any]) -> float:
        block = answer_block(prediction)
        if block is None:
            return 0.0
        predicted = set()
        for line in block.strip().split("\n"):
            match = _NUMBERED.match(line.strip())
            if match and match.group(1).strip():
                predicted.add(match.group(1).strip().lower())
        return iou(predicted, set(sample["common_words"]), both_empty=0.0)
