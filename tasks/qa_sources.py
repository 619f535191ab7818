"""QA sources for `qa_squad`, `qa_toefl`, `qa_quality`, loaded through `datasets`, with a local override.

Default sources (what the reference used):
- squad: SQuAD v2.0 dev set, Hub dataset `rajpurkar/squad_v2` split `validation` (CC BY-SA 4.0); unanswerable
  questions are dropped.
- toeflqa: TOEFL-QA listening transcripts as prepared by LC_VS_RAG (`lixinze777/LC_VS_RAG`,
  datasets/filtered_QA/toeflqa.jsonl); no Hub dataset exists, the JSONL is read with `datasets`' json builder.
- quality: QuALITY as prepared by LC_VS_RAG (datasets/QA/quality.jsonl), same JSONL schema.

Override with a local file (offline use, CI, your own data): task argument `data_path=...` or the environment
variables `SPARSE_ATTN_SQUAD_PATH`, `SPARSE_ATTN_TOEFLQA_PATH`, `SPARSE_ATTN_QUALITY_PATH`. Accepted files:
- SQuAD: the official JSON (`{"data": [{"paragraphs": [{"context", "qas": [...]}]}]}`), or JSONL/parquet rows with
  `context`, `question`, `answers` ({"text": [...]} or a list of strings);
- TOEFL / QuALITY: JSONL rows with `context`, `questions` (list of str, options inline) and `answer` (list of
  letter strings), as in LC_VS_RAG.

Every source becomes `QASource(contexts, questions, is_mcq)`: unique contexts sorted, questions as
`(context_index, question, answer)` with duplicate (lower-cased question, context) pairs removed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

LC_VS_RAG = "https://raw.githubusercontent.com/lixinze777/LC_VS_RAG/main/datasets"
SOURCES = {
    "squad": {"env": "SPARSE_ATTN_SQUAD_PATH", "hub": ("rajpurkar/squad_v2", "validation"), "mcq": False,
              "licence": "CC BY-SA 4.0 (SQuAD 2.0, Rajpurkar et al. 2018)"},
    "toeflqa": {"env": "SPARSE_ATTN_TOEFLQA_PATH", "url": f"{LC_VS_RAG}/filtered_QA/toeflqa.jsonl", "mcq": True,
                "licence": "research use (TOEFL-QA, Tseng et al. 2016, via LC_VS_RAG)"},
    "quality": {"env": "SPARSE_ATTN_QUALITY_PATH", "url": f"{LC_VS_RAG}/QA/quality.jsonl", "mcq": True,
                "licence": "CC BY 4.0 (QuALITY, Pang et al. 2022, via LC_VS_RAG)"},
}


@dataclass
class QASource:
    name: str
    contexts: List[str]
    questions: List[Tuple[int, str, Any]]  # (context index, question text, answer: letters str or list of str)
    is_mcq: bool
    origin: str


def source_location(name: str, data_path: Optional[str] = None) -> str:
    if name not in SOURCES:
        raise ValueError(f"unknown QA source {name!r}; choose one of {sorted(SOURCES)}")
    spec = SOURCES[name]
    return data_path or os.environ.get(spec["env"]) or spec.get("url") or "hub:" + spec["hub"][0]


def load_qa_source(name: str, data_path: Optional[str] = None) -> QASource:
    """Load and normalise one QA source (see the module docstring for locations and overrides)."""
    location = source_location(name, data_path)
    rows = _read_rows(name, location)
    if SOURCES[name]["mcq"]:
        pairs = []
        for row in rows:
            if len(row["questions"]) != len(row["answer"]):
                raise ValueError(f"{location}: a row has {len(row['questions'])} questions but "
                                 f"{len(row['answer'])} answers")
            for question, answer in zip(row["questions"], row["answer"]):
                if name == "toeflqa" and question.startswith("Question: "):
                    question = question[len("Question: "):]
                pairs.append((row["context"], question, answer))
    else:
        pairs = [(row["context"], row["question"], answers) for row in rows
                 for answers in [_squad_answers(row)] if answers]  # no answer = unanswerable, dropped
    contexts = sorted({context for context, _, _ in pairs})
    index = {context: i for i, context in enumerate(contexts)}
    seen, questions = set(), []
    for context, question, answer in pairs:
        key = (question.strip().lower(), index[context])
        if key not in seen:
            seen.add(key)
            questions.append((index[context], question, answer))
    return QASource(name, contexts, questions, SOURCES[name]["mcq"], location)


def _squad_answers(row) -> List[str]:
    answers = row.get("answers")
    if isinstance(answers, dict):
        return list(answers.get("text") or [])
    return [a["text"] if isinstance(a, dict) else a for a in (answers or [])]


def _read_rows(name: str, location: str) -> List[dict]:
    if location.startswith("hub:"):
        import datasets

        repo, split = SOURCES[name]["hub"]
        return list(datasets.load_dataset(repo, split=split))
    path = Path(location)
    if path.suffix == ".json" and path.exists():
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "data" in data:  # official SQuAD JSON
            return [{"context": p["context"], "question": qa["question"],
                     "answers": [] if qa.get("is_impossible") else [a["text"] for a in qa["answers"]]}
                    for article in data["data"] for p in article["paragraphs"] for qa in p["qas"]]
    import datasets

    builder = "parquet" if location.endswith(".parquet") else "json"
    return list(datasets.load_dataset(builder, data_files={"test": location}, split="test"))
