"""The one record type every dataset becomes.

An :class:`Example` is one question over one SQLite database. BIRD, Spider, sql-create-context
(whose CREATE TABLE context is materialized into a database file) and the bundled benchmark all
load into it, and ``data/train.jsonl`` / ``data/dev.jsonl`` hold one per line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from ..io import DataFileError, iter_jsonl, write_jsonl

# Difficulty labels as the sources spell them. BIRD and the bundled benchmark use the first
# three; Spider's hardness levels are the last four.
DIFFICULTIES = ("simple", "moderate", "challenging", "easy", "medium", "hard", "extra")


@dataclass
class Example:
    question_id: str
    db_id: str
    db_path: str
    question: str
    sql: str
    evidence: str = ""
    difficulty: str = "unknown"
    source: str = ""
    reasoning: str | None = None
    # {"tables": ["t1", ...], "columns": ["t1.c1", ...]} derived from the gold SQL by sqlglot
    schema_links: dict[str, list[str]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any], origin: str = "record") -> "Example":
        known = {f.name for f in fields(cls)}
        required = ("question_id", "db_id", "db_path", "question", "sql")
        missing = [name for name in required if name not in record]
        if missing:
            raise DataFileError(f"{origin}: missing field(s) {', '.join(missing)}")
        unknown = set(record) - known
        if unknown:
            raise DataFileError(
                f"{origin}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        values = dict(record)
        values["question_id"] = str(values["question_id"])
        return cls(**values)


def read_examples(path: str | Path) -> list[Example]:
    examples = []
    for number, record in enumerate(iter_jsonl(path), start=1):
        examples.append(Example.from_dict(record, origin=f"{path}: line {number}"))
    return examples


def write_examples(path: str | Path, examples: Iterable[Example]) -> Path:
    return write_jsonl(path, examples)
