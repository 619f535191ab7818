"""Scoring of the nine tasks: gold answers score 1; wrong, partial and malformed answers score as the reference
defines, with its section-6 bugs fixed (no skipped samples, MCQ option letters only). No tokenizer needed."""
import pytest

from sparse_attn.tasks import TASKS, get_task_class
from sparse_attn.tasks.qa import mcq_letters, token_f1

NIAH = {"answers": [["aaaaaaaa-bbbbbbbb-cccccccc-dddddddd", "11111111-22222222-33333333-44444444"],
                    ["eeeeeeee-ffffffff-gggggggg-hhhhhhhh", "55555555-66666666-77777777-88888888"]]}
NIAH["gold_answer"] = "\n".join(f"{i}. The answer for {k} is {v}." for i, (k, v) in enumerate(NIAH["answers"], 1))
VT = {"target_vars": ["ABCDE", "FGHIJ", "KLMNO"], "gold_answer": "ABCDE FGHIJ KLMNO"}
CWE = {"common_words": ["apple", "river", "stone"], "gold_answer": "1. apple\n2. river\n3. stone"}
SQUAD = {"is_mcq": False, "gold_answer": ["Denver Broncos", "the Broncos"]}
TOEFL = {"is_mcq": True, "gold_answer": "B"}
QUALITY = {"is_mcq": True, "gold_answer": "AC"}
RETRIEVAL = {"answers": ["Rome", "Selene", "ancient gold ring", "Troy"]}
RETRIEVAL["gold_answer"] = "\n".join(f"{i}. {a}" for i, a in enumerate(RETRIEVAL["answers"], 1))
MULTIHOP = {"gold_answer": "ornate jade comb"}
FILTERING = {"chapters": [3, 7, 12], "gold_answer": "3, 7, 12"}

SAMPLES = {"ruler_niah": NIAH, "ruler_vt": VT, "ruler_cwe": CWE, "qa_squad": SQUAD, "qa_toefl": TOEFL,
           "qa_quality": QUALITY, "story_retrieval": RETRIEVAL, "story_multihop": MULTIHOP,
           "story_filtering": FILTERING}


def answer(text):
    return f"<explanation>\nI read the context.\n</explanation>\n<answer>\n{text}\n</answer>"


def score(task, prediction):
    return get_task_class(task).score(prediction, SAMPLES[task])


@pytest.mark.parametrize("task", list(TASKS))
def test_gold_answer_scores_one(task):
    gold = SAMPLES[task]["gold_answer"]
    assert score(task, answer(gold[0] if isinstance(gold, list) else gold)) == 1.0


@pytest.mark.parametrize("task", list(TASKS))
def test_empty_and_garbage_score_zero(task):
    assert score(task, "") == 0.0
    assert score(task, answer("I do not know.")) == 0.0


@pytest.mark.parametrize("task", list(TASKS))
def test_evaluate_counts_every_sample(task):
    """Reference bug: story_multihop skipped predictions without <answer>, story_filtering empty ones."""
    gold = SAMPLES[task]["gold_answer"]
    good = answer(gold[0] if isinstance(gold, list) else gold)
    records = [{**SAMPLES[task], "pred": good}, {**SAMPLES[task], "pred": ""},
               {**SAMPLES[task], "pred": "no answer block at all"}]
    summary = get_task_class(task).evaluate(records)
    metric = get_task_class(task).metric
    assert summary["num_samples"] == 3
    assert summary[metric] == pytest.approx(1 / 3)
    assert summary[f"{metric}_variance"] == pytest.approx(1 / 3)  # ddof=1 of [1, 0, 0]
    assert summary[f"{metric}_stderr"] == pytest.approx((1 / 3 / 3) ** 0.5)


def test_niah_partial_wrong_order_and_formats():
    (k1, v1), (k2, v2) = NIAH["answers"]
    assert score("ruler_niah", answer(f"1. The answer for {k1} is {v1}.\n2. The answer for {k2} is wrong.")) == 0.5
    assert score("ruler_niah", answer(f"1. The answer for {k2} is {v2}.\n2. The answer for {k1} is {v1}.")) == 0.0
    # "is:" and upper-case values are normalised; the key must match exactly
    assert score("ruler_niah", answer(f"1. The answer for {k1} is: {v1.upper()}.")) == 0.5
    assert score("ruler_niah", answer(f"1. The answer for {k1.upper()} is {v1}.")) == 0.0
    # no <answer> block: the whole text is parsed (reference behaviour); duplicates keep the first
    assert score("ruler_niah", f"1. The answer for {k1} is {v1}.\n1. The answer for {k1} is x.") == 0.5


