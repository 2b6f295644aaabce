"""Reasoning data: a teacher explains each gold SQL; only explanations that reach it are kept.

The prompt follows the pattern of the Llama text2sql recipe (meta-llama/llama-cookbook,
``end-to-end-use-cases/coding/text2sql/fine-tuning/create_reasoning_dataset.py``): the teacher
sees the schema, the external knowledge (evidence), the question *and the gold SQL*, and is
asked for step-by-step reasoning that infers the SQL, ending with the SQL in a fenced block.
The recipe keeps an example when the final SQL equals the gold string; we keep it when the final
SQL *executes to the gold result* (:class:`nl2sql_lib.sql.judge.Judge`), which accepts harmless
rewrites (alias names, spacing) and still rejects reasoning that drifts.

    teacher = openai_teacher("meta-llama/Llama-3.3-70B-Instruct")     # any OpenAI-compatible server
    teacher = local_teacher("Qwen/Qwen2.5-Coder-7B-Instruct")          # a transformers model
    teacher = lambda messages: "..."                                   # anything messages -> text
    kept, report = generate_reasoning(examples, teacher)

A kept example is a copy with ``reasoning`` set to the explanation (without the final SQL);
:func:`nl2sql_lib.data.prompts.sql_answer` (``reasoning=True``) wraps it in ``<think>``.
"""

from __future__ import annotations

import copy
import re
from typing import Callable, Iterable

from .example import Example

Teacher = Callable[[list[dict]], str]

TEACHER_SYSTEM = "You are a text to SQL query translator who explains how a SQL query answers a question."
TEACHER_PROMPT = """Based on the DB Schema and External Knowledge, given the Text Question and its Gold SQL below, write the step-by-step reasoning that infers the Gold SQL from the Text Question.

-- DB Schema:
{schema}
-- External Knowledge: {evidence}
-- Text Question: {question}
-- Gold SQL: {sql}

Answer in this form:
Let me think through this step by step:
1. First, I need to ...
2. Then ...
...
Finally, the SQL statement for the text question is:
```sql
...
```"""

_FENCE = re.compile(r"```[ \t]*(?:sql|sqlite)?[ \t]*\n?(.*?)```", re.DOTALL | re.IGNORECASE)
_LEAD_IN = re.compile(r"\n?[^\n]*\b(sql|query)\b[^\n]*:\s*$", re.IGNORECASE)


