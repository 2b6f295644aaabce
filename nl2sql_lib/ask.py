"""Ask a model a question about a SQLite database: generate, pick, run safely, print.

    python -m nl2sql_lib.ask --db outputs/cpu/data/databases/retail/retail.sqlite \\
        --model stage:sft --run-dir outputs/cpu --strategy rm --n 4 "Which city has most customers?"

Steps: the database's schema is rendered (the data stage's rendering when ``--run-dir`` has
one, so the prompt looks like the ones the model was trained on), the model writes candidates,
one is picked, and it runs read-only under a time limit and a row cap.

Strategies (``--strategy``):

- ``greedy``: one greedy answer;
- ``vote``: the greedy answer plus ``n-1`` samples; the largest group of candidates with the
  same execution result wins (self-consistency);
- ``rm``: the same ``n`` candidates; the reward model of 05_reward_model (``--reward-model``,
  default ``stage:reward_model`` of ``--run-dir``) scores them and the best one wins.

Exit codes: 0 the chosen SQL ran; 1 the model gave no SQL or the SQL failed (printed with the
error); 2 a usage error (missing database, unknown model, missing reward model).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .evaluate.selection import RM_STRATEGIES

STRATEGIES = ("greedy", "vote", *RM_STRATEGIES)


class AskError(ValueError):
    """A usage error: the message says what to change."""


@dataclass
class Answer:
    """What :func:`ask` chose and what running it gave."""

    question: str
    strategy: str
    sql: str
    candidates: list[str]
    result: Any  # nl2sql_lib.sql.execute.ExecResult, or None when there was no SQL to run
    scores: list[float] | None = None
    raw: list[str] = field(default_factory=list)


def question_messages(question: str, db_path: str | Path, *, evidence: str = "", schema_params: Any = None) -> list[dict]:
    """The chat prompt for ``question`` over ``db_path``, as the training prompts are built."""
    from .data.example import Example
    from .data.prompts import sql_messages
    from .data.schema import schema_text_for

    db_path = Path(db_path)
    example = Example(question_id="ask", db_id=db_path.stem, db_path=str(db_path), question=question,
                      sql="", evidence=evidence)
    return sql_messages(example, schema_text_for(example, schema_params))


def check_database(db_path: str | Path) -> Path:
    """The database path, or :class:`AskError` naming it (never creates a file)."""
    path = Path(db_path)
    if not path.is_file():
        raise AskError(f"database not found: {path} (give the path of an existing SQLite file with --db)")
    return path


def generate_candidates(generator: Any, messages: list[dict], *, strategy: str, n: int,
                        temperature: float, max_new_tokens: int) -> list[str]:
    """Raw model texts: the greedy answer, plus ``n-1`` samples for the other strategies."""
    texts = generator.generate([messages], n=1, temperature=0.0, max_new_tokens=max_new_tokens)[0][:1]
    if strategy != "greedy" and n > 1:
        texts += generator.generate([messages], n=n - 1, temperature=temperature, max_new_tokens=max_new_tokens)[0]
    return texts


def ask(
    question: str,
    db_path: str | Path,
    generator: Any,
    *,
    strategy: str = "greedy",
    n: int = 4,
    temperature: float = 0.8,
    max_new_tokens: int = 128,
    scorer: Any = None,
    judge: Any = None,
    schema_params: Any = None,
    evidence: str = "",
    timeout: float = 5.0,
    max_rows: int = 1000,
) -> Answer:
    """Answer ``question`` over ``db_path``: generate, pick with ``strategy``, run the pick.

    ``generator`` has ``generate(messages_batch, n=, temperature=, max_new_tokens=)`` (see
    :mod:`nl2sql_lib.generate`); ``scorer`` (strategies rm, rm_vote) has ``score(messages, sqls)``.
    """
    from .evaluate.selection import select_greedy, select_runnable_by_score, select_vote, select_weighted_vote
    from .sql.execute import execute_sql
    from .sql.extract import extract_sql
    from .sql.judge import Judge

    if strategy not in STRATEGIES:
        raise AskError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy in RM_STRATEGIES and scorer is None:
        raise AskError(f"strategy {strategy!r} needs a reward model (scorer)")
    if n < 1:
        raise AskError(f"n must be at least 1, got {n}")
    db_path = check_database(db_path)
    messages = question_messages(question, db_path, evidence=evidence, schema_params=schema_params)
    raw = generate_candidates(generator, messages, strategy=strategy, n=n, temperature=temperature,
                              max_new_tokens=max_new_tokens)
    candidates = [extract_sql(text) for text in raw]
    usable = [sql for sql in candidates if sql]
    scores = None
    if not usable:
        sql = ""
    elif strategy == "greedy":
        sql = select_greedy(usable)
    elif strategy == "vote":
        sql = select_vote(usable, db_path, judge or Judge(timeout=timeout))
    else:
        scores = [float(s) for s in scorer.score(messages, usable, db_path=db_path)]
        if strategy == "rm":
            sql = select_runnable_by_score(usable, scores, db_path, judge or Judge(timeout=timeout))
        else:
            sql = select_weighted_vote(usable, scores, db_path, judge or Judge(timeout=timeout))
    result = execute_sql(db_path, sql, timeout=timeout, max_rows=max_rows) if sql else None
    return Answer(question, strategy, sql, usable, result, scores, raw)


# -------------------------------------------------------------------------------------------
# Printing
# -------------------------------------------------------------------------------------------


def format_answer(answer: Answer, *, rows: int = 10, show_candidates: bool = False) -> str:
    lines = [f"-- strategy: {answer.strategy} ({len(answer.candidates)} candidate(s) with SQL)"]
    if show_candidates or answer.scores is not None:
        for index, sql in enumerate(answer.candidates):
            score = f"  score={answer.scores[index]:+.3f}" if answer.scores is not None else ""
            mark = "*" if sql == answer.sql else " "
            lines.append(f"{mark} [{index}]{score} {sql}")
    if not answer.sql:
        lines.append("SQL: (none: the model's answer contained no SQL)")
        if answer.raw:
            lines.append(f"model said: {answer.raw[0][:300]!r}")
        return "\n".join(lines)
    lines.append(f"SQL: {answer.sql}")
    result = answer.result
    if not result.ok:
        lines.append(f"execution error ({result.error.value}): {result.message}")
        return "\n".join(lines)
    total = len(result.rows)
    shown = result.rows[:rows]
    more = " or more, capped" if result.truncated else ""
    lines.append(f"columns: {' | '.join(result.columns)}")
    lines.append(f"rows: {total}{more} (showing {len(shown)})")
    for row in shown:
        lines.append("  " + " | ".join(_cell(value) for value in row))
    return "\n".join(lines)


def _cell(value: Any, limit: int = 60) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------


def _schema_params(run_dir: str | None) -> Any:
    """The data stage's schema rendering of this run, else the default."""
    from .config import SchemaParams

    if run_dir:
        from .config import RewardModelParams
        from .train.reward_model import data_schema_params

        root = Path(run_dir)
        return data_schema_params(RewardModelParams(output_root=str(root.parent), run=root.name))
    return SchemaParams()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nl2sql_lib.ask",
        description="Ask a (trained) model a question about a SQLite database; prints the SQL and the first rows.",
    )
    parser.add_argument("question", help="the question, in quotes")
    parser.add_argument("--db", required=True, help="path of the .sqlite database")
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct",
                        help="model spec: stage:sft / stage:grpo (with --run-dir), embedded:..., a folder, a hub id")
    parser.add_argument("--run-dir", default=None, help="outputs/<run>: for stage: specs and the run's schema rendering")
    parser.add_argument("--strategy", choices=STRATEGIES, default="greedy")
    parser.add_argument("--n", type=int, default=4, help="candidates for vote, rm and rm_vote")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--reward-model", default="stage:reward_model", help="reward model for --strategy rm / rm_vote")
    parser.add_argument("--evidence", default="", help="an optional hint (BIRD's evidence)")
    parser.add_argument("--rows", type=int, default=10, help="result rows to print")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds the query may run")
    parser.add_argument("--show-candidates", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None, *, generator: Any = None, scorer: Any = None) -> int:
    """CLI entry; ``generator``/``scorer`` may be given (tests) instead of loading models."""
    args = build_parser().parse_args(argv)
    try:
        check_database(args.db)
        if args.n < 1:
            raise AskError(f"--n must be at least 1, got {args.n}")
        schema_params = _schema_params(args.run_dir)
        if generator is None:
            generator = _load_generator(args)
        if args.strategy in RM_STRATEGIES and scorer is None:
            from .scoring import RewardScorer

            scorer = RewardScorer.from_spec(args.reward_model, run_dir=args.run_dir)
        answer = ask(
            args.question, args.db, generator, strategy=args.strategy, n=args.n,
            temperature=args.temperature, max_new_tokens=args.max_new_tokens, scorer=scorer,
            schema_params=schema_params, evidence=args.evidence, timeout=args.timeout,
        )
    except (AskError, FileNotFoundError, ValueError) as exc:  # spec errors are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_answer(answer, rows=args.rows, show_candidates=args.show_candidates))
    return 0 if answer.result is not None and answer.result.ok else 1


def _load_generator(args: argparse.Namespace) -> Any:
    from .config import ModelParams
    from .generate import make_generator

    return make_generator(ModelParams(spec=args.model), run_dir=args.run_dir, batch_size=max(1, args.n),
                          progress=False)


if __name__ == "__main__":
    raise SystemExit(main())
