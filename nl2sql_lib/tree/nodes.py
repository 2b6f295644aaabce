"""Records of a revision tree: one :class:`Node` per SQL attempt, one :class:`Tree` per question.

A tree's root nodes are the policy's first answers to the question; every other node is a
revision of its parent, written by the policy after it saw the parent's SQL and that SQL's
execution feedback (never the gold SQL). A node records what the SQL did when executed (error
kind, message, a preview of its rows), whether it is correct against the gold result, and its
token edit distance to its parent and to the gold SQL (on sqlglot-normalized token sequences).

Trees are stored one per line in JSONL (``tree/trees.jsonl``); ``Tree.to_dict`` /
``Tree.from_dict`` are the exact round trip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..io import DataFileError

PREVIEW_ROWS = 3
PREVIEW_CHARS = 200


@dataclass
class Node:
    """One SQL attempt inside a tree. ``id`` is unique within its tree; roots have no parent."""

    id: int
    parent: int | None
    depth: int
    sql: str
    raw: str = ""
    error: str = "ok"  # an ErrorKind value
    message: str = ""
    preview: str = ""  # the first rows of the result, as text
    n_rows: int | None = None
    correct: bool = False
    dist_parent: int | None = None  # token edit distance to the parent's SQL
    dist_gold: int | None = None  # token edit distance to the gold SQL

    @property
    def executes(self) -> bool:
        return self.error == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Node":
        return cls(**record)


@dataclass
class Tree:
    """All attempts at one question. ``gold_sql`` is stored for verification only."""

    question_id: str
    db_id: str
    db_path: str
    gold_sql: str
    question: str = ""
    difficulty: str = "unknown"
    nodes: list[Node] = field(default_factory=list)

    # ---- structure -------------------------------------------------------------------------
    def node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(f"tree {self.question_id}: no node {node_id}")

    def children(self, node_id: int) -> list[Node]:
        return [n for n in self.nodes if n.parent == node_id]

    def roots(self) -> list[Node]:
        return [n for n in self.nodes if n.parent is None]

    def at_depth(self, depth: int) -> list[Node]:
        return [n for n in self.nodes if n.depth == depth]

    @property
    def max_depth(self) -> int:
        return max((n.depth for n in self.nodes), default=-1)

    @property
    def solved(self) -> bool:
        return any(n.correct for n in self.nodes)

    # ---- storage ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any], origin: str = "tree") -> "Tree":
        required = ("question_id", "db_id", "db_path", "gold_sql", "nodes")
        missing = [key for key in required if key not in record]
        if missing:
            raise DataFileError(f"{origin}: missing field(s) {', '.join(missing)}")
        values = dict(record)
        try:
            values["nodes"] = [Node.from_dict(n) for n in record["nodes"]]
        except TypeError as exc:
            raise DataFileError(f"{origin}: a node has unexpected or missing fields: {exc}") from None
        values["question_id"] = str(values["question_id"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise DataFileError(f"{origin}: unexpected fields: {exc}") from None


def structure_problems(tree: Tree) -> list[str]:
    """Structural invariants a stored tree must satisfy; an empty list means it is sound.

    Ids are unique, every parent exists, roots have depth 0 and every other node has its
    parent's depth plus one.
    """
    problems: list[str] = []
    by_id: dict[int, Node] = {}
    for node in tree.nodes:
        if node.id in by_id:
            problems.append(f"node {node.id}: duplicate id")
        by_id[node.id] = node
    for node in tree.nodes:
        if node.parent is None:
            if node.depth != 0:
                problems.append(f"node {node.id}: root with depth {node.depth} (expected 0)")
            continue
        parent = by_id.get(node.parent)
        if parent is None:
            problems.append(f"node {node.id}: parent {node.parent} does not exist")
        elif node.depth != parent.depth + 1:
            problems.append(
                f"node {node.id}: depth {node.depth} but parent {parent.id} has depth {parent.depth}"
            )
    return problems


def result_preview(rows: tuple | None, max_rows: int = PREVIEW_ROWS, max_chars: int = PREVIEW_CHARS) -> str:
    """A short text of a result's first rows, stored on the node for reading trees by eye."""
    if rows is None:
        return ""
    text = "; ".join(repr(tuple(row)) for row in rows[:max_rows])
    if len(rows) > max_rows:
        text += f"; ... ({len(rows)} rows)"
    return text[:max_chars]


def resolve_db_path(db_id: str, stored_path: str, db_root: str | Path | None = None) -> Path:
    """Where a tree's database is: under ``db_root`` when given, else the stored path.

    ``db_root`` may hold ``<db_id>/<db_id>.sqlite`` (bundled, Spider, BIRD layout) or
    ``<db_id>.sqlite``; the stored path's file name is tried last.
    """
    if db_root is None:
        return Path(stored_path)
    root = Path(db_root)
    candidates = [
        root / db_id / f"{db_id}.sqlite",
        root / f"{db_id}.sqlite",
        root / db_id / Path(stored_path).name,
        root / Path(stored_path).name,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]  # execution then reports missing_db naming this path
