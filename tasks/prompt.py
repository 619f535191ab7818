"""The shared prompt: task intro, question(s) before and after the context, explanation-then-answer format.

Text identical to the reference system (sparse-frontier `tasks/abstract_prompt.py`, Apache-2.0), so scores are
comparable with the paper. Models answer inside `<answer>...</answer>`; every metric parses that block.
"""

_BASE = """{task_intro}

{question_intro}

{question_section}

<context>
{context}
</context>

{question_repeat_section}

Instructions:
1. First, provide a brief explanation of your reasoning process. Explain how you identified 
   the relevant information from the context and how you determined your answer.
2. Then, provide your final answer following this exact format:
<answer>
{answer_format}
</answer>

Your response must follow this structure exactly:
<explanation>
Your explanation here...
</explanation>
<answer>
Your answer here...
</answer>

Important:
{extra_instructions}
- Keep your explanations clear, coherent, concise, and to the point.
- Do not include any additional text, explanations, or reasoning in the answer section. Follow the answer format exactly.
"""

_FIELDS = dict(task_intro="{task_intro}", context="{context}", answer_format="{answer_format}",
               extra_instructions="{extra_instructions}")

SINGLE_QUESTION = _BASE.format(
    **_FIELDS,
    question_intro="Below is your question. I will state it both before and after the context.",
    question_section="<question>\n{question}\n</question>",
    question_repeat_section="<question_repeated>\n{question}\n</question_repeated>",
)

MULTIPLE_QUESTIONS = _BASE.format(
    **_FIELDS,
    question_intro="Below are your questions. I will state them both before and after the context.",
    question_section="<questions>\n{question}\n</questions>",
    question_repeat_section="<questions_repeated>\n{question}\n</questions_repeated>",
)


def render(template: str, *, task_intro: str, context: str, question: str, answer_format: str,
           extra_instructions: str) -> str:
    """Fill a template. Uses str.replace, not str.format, so braces inside documents are safe."""
    text = template
    for key, value in (("task_intro", task_intro), ("answer_format", answer_format),
                       ("extra_instructions", extra_instructions), ("question", question)):
        text = text.replace("{" + key + "}", value)
    return text.replace("{context}", context)  # last: the context may contain anything
