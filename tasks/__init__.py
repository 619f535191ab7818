"""Long-context tasks (`sparse_attn.tasks`): nine generators with exact token lengths, and their scoring.

    from transformers import AutoTokenizer
    from sparse_attn.tasks import build_task, list_tasks

    task = build_task("ruler_niah", AutoTokenizer.from_pretrained(model), seed=43)
    samples = task.generate(length=16384, num_samples=100)   # dicts: input, gold_answer, length, ...
    task.evaluate([{**s, "pred": output} for s, output in zip(samples, outputs)])   # {"accuracy": ..., ...}

Task names follow the reference system (sparse-frontier) and its paper; `sf_<name>` are the lm-eval tasks.
"""
from __future__ import annotations

import sys
from typing import Dict, List, Type

from .base import LengthError, Task, TaskConfigError, TaskInfo, TokenCounter, summarize
from .qa import QAQuality, QASquad, QAToefl
from .ruler_cwe import RulerCWE
from .ruler_niah import RulerNIAH
from .ruler_vt import RulerVT
from .story_filtering import StoryFiltering
from .story_multihop import StoryMultiHop
from .story_retrieval import StoryRetrieval

TASKS: Dict[str, Type[Task]] = {cls.name: cls for cls in (
    RulerNIAH, RulerVT, RulerCWE, QASquad, QAToefl, QAQuality, StoryRetrieval, StoryMultiHop, StoryFiltering)}


def list_tasks() -> List[str]:
    """Names of the nine tasks, in the reference's order of presentation."""
    return list(TASKS)


def get_task_class(name: str) -> Type[Task]:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name]


def build_task(name: str, tokenizer, seed: int = 43, **args) -> Task:
    """A task bound to `tokenizer` (the model's own: lengths are exact for it) with task arguments `args`."""
    return get_task_class(name)(tokenizer, seed=seed, **args)


def task_info(name: str) -> TaskInfo:
    """Name, metric, arguments with defaults, and the first line of the task module's docstring."""
    cls = get_task_class(name)
    doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    return TaskInfo(cls.name, cls.metric, dict(cls.args), doc.split("\n")[0])


__all__ = ["TASKS", "Task", "TaskInfo", "TokenCounter", "LengthError", "TaskConfigError", "summarize",
           "list_tasks", "get_task_class", "build_task", "task_info"]
