"""Data and scoring behind the `sf_*` YAMLs (referenced with `!function`, so they work from any folder).

`custom_dataset(**kwargs)` receives the YAML `metadata` and `dataset_kwargs`, `--model_args` and `--metadata`
(lm-eval merges them; later wins). Keys we read:

- `task` (from the YAML's dataset_kwargs): which of the nine tasks.
- `max_seq_lengths` (list of ints, default from the YAML): target prompt lengths in tokens, chat template included.
- `tokenizer` / `pretrained` / `model`: the tokenizer that sizes prompts (first present wins, as lm-eval's RULER).
- `num_samples` (default 100, the reference's `samples`), `task_seed` (default 43; not `seed`, which is a model
  arg), `max_output_tokens` (default 1024).
- `data` or env `SPARSE_ATTN_DATA`: a local folder or Hub id of a dataset made by `scripts/build_dataset.py`;
  config `<task>-<length>` is read instead of generating.
- any argument of the task (`num_queries`, `num_chains`, `data_path`, ...), e.g.
  `--metadata '{"max_seq_lengths": [32768], "num_queries": 8}'`.

Each doc carries `input` (the chat-templated prompt: run lm-eval **without** `--apply_chat_template`, the template
is already applied so the length is exact), `outputs` (gold answers), `max_length`, `length`, `task` and `sample`
(JSON with what scoring needs). `process_results` returns the score under the length key (`"16384"`, as lm-eval's
RULER) and under the reference metric name (`accuracy`, `iou` or `f1`; pools all lengths of the run), plus
`output_tokens` (tokens of the prediction), so `--log_samples` records prediction, score and output length.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any, Dict, List

from ...tasks import build_task, get_task_class

DEFAULT_LENGTHS = [16384]
DEFAULT_NUM_SAMPLES = 100
DEFAULT_SEED = 43
TOKENIZER_KEYS = ("tokenizer", "pretrained", "model")


def resolve_tokenizer_name(kwargs: Dict[str, Any]) -> str:
    for key in TOKENIZER_KEYS:
        value = kwargs.get(key)
        if isinstance(value, str) and value:
            return value
    raise ValueError("sparse_frontier tasks size every prompt with the model's tokenizer; pass it with "
                     "--model_args pretrained=<model> (or tokenizer=<name>)")


@lru_cache(maxsize=4)
def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, trust_remote_code=True)


def to_doc(sample: Dict[str, Any], tokenizer_name: str) -> Dict[str, Any]:
    """A generated sample as one lm-eval doc / dataset row (flat, one schema for every task)."""
    gold = sample["gold_answer"]
    scoring = {k: v for k, v in sample.items() if k not in ("input", "prompt")}
    return {
        "task": sample["task"], "index": sample["index"], "seed": sample["seed"],
        "max_length": sample["max_length"], "length": sample["length"],
        "input": sample["input"], "prompt": sample["prompt"],
        "outputs": list(gold) if isinstance(gold, list) else [gold],
        "tokenizer": tokenizer_name, "sample": json.dumps(scoring, sort_keys=True),
    }


def _task_args(task: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    return {k: kwargs[k] for k in get_task_class(task).args if k in kwargs}


def generate_docs(task: str, tokenizer_name: str, lengths: List[int], num_samples: int, seed: int,
                  max_output_tokens: int = 1024, **task_args) -> List[Dict[str, Any]]:
    """All docs of `task` for every length (the same function builds the Hub dataset)."""
    generator = build_task(task, load_tokenizer(tokenizer_name), seed=seed, max_output_tokens=max_output_tokens,
                           **task_args)
    return [to_doc(sample, tokenizer_name) for length in lengths
            for sample in generator.generate(int(length), num_samples)]


def custom_dataset(**kwargs) -> Dict[str, Any]:
    import datasets

    task = kwargs["task"]
    lengths = [int(x) for x in kwargs.get("max_seq_lengths") or DEFAULT_LENGTHS]
    tokenizer_name = resolve_tokenizer_name(kwargs)
    num_samples = int(kwargs.get("num_samples", DEFAULT_NUM_SAMPLES))
    source = kwargs.get("data") or os.environ.get("SPARSE_ATTN_DATA")
    if source:
        rows = []
        for length in lengths:
            part = datasets.load_dataset(source, f"{task}-{length}", split="test")
            rows += [dict(row, tokenizer=tokenizer_name) for row in part.select(range(min(num_samples, len(part))))]
    else:
        rows = generate_docs(task, tokenizer_name, lengths, num_samples, int(kwargs.get("task_seed", DEFAULT_SEED)),
                             int(kwargs.get("max_output_tokens", 1024)), **_task_args(task, kwargs))
    return {"test": datasets.Dataset.from_list(rows)}


def process_results(doc: Dict[str, Any], results: List[str]) -> Dict[str, float]:
    """Score one prediction; keys: the doc's length, the task's reference metric, output_tokens."""
    prediction = results[0] if results else ""
    task = get_task_class(doc["task"])
    score = float(task.score(prediction, json.loads(doc["sample"])))
    output_tokens = len(load_tokenizer(doc["tokenizer"])(prediction, add_special_tokens=False)["input_ids"])
    return {str(doc["max_length"]): score, task.metric: score, "output_tokens": float(output_tokens)}
