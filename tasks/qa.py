"""`qa_squad`, `qa_toefl`, `qa_quality`: a question about one document among distractor documents (section 3.4).

The gold document is packed with whole distractor documents (drawn from contexts that have questions) and a
word-level prefix of one more, shuffled; the question names the gold document's number. Questions are pre-filtered
so their prompt with only their own document fits `min(question_pool_tokens, target)` tokens (reference: 8172), so
every target >= 8172 uses the same question list, in the same (seed-shuffled) order: sample i is question i.

Scores: MCQ (toefl, quality) exact match of the sorted option letters in `<answer>`; open-ended (squad) token-set F1
rounded to 2 decimals, max over gold answers. No `<answer>` block scores 0.
Reference bug fixed: MCQ normalisation kept every A-D character of the answer text ("B. Because Anna ..." became
"AB"); we read option letters only (a bare letter list, or letters used as option markers).
"""
from __future__ import annotations

import re
import string
import weakref
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

from .base import Task, TaskConfigError, answer_block
from .prompt import SINGLE_QUESTION, render
from .qa_sources import QASource, load_qa_source

TASK_INTRO = "I will provide you with multiple documents and ask you a question about one specific document."
OPEN_ENDED_FORMAT = "Your answer here..."
MCQ_FORMAT = "Only the letter(s) of the correct option(s) (e.g., 'A' or 'AB')."
OPEN_ENDED_INSTRUCTIONS = """- Do not use complete sentences in the answer.
- For dates: Include ONLY the COMPLETE date if specifically asked.
- For locations: Use the shortest unambiguous form (e.g., 'New York' not 'New York City').
- For comparisons: State ONLY the answer that matches the criteria"""
MCQ_INSTRUCTIONS = "- Multiple correct options are possible (e.g., 'AB' is valid)."
SAFETY_TOKENS_FOR_PACKING = 25  # kept free when adding the partial document
REFERENCE_POOL_TOKENS = 8172  # 8192 - 20: questions whose single-document prompt fits are usable at every length


def format_prompt(context: str, question: str, is_mcq: bool, target_doc: int) -> str:
    return render(SINGLE_QUESTION, task_intro=TASK_INTRO, context=context,
                  question=f"Question about document {target_doc}:\n{question}",
                  answer_format=MCQ_FORMAT if is_mcq else OPEN_ENDED_FORMAT,
                  extra_instructions=MCQ_INSTRUCTIONS if is_mcq else OPEN_ENDED_INSTRUCTIONS)


# token costs of a source's questions and contexts, per tokenizer (tasks at several lengths / seeds share them)
_COSTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@lru_cache(maxsize=8)
def _cached_source(name: str, data_path: Optional[str]) -> QASource:
    return load_qa_source(name, data_path)