def teacher_messages(example: Example, schema_text: str) -> list[dict]:
    """The request for one example (system + user), in the recipe's pattern."""
    user = TEACHER_PROMPT.format(
        schema=schema_text.strip(),
        evidence=(example.evidence or "").strip() or "none",
        question=example.question.strip(),
        sql=example.sql.strip(),
    )
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": user}]


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, final SQL) of a teacher's answer; the SQL is "" when there is none.

    The final SQL is the last fenced block (or, failing that, what
    :func:`nl2sql_lib.sql.extract.extract_sql` finds); the reasoning is the text before it, with
    a trailing lead-in line ("Finally, the SQL statement ... is:") removed.
    """
    blocks = list(_FENCE.finditer(text or ""))
    if blocks:
        last = blocks[-1]
        sql, before = last.group(1).strip(), text[: last.start()]
    else:
        from ..sql.extract import extract_sql

        sql = extract_sql(text or "")
        position = (text or "").rfind(sql) if sql else -1
        before = text[:position] if position >= 0 else (text or "")
    reasoning = _LEAD_IN.sub("", before.rstrip()).strip()
    return reasoning, sql.rstrip(";").strip()


def generate_reasoning(
    examples: Iterable[Example],
    teacher: Teacher,
    *,
    schema_params=None,
    judge=None,
    limit: int | None = None,
    progress: bool = False,
) -> tuple[list[Example], dict]:
    """Ask ``teacher`` to explain each gold SQL; keep those whose final SQL matches by execution.

    Returns (kept examples as copies with ``reasoning`` set, report). The report counts
    ``tried``, ``kept``, ``no_sql`` (no SQL at the end), ``wrong_result`` (its SQL ran to another
    result or failed) and ``teacher_error`` (the callable raised), and lists rejected question
    ids by reason. Examples without a database file are skipped (``missing_db``).
    """
    from .schema import schema_text_for

    if judge is None:
        from ..sql.judge import Judge

        judge = Judge()
    report = {"tried": 0, "kept": 0, "no_sql": 0, "wrong_result": 0, "teacher_error": 0, "missing_db": 0}
    rejected: dict[str, list[str]] = {"no_sql": [], "wrong_result": [], "teacher_error": []}
    kept: list[Example] = []
    items = list(examples)[: limit or None]
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="reasoning")
    for example in items:
        if example.extra.get("missing_db"):
            report["missing_db"] += 1
            continue
        report["tried"] += 1
        try:
            answer = teacher(teacher_messages(example, schema_text_for(example, schema_params)))
        except Exception as exc:  # one failed request must not lose the others' work
            report["teacher_error"] += 1
            rejected["teacher_error"].append(f"{example.question_id}: {type(exc).__name__}: {exc}")
            continue
        reasoning, sql = split_reasoning(answer)
        if not sql or not reasoning:
            report["no_sql"] += 1
            rejected["no_sql"].append(example.question_id)
            continue
        if not judge.judge(example.db_path, example.sql, sql).correct:
            report["wrong_result"] += 1
            rejected["wrong_result"].append(example.question_id)
            continue
        result = copy.deepcopy(example)
        result.reasoning = reasoning
        kept.append(result)
        report["kept"] += 1
    report["rejected"] = rejected
    return kept, report


# --------------------------------------------------------------------------------------------
# Ready teachers
# --------------------------------------------------------------------------------------------


def openai_teacher(
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    temperature: float = 0.0,
    max_tokens: int = 1024,
) -> Teacher:
    """A teacher served by any OpenAI-compatible endpoint (OpenAI, vLLM, Together, Ollama...).

    ``base_url`` and ``api_key`` default to the ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``
    environment variables, as in the ``openai`` client itself.
    """
    try:
        import openai
    except ImportError:
        raise RuntimeError(
            "the 'openai' teacher needs the openai package: pip install 'openai>=1.40' "
            "(or the project's extra: pip install -e '.[openai]'), or set reasoning_teacher: local"
        ) from None
    client = openai.OpenAI(base_url=base_url, api_key=api_key)

    def ask(messages: list[dict]) -> str:
        response = client.chat.completions.create(
            model=model, messages=messages, temperature=temperature, max_tokens=max_tokens
        )
        return response.choices[0].message.content or ""

    return ask


def local_teacher(spec: str, *, max_new_tokens: int = 512, run_dir=None) -> Teacher:
    """A teacher run locally with transformers: a hub id (from the local cache), a folder or
    any model spec :func:`nl2sql_lib.models.resolve_spec` accepts. Loaded on first call."""
    from ..config import ModelParams

    state: dict = {}

    def ask(messages: list[dict]) -> str:
        if "generator" not in state:
            from ..generate import make_generator

            state["generator"] = make_generator(
                ModelParams(spec=spec), run_dir=run_dir, batch_size=1, stop_strings=None, progress=False
            )
        return state["generator"].generate([messages], n=1, temperature=0.0, max_new_tokens=max_new_tokens)[0][0]

    return ask


def make_teacher(kind: str, model: str | None, *, run_dir=None) -> Teacher | None:
    """The teacher a :class:`~nl2sql_lib.config.DataParams` names (None for ``none``)."""
    if kind == "none":
        return None
    if not model:
        raise ValueError(
            f"reasoning_teacher: {kind} needs reasoning_teacher_model (a model name for the "
            f"endpoint, or a local model spec)"
        )
    if kind == "openai":
        return openai_teacher(model)
    if kind == "local":
        return local_teacher(model, run_dir=run_dir)
    raise ValueError(f"reasoning_teacher must be none, openai or local, got {kind!r}")
