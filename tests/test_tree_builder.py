"""Tree growth with a scripted policy (exact structure) and with the tiny smoke model."""

from __future__ import annotations

import pytest

from nl2sql_lib.data.prompts import sql_messages
from nl2sql_lib.sql.judge import Judge
from nl2sql_lib.sql.parse import token_edit_distance
from nl2sql_lib.tree.builder import BuildSettings, ScriptedPolicy, build_trees
from nl2sql_lib.tree.nodes import Tree, structure_problems
from tests.test_tree_support import QUESTIONS, make_shop_db, schema_text, shop_examples

SCRIPT = ScriptedPolicy(
    roots={
        QUESTIONS["q1"][0]: ["SELECT count(*) FROM item", "SELECT count(*) FROM items"],
        QUESTIONS["q2"][0]: ["SELECT name FROM items ORDER BY price LIMIT 1"] * 2,
    },
    revisions={
        "SELECT count(*) FROM item": ["SELECT count(id) FROM items", "SELECT id FROM items"],
        "SELECT id FROM items": ["SELECT max(id) FROM items"],
        "SELECT name FROM items ORDER BY price LIMIT 1": [
            "SELECT nme FROM items",
            "```sql\nSELECT name FROM items ORDER BY price DESC LIMIT 1;\n```",
        ],
        "SELECT nme FROM items": ["SELECT name FROM items"],
    },
)


class Recording:
    """Wrap a policy and keep every prompt it was given."""

    def __init__(self, policy):
        self.policy, self.prompts = policy, []

    def __call__(self, messages_batch, n, temperature):
        self.prompts += messages_batch
        return self.policy(messages_batch, n, temperature)


def shape(tree: Tree) -> list[tuple]:
    return [(n.id, n.parent, n.depth, n.sql, n.error, n.correct) for n in tree.nodes]


@pytest.fixture()
def built(tmp_path):
    db = make_shop_db(tmp_path)
    policy = Recording(ScriptedPolicy(roots=SCRIPT.roots, revisions=SCRIPT.revisions))
    settings = BuildSettings(num_roots=2, num_revisions=2, max_depth=2, chunk_questions=8)
    finished = []
    trees = build_trees(shop_examples(db), policy, Judge(), schema_text, settings, on_tree=finished.append)
    return trees, policy, finished


def test_scripted_trees_have_exactly_the_expected_structure(built):
    trees, policy, finished = built
    q1, q2, q3 = trees
    assert [t.question_id for t in trees] == ["q1", "q2", "q3"] and finished == trees
    assert shape(q1) == [
        (0, None, 0, "SELECT count(*) FROM item", "no_such_table", False),
        (1, None, 0, "SELECT count(*) FROM items", "ok", True),
        (2, 0, 1, "SELECT count(id) FROM items", "ok", True),
        (3, 0, 1, "SELECT id FROM items", "ok", False),
        # max(id) = 3 = count(*): judged by result, not by text
        (4, 3, 2, "SELECT max(id) FROM items", "ok", True),
        (5, 3, 2, "SELECT max(id) FROM items", "ok", True),
    ]
    # Duplicate wrong roots are revised once (expand_duplicates=False); the fenced answer is
    # extracted; depth-2 nodes are leaves.
    assert shape(q2) == [
        (0, None, 0, "SELECT name FROM items ORDER BY price LIMIT 1", "ok", False),
        (1, None, 0, "SELECT name FROM items ORDER BY price LIMIT 1", "ok", False),
        (2, 0, 1, "SELECT nme FROM items", "no_such_column", False),
        (3, 0, 1, "SELECT name FROM items ORDER BY price DESC LIMIT 1", "ok", True),
        (4, 2, 2, "SELECT name FROM items", "ok", False),
        (5, 2, 2, "SELECT name FROM items", "ok", False),
    ]
    assert q2.nodes[3].raw.startswith("```sql")
    # An unscripted question gets "SELECT 1" everywhere: its repeated wrong SQL is revised once.
    assert shape(q3) == [
        (0, None, 0, "SELECT 1", "ok", False),
        (1, None, 0, "SELECT 1", "ok", False),
        (2, 0, 1, "SELECT 1", "ok", False),
        (3, 0, 1, "SELECT 1", "ok", False),
    ]
    for tree in trees:
        assert structure_problems(tree) == []


