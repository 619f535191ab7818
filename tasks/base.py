"""The common task framework: exact-length prompts for any tokenizer, per-sample seeds, scoring summaries.

Every task builds the *user message* of a chat; the model sees it through the tokenizer's chat template
(user turn + generation prompt). A sample for target length L is accepted only when the chat-templated prompt
has between ceil(0.95 L) and L tokens (the reference accepted 0.90 L; its paper states 95-100 %).

Determinism: sample i of a task with seed s is drawn from `random.Random(s + i)` (as in the reference), so any
sample regenerates alone, and nothing depends on the process (no `hash()`, no set iteration order).

Sizing works in two steps. A task's `build(rng, budget, index)` fills the user message up to `budget` tokens by
adding token counts of pieces (incremental, no re-tokenising of the growing prompt); `Task.generate_sample` then
counts the chat-templated prompt once, exactly, and if pieces merged across boundaries so that it overflows,
rebuilds with the same seed and a budget lowered by the overflow.
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Sequence, Tuple

LENGTH_FLOOR = 0.95  # accepted prompt length: [ceil(0.95 * target), target] tokens, chat template included
DEFAULT_SEED = 43  # the reference's default random_seed
DEFAULT_MAX_OUTPUT_TOKENS = 1024  # the reference's max_output_tokens (gold answers must fit)


class LengthError(ValueError):
    """A sample cannot be sized to the requested length (too short a target, or a source too small)."""


class TaskConfigError(ValueError):
    """Invalid task arguments."""


class TokenCounter:
    """Counts tokens the way the model will see them.

    `count(text)` = tokens of `text` without special tokens; `chat(text)` = the chat-templated prompt string
    (user turn + generation prompt), or `text` itself for tokenizers without a chat template (base models).
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        probe = "Hello world."
        self.template_overhead = self.count(self.chat(probe)) - self.count(probe)

    @property
    def name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__)

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"])

    def count_many(self, texts: Sequence[str]) -> List[int]:
        """Token counts of many short texts in one batched call (fast tokenizers parallelise it)."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]
        return [len(x) for x in ids]

    def count_in_context(self, texts: Sequence[str], prefix: str = "x") -> List[int]:
        """Tokens each text adds after `prefix`: count(prefix + t) - count(prefix), batched. Counting a piece on
        its own over-counts with tokenizers that mark the start of a string (SentencePiece's leading "▁")."""
        base = self.count(prefix)
        return [n - base for n in self.count_many([prefix + t for t in texts])]

    def chat(self, text: str) -> str:
        if not self.has_chat_template:
            return text
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)


