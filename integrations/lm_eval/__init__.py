"""lm-evaluation-harness front-end: the nine `sf_*` tasks and the `sparse_frontier` group.

    lm_eval --model hf --model_args pretrained=M,attn_implementation=flexprefill \\
        --tasks sparse_frontier --metadata '{"max_seq_lengths": [16384, 32768]}'

Discovery: after `pip install sparse-attn`, the autoload hook (`sparse_attn_autoload.pth`) calls `register_tasks()`
when `lm_eval.tasks` is imported; it makes every `TaskManager` also index our YAML folder, so `lm_eval --tasks list`
shows the `sf_*` tasks with no extra flags. Without the hook (SPARSE_ATTN_AUTOLOAD=0, `python -S`), pass the folder:

    lm_eval --include_path "$(python -m sparse_attn.integrations.lm_eval)" --tasks sf_ruler_niah ...
"""
from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
TASK_NAMES = ("sf_ruler_niah", "sf_ruler_vt", "sf_ruler_cwe", "sf_qa_squad", "sf_qa_toefl", "sf_qa_quality",
              "sf_story_retrieval", "sf_story_multihop", "sf_story_filtering")
GROUP_NAME = "sparse_frontier"


def tasks_dir() -> str:
    """The folder holding our task YAMLs (for `--include_path` / `TaskManager(include_path=...)`)."""
    return str(TASKS_DIR)


def register_tasks() -> None:
    """Make `lm_eval.tasks.TaskManager` index our YAML folder by default (idempotent).

    lm-eval 0.4.13 has no entry points for tasks; the supported extension point is `include_path`, so we append our
    folder to it in every TaskManager (after the user's own paths, so a user's task of the same name still loads
    and lm-eval warns about the override).
    """
    from lm_eval.tasks import TaskManager

    if getattr(TaskManager.__init__, "_sparse_attn", False):
        return
    original_init = TaskManager.__init__

    def __init__(self, verbosity=None, include_path=None, *args, **kwargs):
        paths = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) \
            else [include_path]
        if not any(Path(p).resolve() == TASKS_DIR for p in paths):
            paths.append(str(TASKS_DIR))
        original_init(self, verbosity, paths, *args, **kwargs)

    __init__._sparse_attn = True
    __init__.__wrapped__ = original_init
    TaskManager.__init__ = __init__


__all__ = ["TASKS_DIR", "TASK_NAMES", "GROUP_NAME", "tasks_dir", "register_tasks"]