def test_distances_and_outcomes_are_recorded(built):
    q1 = built[0][0]
    assert q1.nodes[2].dist_parent == 2  # count(*) FROM item -> count(id) FROM items
    assert q1.nodes[0].dist_parent is None
    for node in q1.nodes:
        assert node.dist_gold == token_edit_distance(node.sql, QUESTIONS["q1"][1])
    assert q1.nodes[3].n_rows == 3 and "(1,)" in q1.nodes[3].preview
    assert q1.nodes[0].message == "no such table: item"


def test_generation_is_batched_across_questions_one_call_per_depth(built):
    _, policy, _ = built
    # roots of all three questions, then the wrong nodes of each depth across questions
    assert policy.policy.calls == [(3, 2), (3, 2), (2, 2)]


def test_prompts_never_contain_the_gold_sql_and_revisions_carry_feedback(built, tmp_path):
    trees, policy, _ = built
    texts = ["\n".join(m["content"] for m in messages) for messages in policy.prompts]
    for _, gold in QUESTIONS.values():
        assert not any(gold in text for text in texts)
    examples = shop_examples(tmp_path / "shop" / "shop.sqlite")
    assert policy.prompts[:3] == [sql_messages(e, schema_text(e)) for e in examples]
    revision_q1 = texts[3]
    assert "SELECT count(*) FROM item" in revision_q1 and "no_such_table" in revision_q1
    revision_q2_depth2 = next(t for t in texts if "SELECT nme FROM items" in t)
    assert "no_such_column" in revision_q2_depth2


def test_max_depth_zero_builds_roots_only(tmp_path):
    db = make_shop_db(tmp_path)
    trees = build_trees(
        shop_examples(db), ScriptedPolicy(roots=SCRIPT.roots), Judge(), schema_text,
        BuildSettings(num_roots=3, max_depth=0),
    )
    assert [len(t.nodes) for t in trees] == [3, 3, 3]
    assert all(n.parent is None and n.depth == 0 for t in trees for n in t.nodes)


def test_chunks_hand_trees_over_as_they_finish(tmp_path):
    db = make_shop_db(tmp_path)
    policy = ScriptedPolicy(roots=SCRIPT.roots, revisions=SCRIPT.revisions)
    seen = []
    build_trees(
        shop_examples(db), policy, Judge(), schema_text,
        BuildSettings(num_roots=2, num_revisions=1, max_depth=1, chunk_questions=2),
        on_tree=lambda t: seen.append((t.question_id, len(policy.calls))),
    )
    # chunk 1 (q1, q2) finished after 2 calls, chunk 2 (q3) after 2 more
    assert seen == [("q1", 2), ("q2", 2), ("q3", 4)]


@pytest.mark.slow
def test_smoke_model_builds_sound_trees(tmp_path):
    from nl2sql_lib.config import ModelParams
    from nl2sql_lib.generate import make_generator
    from nl2sql_lib.tree.builder import model_policy
    from nl2sql_lib.tree.verify import verify_trees

    db = make_shop_db(tmp_path)
    generator = make_generator(ModelParams(spec="tiny:smollm2"), batch_size=4, progress=False)
    policy = model_policy(generator, max_new_tokens=12)
    settings = BuildSettings(num_roots=2, num_revisions=2, max_depth=1, temperature=1.0)
    trees = build_trees(shop_examples(db, ids=("q1", "q2")), policy, Judge(), schema_text, settings)
    assert [t.question_id for t in trees] == ["q1", "q2"]
    for tree in trees:
        roots = tree.roots()
        assert len(roots) == 2 and all(isinstance(n.raw, str) for n in tree.nodes)
        wrong_distinct = {n.sql for n in roots if not n.correct}
        # every distinct wrong root got exactly K=2 revisions at depth 1, nothing deeper
        assert len(tree.at_depth(1)) == 2 * len(wrong_distinct)
        assert tree.max_depth <= 1 and structure_problems(tree) == []
    report = verify_trees(trees)
    assert report["ok"], report["discrepancies"]