def test_vt_iou_prefix_and_case():
    assert score("ruler_vt", answer("VAR ABCDE VAR FGHIJ")) == pytest.approx(2 / 3)
    assert score("ruler_vt", answer("abcde fghij klmno")) == 1.0
    assert score("ruler_vt", answer("ABCDE FGHIJ KLMNO ZZZZZ")) == pytest.approx(3 / 4)
    assert score("ruler_vt", "ABCDE FGHIJ KLMNO") == 1.0  # no block: whole text


def test_cwe_requires_answer_block_and_numbered_lines():
    assert score("ruler_cwe", "1. apple\n2. river\n3. stone") == 0.0  # no <answer> block
    assert score("ruler_cwe", answer("1) Apple\n2- river\n3.stone")) == 1.0
    assert score("ruler_cwe", answer("1. apple\n2. river")) == pytest.approx(2 / 3)
    assert score("ruler_cwe", answer("apple\nriver\nstone")) == 0.0  # unnumbered lines are not read
    assert score("ruler_cwe", answer("1. apple\n2. river\n3. stone\n4. cloud")) == pytest.approx(3 / 4)


def test_squad_f1_is_token_set_f1_rounded_max_over_golds():
    assert score("qa_squad", answer("Broncos")) == 1.0  # "the Broncos" normalises to "broncos"
    assert score("qa_squad", answer("Denver")) == pytest.approx(0.67)  # vs "denver broncos": P=1, R=.5
    assert score("qa_squad", answer("The Denver Broncos team")) == pytest.approx(0.8)
    assert score("qa_squad", "Denver Broncos") == 0.0  # no <answer> block
    assert token_f1("a b c", "c d") == pytest.approx(0.4)


@pytest.mark.parametrize("text, letters", [
    ("B", "B"), ("b", "B"), ("(B)", "B"), ("B.", "B"), ("A, C", "AC"), ("C and A", "AC"), ("CA", "AC"),
    ("Question 1. B", "B"), ("B. The student wants to find a book about Arizona", "B"),
    ("The answer is C.", "C"), ("Option D", "D"), ("A) first B) second", "AB"), ("none", ""),
])
def test_mcq_letters(text, letters):
    """Reference bug: every A-D character of the answer text counted ('B. ... Arizona' -> 'AB')."""
    assert mcq_letters(text) == letters


def test_mcq_scoring():
    assert score("qa_toefl", answer("B. to report that a journal is missing")) == 1.0
    assert score("qa_toefl", answer("A")) == 0.0
    assert score("qa_quality", answer("A, C")) == 1.0
    assert score("qa_quality", answer("A")) == 0.0  # partial multi-answer is wrong (exact match)
    assert score("qa_quality", answer("ABC")) == 0.0
    assert score("qa_toefl", "B") == 0.0  # no <answer> block


def test_story_retrieval_partial_and_normalisation():
    assert score("story_retrieval", answer("1. the Rome\n2. selene\n3. Ancient  Gold Ring\n4. Sparta")) == 0.75
    assert score("story_retrieval", answer("1: Rome\n2) Selene")) == 0.5
    assert score("story_retrieval", answer("Rome\nSelene")) == 0.0  # unnumbered


def test_story_multihop_exact_item():
    assert score("story_multihop", answer("The ornate jade comb")) == 1.0
    assert score("story_multihop", answer("ornate jade")) == 0.0
    assert score("story_multihop", "ornate jade comb") == 0.0  # no block: wrong, not skipped


def test_story_filtering_iou_and_formats():
    assert score("story_filtering", answer("Chapter 3, Chapter 7, Chapter 12")) == 1.0
    assert score("story_filtering", answer("12, 3")) == pytest.approx(2 / 3)
    assert score("story_filtering", answer("3, 7, 12, 20")) == pytest.approx(3 / 4)
    # "Chapter N" mentions win over stray numbers
    assert score("story_filtering", answer("Chapter 3 (after 2 days), Chapter 7, Chapter 12")) == 1.0
    assert score("story_filtering", "3, 7, 12") == 0.0  # no block