class QATask(Task):
    """Args: data_path (local file overriding the default source), question_pool_tokens (default 8172)."""

    metric = "accuracy"
    dataset_name = ""
    args = {"data_path": None, "question_pool_tokens": REFERENCE_POOL_TOKENS}

    def check_params(self):
        if not isinstance(self.params["question_pool_tokens"], int) or self.params["question_pool_tokens"] < 256:
            raise TaskConfigError(f"{self.name}: question_pool_tokens must be an integer >= 256")
        self.source = _cached_source(self.dataset_name, self.params["data_path"])
        self._pools: Dict[int, Tuple[list, list]] = {}
        self._costs = None

    def _question_costs(self):
        """Per question: tokens of its prompt with only its own document; per context: tokens it adds."""
        if self._costs is None:
            per_tokenizer = _COSTS.setdefault(self.counter.tokenizer, {})
            key = (self.dataset_name, self.params["data_path"], self.source.origin)
            if key in per_tokenizer:
                self._costs = per_tokenizer[key]
                return self._costs
            source = self.source
            context_cost = [c + 3 for c in self.counter.count_many([f"\n\nDocument XX:\n{c}" for c in source.contexts])]
            empty = [format_prompt("", question, source.is_mcq, 2137) for _, question, _ in source.questions]
            question_cost = [cost + context_cost[ctx] for cost, (ctx, _, _) in
                             zip(self.counter.count_many(empty), source.questions)]
            self._costs = per_tokenizer[key] = (context_cost, question_cost)
        return self._costs

    def pool(self, length: int) -> Tuple[List[int], List[int]]:
        """(question ids in sample order, context ids of the distractor pool) usable at target `length`."""
        limit = min(self.params["question_pool_tokens"], length) - self.counter.template_overhead
        if limit not in self._pools:
            import random

            context_cost, question_cost = self._question_costs()
            kept = [q for q, cost in enumerate(question_cost) if cost <= limit]
            contexts = sorted({self.source.questions[q][0] for q in kept})
            random.Random(self.seed).shuffle(kept)  # the task-level shuffle of the reference
            self._pools[limit] = (kept, contexts)
        return self._pools[limit]

    def generate_sample(self, length: int, index: int) -> Dict[str, Any]:
        self._length = int(length)  # build() needs the pool of this target length
        return super().generate_sample(length, index)

    def build(self, rng, budget: int, index: int) -> Tuple[str, Any, Dict[str, Any]]:
        questions, pool = self.pool(self._length)
        if index >= len(questions):
            raise TaskConfigError(
                f"{self.name}: sample {index} requested but only {len(questions)} questions of {self.source.origin} "
                f"fit a {self._length}-token prompt with their own document for tokenizer {self.counter.name}; "
                "ask for fewer samples or a larger length")
        context_cost, question_cost = self._question_costs()
        own, question, answer = self.source.questions[questions[index]]
        used = question_cost[questions[index]]
        others = [c for c in pool if c != own]
        rng.shuffle(others)
        selected, leftover = [], []
        for c in others:
            if used + context_cost[c] < budget:
                selected.append(self.source.contexts[c])
                used += context_cost[c]
            else:
                leftover.append(c)
        room = budget - used - SAFETY_TOKENS_FOR_PACKING
        if room > 0 and leftover:
            prefix = self._prefix(self.source.contexts[leftover[0]], room)
            if prefix:
                selected.append(prefix)
        documents = selected + [self.source.contexts[own]]
        rng.shuffle(documents)
        target_doc = documents.index(self.source.contexts[own]) + 1
        context = "\n\n".join(f"Document {i + 1}:\n{doc}" for i, doc in enumerate(documents))
        extra = {"question": question, "dataset": self.dataset_name, "is_mcq": self.source.is_mcq,
                 "num_documents": len(documents), "target_doc": target_doc}
        return format_prompt(context, question, self.source.is_mcq, target_doc), answer, extra

    def _prefix(self, text: str, max_tokens: int) -> str:
        """Longest word-level prefix of `text` with at most `max_tokens` tokens (binary search)."""
        words = text.split()
        low, high = 0, len(words)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.counter.count("\n\nDocument XX:\n" + " ".join(words[:mid])) + 3 \
                <= max_tokens else (low, mid - 1)
        return " ".join(words[:low])

    def too_short_hint(self, length: int) -> str:
        _, pool = self.pool(length)
        context_cost, _ = self._question_costs()
        return (f"the distractor pool of {self.source.origin} ({len(pool)} documents, "
                f"{sum(context_cost[c] for c in pool)} tokens) cannot fill this length; use the full source")

    @classmethod
    def score(cls, prediction: str, sample: Dict[str, Any]) -> float:
        block = answer_block(prediction)
        if block is None:
            return 0.0
        if sample["is_mcq"]:
            predicted = mcq_letters(block)
            return 1.0 if predicted and predicted == mcq_letters(sample["gold_answer"]) else 0.0
        gold = sample["gold_answer"]
        return max(token_f1(normalize_open_answer(block), normalize_open_answer(g))
                   for g in (gold if isinstance(gold, list) else [gold]))


def mcq_letters(text: str) -> str:
    """Sorted option letters (A-D) of an MCQ answer: 'B', 'A, C' -> 'AC', '(D)', 'B. <option text>' -> 'B'."""
    text = re.sub(r"Question\s*\d+\.?\s*", "", text or "").strip()
    compact = re.sub(r"(?i)\b(?:and|or)\b|[\s,;/&+()\[\].:'\"]", "", text)
    if re.fullmatch(r"[A-Da-d]{1,4}", compact):
        letters = compact.upper()
    else:  # letters used as option markers: "B." "(C)" "D)" "A:" or a letter closing the answer
        letters = "".join(re.findall(r"(?:^|(?<=[\s(\[]))([A-D])(?=[.):\]]|\s*$)", text, flags=re.M))
        if not letters:
            letters = "".join(re.findall(r"\b([A-D])\b", text))
    return "".join(sorted(set(letters)))


def normalize_open_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop a/an/the/and/or/about/to, collapse whitespace (the reference's rule)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the|and|or|about|to)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """Token-set F1 rounded to 2 decimals (the reference's definition)."""
    pred, ref = set(prediction.split()), set(gold.split())
    common = len(pred & ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return round(2 * precision * recall / (precision + recall), 2)


class QASquad(QATask):
    name, metric, dataset_name = "qa_squad", "f1", "squad"


class QAToefl(QATask):
    name, metric, dataset_name = "qa_toefl", "accuracy", "toeflqa"


class QAQuality(QATask):
    name, metric, dataset_name = "qa_quality", "accuracy", "quality"