class Task:
    """Base class of the nine tasks.

    Subclasses set `name` and `metric` and implement `build(rng, budget, index) -> (prompt, gold_answer, extra)`
    (the user message of at most ~`budget` tokens, the gold answer string or list of strings, and extra
    JSON-serialisable fields stored with the sample) and `score(prediction, sample) -> float` in [0, 1].

    Args:
        tokenizer: a Hugging Face tokenizer (the model's own, so lengths are exact for that model).
        seed: task seed; sample i uses `random.Random(seed + i)`. Default: 43.
        max_output_tokens: gold answers longer than this raise. Default: 1024.
    """

    name: str = ""
    metric: str = ""
    args: Dict[str, Any] = {}  # task arguments and their reference defaults (overridden per instance)

    def __init__(self, tokenizer, seed: int = DEFAULT_SEED, max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
                 **args):
        unknown = set(args) - set(self.args)
        if unknown:
            raise TaskConfigError(f"{self.name}: unknown argument(s) {sorted(unknown)}; "
                                  f"it takes {sorted(self.args) or 'no arguments'}")
        self.counter = tokenizer if isinstance(tokenizer, TokenCounter) else TokenCounter(tokenizer)
        self.seed = int(seed)
        self.max_output_tokens = int(max_output_tokens)
        self.params = {**self.args, **args}
        self.check_params()

    # -- to implement --------------------------------------------------------------------------------------------
    def check_params(self) -> None:
        """Validate `self.params` (raise TaskConfigError naming the argument) and prepare what every sample
        shares (vocabularies, QA sources). Called once by `__init__`."""

    def build(self, rng: random.Random, budget: int, index: int) -> Tuple[str, Any, Dict[str, Any]]:
        raise NotImplementedError

    @classmethod
    def score(cls, prediction: str, sample: Dict[str, Any]) -> float:
        raise NotImplementedError

    # -- generation ----------------------------------------------------------------------------------------------
    def generate(self, length: int, num_samples: int, start: int = 0) -> List[Dict[str, Any]]:
        """Samples `start .. start + num_samples - 1` at target `length` (tokens, chat template included)."""
        return [self.generate_sample(length, index) for index in range(start, start + num_samples)]

    def generate_sample(self, length: int, index: int) -> Dict[str, Any]:
        """Sample `index` at target `length`: a dict with `input` (chat-templated prompt), `prompt` (user message),
        `gold_answer`, `length` (tokens of `input`), `max_length` (= target), `index`, `seed`, `task` and the
        task's extra fields."""
        length = int(length)
        budget = length - self.counter.template_overhead
        for attempt in range(8):
            rng = random.Random(self.seed + index)
            prompt, gold, extra = self.build(rng, budget, index)
            text = self.counter.chat(prompt)
            n_tokens = self.counter.count(text)
            if n_tokens <= length:
                break
            budget -= (n_tokens - length) + 2 ** attempt  # pieces merged across boundaries; shrink and rebuild
        else:
            raise LengthError(f"{self.name}: could not fit sample {index} under {length} tokens")
        floor = math.ceil(LENGTH_FLOOR * length)
        if n_tokens < floor:
            raise LengthError(
                f"{self.name}: sample {index} has {n_tokens} tokens, below the floor {floor} "
                f"({LENGTH_FLOOR:.0%} of {length}) for tokenizer {self.counter.name}; "
                f"{self.too_short_hint(length)}")
        for answer in gold if isinstance(gold, list) else [gold]:
            answer_tokens = self.counter.count(answer)
            if answer_tokens > self.max_output_tokens:
                raise LengthError(f"{self.name}: gold answer of sample {index} has {answer_tokens} tokens > "
                                  f"max_output_tokens={self.max_output_tokens}; raise max_output_tokens")
        return {
            "task": self.name, "index": index, "seed": self.seed, "max_length": length, "length": n_tokens,
            "input": text, "prompt": prompt, "gold_answer": gold, **extra,
        }

    def too_short_hint(self, length: int) -> str:
        return "use a larger target length"

    # -- scoring -------------------------------------------------------------------------------------------------
    @classmethod
    def evaluate(cls, records: Iterable[Dict[str, Any]], prediction_key: str = "pred") -> Dict[str, float]:
        """Score records (samples with the model output under `prediction_key`) and summarise: the reference's
        metric mean and unbiased variance (ddof=1), plus standard error and count. Every record counts:
        a prediction without an answer scores 0, it is never skipped (reference bug, fixed)."""
        scores = [cls.score(record.get(prediction_key) or "", record) for record in records]
        return summarize(cls.metric, scores)


def summarize(metric: str, scores: Sequence[float]) -> Dict[str, float]:
    n = len(scores)
    mean = sum(scores) / n if n else 0.0
    variance = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    return {metric: mean, f"{metric}_variance": variance, f"{metric}_stderr": math.sqrt(variance / n) if n else 0.0,
            "num_samples": n}


# -- shared answer parsing -----------------------------------------------------------------------------------------
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def answer_block(text: str) -> str | None:
    """Content of the first `<answer>...</answer>` block (case-insensitive), or None when there is none."""
    match = _ANSWER_BLOCK.search(text or "")
    return match.group(1) if match else None


def iou(predicted: set, gold: set, both_empty: float = 1.0) -> float:
    union = predicted | gold
    return len(predicted & gold) / len(union) if union else both_empty


@dataclass(frozen=True)
class TaskInfo:
    """What the registry knows about a task without building it."""

    name: str
    metric: str
    args: Dict[str, Any]
    description: str
