"""`ruler_vt`: variable tracking through chains of assignments hidden in noise (reference section 3.2).

Each of `num_chains` chains has `num_hops + 1` five-letter variables: "VAR A = 12345", "VAR B = VAR A", ...
with a distinct value per chain; the question asks which variables resolve to the first chain's value.
Assignments and copies of a fixed noise sentence are shuffled together. Score: IoU of variable-name sets.
"""
from __future__ import annotations

import re
import string
from typing import Any, Dict, List, Tuple

from .base import Task, TaskConfigError, answer_block, iou
from .prompt import SINGLE_QUESTION, render

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
TASK_INTRO = """I will provide you with a text containing variable assignments. The text contains two types of assignments:
1. Numeric assignments that set a variable to a number (e.g., "VAR ABC = 12345")
2. Copy assignments that set a variable equal to another variable (e.g., "VAR XYZ = VAR ABC")
Variables are sequences of uppercase letters. The assignments can appear in any order in the text."""
ANSWER_FORMAT = "VARIABLE_ONE VARIABLE_TWO etc."
EXTRA_INSTRUCTIONS = """- List ONLY the variable names that resolve to the target value.
- Variables can be listed in any order.
- Do not include "VAR" prefix in your answer. Do not include punctuation."""
QUESTION = ("Which variables resolve to the value {value}? A variable resolves to {value} if it is either directly "
            "assigned {value}, or assigned to another variable that resolves to {value}.")


def _render(sentences: List[str], value: str) -> str:
    return render(SINGLE_QUESTION, task_intro=TASK_INTRO, context=" ".join(sentences),
                  question=QUESTION.replace("{value}", value), answer_format=ANSWER_FORMAT,
                  extra_instructions=EXTRA_INSTRUCTIONS)


def _variables(text: str) -> set:
    text = re.sub(r"\s+", " ", text.upper().strip())
    return set(re.sub(r"VAR\s+", "", text).split())


class RulerVT(Task):
    """Args: num_chains (default 8, the reference config), num_hops (default 4)."""

    name = "ruler_vt"
    metric = "iou"
    args = {"num_chains": 8, "num_hops": 4}

    def check_params(self):
        for arg in ("num_chains", "num_hops"):
            if not isinstance(self.params[arg], int) or self.params[arg] < 1:
                raise TaskConfigError(f"ruler_vt: {arg} must be an integer >= 1")

    def build(self, rng, budget: int, index: int) -> Tuple[str, str, Dict[str, Any]]:
        chains, hops = self.params["num_chains"], self.params["num_hops"]
        names: List[str] = []
        while len(names) < chains * (hops + 1):
            name = "".join(rng.choices(string.ascii_uppercase, k=5))
            if name not in names:
                names.append(name)
        values = rng.sample(range(10000, 99999), chains)
        statements = []
        for c in range(chains):
            chain = names[c * (hops + 1):(c + 1) * (hops + 1)]
            statements.append(f"VAR {chain[0]} = {values[c]}")
            statements += [f"VAR {chain[i + 1]} = VAR {chain[i]}" for i in range(hops)]
        target_value, target_vars = str(values[0]), names[:hops + 1]
        room = budget - self.counter.count(_render(statements, target_value))
        # each noise copy costs its own tokens plus the joining space. The reference kept 5 copies of margin, which
        # at 1K-2K targets falls below the 95 % floor; overflow is corrected exactly by Task.generate_sample instead.
        noise_cost = self.counter.count(" " + NOISE)
        copies = max(room // noise_cost, 0)
        sentences = statements + [NOISE] * copies
        rng.shuffle(sentences)
        extra = {"target_value": target_value, "target_vars": target_vars, "num_chains": chains, "num_hops": hops}
        return _render(sentences, target_value), " ".join(target_vars), extra

    @classmethod
    def score(cls, prediction: str, sample: Dict[str, Any]) -> float:
        block = answer_block(prediction)
        predicted = _variables(block if block is not None else (prediction or ""))
        return iou(predicted, set(sample["target_vars"]))
