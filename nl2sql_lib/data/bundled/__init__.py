"""The bundled benchmark: ten generated SQLite databases and 2,300 question/SQL pairs.

Everything runs with no download. :func:`build_bundled` writes the databases deterministically
(same seed, same bytes) and generates BIRD-style questions with difficulty labels and evidence,
each verified by execution. Seven databases form the training split and three the dev split, so
dev databases are never seen in training. :func:`generate_pairs_for_database` applies the same
generator to a user's own SQLite file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..example import Example
from .generate_db import DOMAINS, Domain, build_database, domain
from .own_db import generate_pairs_for_database, open_readonly
from .questions import generate_pairs
from .schema_info import introspect

__all__ = ["BundledBenchmark", "build_bundled", "generate_pairs_for_database", "DOMAINS", "domain",
           "TRAIN_DBS", "DEV_DBS", "questions_for"]

TRAIN_DBS = tuple(d.db_id for d in DOMAINS if d.split == "train")
DEV_DBS = tuple(d.db_id for d in DOMAINS if d.split == "dev")


@dataclass
class BundledBenchmark:
    train: list[Example]
    dev: list[Example]
    db_root: Path
    databases: dict[str, Path] = field(default_factory=dict)

    def stats(self) -> dict:
        """Counts by split, database and difficulty, and the share with evidence."""
        out: dict = {}
        for split, items in (("train", self.train), ("dev", self.dev)):
            by_db: dict[str, int] = {}
            by_diff: dict[str, int] = {}
            for ex in items:
                by_db[ex.db_id] = by_db.get(ex.db_id, 0) + 1
                by_diff[ex.difficulty] = by_diff.get(ex.difficulty, 0) + 1
            out[split] = {"n": len(items), "by_db": by_db, "by_difficulty": by_diff,
                          "with_evidence": sum(1 for ex in items if ex.evidence)}
        return out


def questions_for(item: Domain, db_path: Path, seed: int = 0) -> list[Example]:
    """The verified questions of one bundled database (read-only access to its file)."""
    conn = open_readonly(db_path)
    try:
        schema = introspect(conn, item.annotations)
        schema.measures = list(item.measures)
        drafts = generate_pairs(conn, schema, item.n_questions,
                                seed=f"{seed}:questions:{item.db_id}")
    finally:
        conn.close()
    return [
        Example(question_id=f"bundled-{item.db_id}-{i:04d}", db_id=item.db_id, db_path=str(db_path),
                question=d.question, sql=d.sql, evidence=d.evidence, difficulty=d.difficulty,
                source="bundled", extra={"shape": d.shape, "split": item.split})
        for i, d in enumerate(drafts, 1)
    ]


def build_bundled(out_dir: Path, seed: int = 0) -> BundledBenchmark:
    """Write every bundled database under ``out_dir/<db_id>/<db_id>.sqlite`` and its questions.

    Idempotent: files already present with identical bytes are kept as they are.
    """
    out_dir = Path(out_dir)
    train: list[Example] = []
    dev: list[Example] = []
    databases: dict[str, Path] = {}
    for item in DOMAINS:
        path = build_database(item, out_dir, seed)
        databases[item.db_id] = path
        (train if item.split == "train" else dev).extend(questions_for(item, path, seed))
    return BundledBenchmark(train=train, dev=dev, db_root=out_dir, databases=databases)
