"""Grow revision trees: roots from the policy, K revisions under every wrong node, to a depth.

The builder only talks to a *policy*: any callable

    policy(messages_batch: list[list[dict]], n: int, temperature: float) -> list[list[str]]

that returns ``n`` texts per chat prompt. :func:`model_policy` adapts a model generator
(``nl2sql_lib.generate``) to it; :class:`ScriptedPolicy` answers from a table, which pins the
tree logic down exactly in tests.

Questions are processed in chunks: all root prompts of a chunk go to the policy in one call,
then all revision prompts of each depth, so generation is batched across questions. A finished
tree is handed to ``on_tree`` at once (the shard writer appends it to disk).

What a revision prompt holds: the question, the schema, the node's SQL and its execution
feedback (the error, or a preview of its result). Never the gold SQL, and never the verdict: the
policy only learns that the answer was not accepted, as it would from a user at inference time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

from ..data.example import Example
from .nodes import Node, Tree, result_preview

Messages = list[dict[str, str]]


class Policy(Protocol):
    def __call__(self, messages_batch: list[Messages], n: int, temperature: float) -> list[list[str]]:
        ...


@dataclass
class BuildSettings:
    """The knobs of tree growth (taken from TreeParams by :meth:`from_params`)."""

    num_roots: int = 4
    num_revisions: int = 2
    max_depth: int = 2
    temperature: float = 0.8
    chunk_questions: int = 8
    expand_duplicates: bool = False  # revise a wrong SQL seen before in the same tree again?
    feedback_rows: int = 5
    reasoning: bool = False  # root prompts ask for <think>...</think> first (a reasoning-SFT policy)

    @classmethod
    def from_params(cls, params: Any) -> "BuildSettings":
        return cls(
            num_roots=params.num_roots,
            num_revisions=params.num_revisions,
            max_depth=params.max_depth,
            temperature=params.temperature,
            chunk_questions=params.batch_size,
            expand_duplicates=getattr(params, "expand_duplicates", False),
        )


# ---------------------------------------------------------------------------------------------
# Judging one SQL
# ---------------------------------------------------------------------------------------------


def sql_distance(a: str, b: str) -> int:
    """Token edit distance between two SQLs on sqlglot-normalized token sequences."""
    from ..sql.parse import token_edit_distance

    return int(token_edit_distance(a or "", b or ""))


def judge_node(node: Node, judge: Any, db_path: str, gold_sql: str, parent_sql: str | None):
    """Execute ``node.sql``, fill in its outcome, correctness and distances; return the ExecResult."""
    verdict = judge.judge(db_path, gold_sql, node.sql)
    result = verdict.pred
    node.error = getattr(result.error, "value", str(result.error))
    node.message = (result.message or "")[:300]
    node.preview = result_preview(result.rows)
    node.n_rows = None if result.rows is None else len(result.rows)
    node.correct = bool(verdict.correct)
    node.dist_gold = sql_distance(node.sql, gold_sql)
    node.dist_parent = None if parent_sql is None else sql_distance(node.sql, parent_sql)
    return result


# ---------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------


def model_policy(generator: Any, max_new_tokens: int) -> Policy:
    """Adapt a ``Generator`` (``generate(messages_batch, n=, temperature=, max_new_tokens=)``)."""

    def policy(messages_batch: list[Messages], n: int, temperature: float) -> list[list[str]]:
        return generator.generate(
            messages_batch, n=n, temperature=temperature, max_new_tokens=max_new_tokens
        )

    return policy


@dataclass
class ScriptedPolicy:
    """A policy that answers from a table: for tests, demos and exact expectations.

    ``roots`` maps a question text to the root answers; ``revisions`` maps a previous SQL to the
    answers given when asked to revise it. A prompt is matched by substring: the longest
    ``revisions`` key found in the prompt's text makes it a revision prompt, otherwise the
    question found in it picks the roots. Answers cycle when fewer than ``n`` are scripted;
    ``default`` answers anything unscripted. ``delay`` sleeps per call (to test interruption).
    Picklable, so it also drives spawned shard workers.
    """

    roots: dict[str, list[str]]
    revisions: dict[str, list[str]] = field(default_factory=dict)
    default: str = "SELECT 1"
    delay: float = 0.0
    calls: list[tuple[int, int]] = field(default_factory=list)  # (prompts, n) per call

    def __call__(self, messages_batch: list[Messages], n: int, temperature: float) -> list[list[str]]:
        self.calls.append((len(messages_batch), n))
        if self.delay:
            time.sleep(self.delay)
        return [self._answer(messages, n) for messages in messages_batch]

    def _answer(self, messages: Messages, n: int) -> list[str]:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        revised = [sql for sql in self.revisions if sql and sql in text]
        if revised:
            answers = self.revisions[max(revised, key=len)]
        else:
            found = [q for q in self.roots if q in text]
            answers = self.roots[max(found, key=len)] if found else [self.default]
        answers = answers or [self.default]
        return [answers[i % len(answers)] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------


@dataclass
class _Growing:
    """A tree under construction plus what the revision prompts need (kept out of the file)."""

    example: Example
    schema_text: str
    tree: Tree
    results: dict[int, Any] = field(default_factory=dict)  # node id -> ExecResult
    seen_wrong: set[str] = field(default_factory=set)  # normalized SQL of expanded wrong nodes

    def add(self, parent: Node | None, raw: str, judge: Any, extract: Callable[[str], str]) -> Node:
        node = Node(
            id=len(self.tree.nodes),
            parent=None if parent is None else parent.id,
            depth=0 if parent is None else parent.depth + 1,
            sql=extract(raw),
            raw=raw,
        )
        self.results[node.id] = judge_node(
            node, judge, self.example.db_path, self.example.sql, None if parent is None else parent.sql
        )
        self.tree.nodes.append(node)
        return node


def _normalized(sql: str) -> str:
    from ..sql.parse import normalize_sql

    try:
        return normalize_sql(sql)
    except Exception:  # normalize_sql should not raise; a raw string is a fine fallback key
        return " ".join(sql.split()).lower()


def build_trees(
    examples: Sequence[Example],
    policy: Policy,
    judge: Any,
    schema_text_for: Callable[[Example], str],
    settings: BuildSettings,
    on_tree: Callable[[Tree], None] | None = None,
) -> list[Tree]:
    """Grow one tree per example; call ``on_tree`` as each chunk's trees are finished."""
    trees: list[Tree] = []
    for start in range(0, len(examples), settings.chunk_questions):
        chunk = examples[start : start + settings.chunk_questions]
        for tree in _build_chunk(chunk, policy, judge, schema_text_for, settings):
            if on_tree is not None:
                on_tree(tree)
            trees.append(tree)
    return trees


def _build_chunk(
    chunk: Iterable[Example],
    policy: Policy,
    judge: Any,
    schema_text_for: Callable[[Example], str],
    settings: BuildSettings,
) -> list[Tree]:
    from ..data.prompts import execution_feedback, revision_messages, sql_messages
    from ..sql.extract import extract_sql

    growing = []
    for example in chunk:
        tree = Tree(
            question_id=example.question_id,
            db_id=example.db_id,
            db_path=example.db_path,
            gold_sql=example.sql,
            question=example.question,
            difficulty=example.difficulty,
        )
        growing.append(_Growing(example, schema_text_for(example), tree))

    # Depth 0: all roots of the chunk in one policy call.
    prompts = [sql_messages(g.example, g.schema_text, reasoning=settings.reasoning) for g in growing]
    outputs = policy(prompts, settings.num_roots, settings.temperature) if prompts else []
    frontier: list[tuple[_Growing, Node]] = []
    for g, texts in zip(growing, outputs, strict=True):
        for raw in texts:
            frontier.append((g, g.add(None, raw, judge, extract_sql)))

    # Depths 1..max_depth: revise every wrong node of the level below, batched over questions.
    for _depth in range(1, settings.max_depth + 1):
        to_revise = []
        for g, node in frontier:
            if node.correct:
                continue
            key = _normalized(node.sql)
            if not settings.expand_duplicates and key in g.seen_wrong:
                continue
            g.seen_wrong.add(key)
            to_revise.append((g, node))
        if not to_revise:
            break
        prompts = [
            revision_messages(
                g.example,
                g.schema_text,
                node.sql,
                execution_feedback(g.results[node.id], max_rows=settings.feedback_rows),
            )
            for g, node in to_revise
        ]
        outputs = policy(prompts, settings.num_revisions, settings.temperature)
        frontier = []
        for (g, parent), texts in zip(to_revise, outputs, strict=True):
            for raw in texts:
                frontier.append((g, g.add(parent, raw, judge, extract_sql)))
    return [g.tree for g in growing]
