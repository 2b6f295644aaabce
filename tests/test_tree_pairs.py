"""Pair extraction rules on hand-built trees, and the split by question."""

from __future__ import annotations

import pytest

from nl2sql_lib.tree.nodes import Node, Tree
from nl2sql_lib.tree.pairs import PairRules, pair_stats, pairs_for_trees, select_pairs, split_by_question

CORRECT = "SELECT name FROM items WHERE price < 10"


def node(i, parent, sql, correct, error="ok"):
    depth = 0 if parent is None else 1
    return Node(id=i, parent=parent, depth=depth, sql=sql, error=error, correct=correct)


def hand_tree(qid="q") -> Tree:
    """Roots 0 (wrong), 1 (correct), 4 (near miss), 5 (empty), 6 (= 0 re-spaced); 2, 3 revise 0."""
    return Tree(
        question_id=qid, db_id="shop", db_path="x.sqlite", gold_sql=CORRECT, difficulty="simple",
        nodes=[
            node(0, None, "SELECT name FROM items", False),
            node(1, None, CORRECT, True),
            node(2, 0, "select name from items where price < 10", True),  # same query as 1
            node(3, 0, "SELECT nme FROM items", False, error="no_such_column"),
            node(4, None, "SELECT name FROM items WHERE price > 10", False),
            node(5, None, "", False, error="empty"),
            node(6, None, "SELECT name  FROM items", False),  # same query as 0
        ],
    )


def brief(pairs):
    return [(p["reason"], p["chosen_node"], p["rejected_node"]) for p in pairs]


def test_rules_in_order_with_dedupe_and_no_empty_sql():
    pairs = select_pairs(hand_tree(), PairRules(hard_negative_max_distance=2))
    # revision: 0 -> its correct revision 2 (whose query node 1 represents); hard negative: 4 is
    # one token from 1; other: the rest. 5 (empty) and 6 (a duplicate of 0) never appear.
    assert brief(pairs) == [("revision", 1, 0), ("hard_negative", 1, 4), ("other", 1, 3)]
    assert [p["distance"] for p in pairs] == [4, 1, 5]
    assert pairs[0]["chosen"] == CORRECT + ";" and pairs[0]["rejected"] == "SELECT name FROM items;"
    assert [p["margin"] for p in pairs] == [1.0, 1.0, 2.0]  # 3 does not execute
    assert all(p["question_id"] == "q" and p["difficulty"] == "simple" for p in pairs)


def test_max_pairs_per_question_and_rule_selection():
    assert brief(select_pairs(hand_tree(), PairRules(max_pairs_per_question=2, hard_negative_max_distance=2))) == [
        ("revision", 1, 0), ("hard_negative", 1, 4)
    ]
    assert brief(select_pairs(hand_tree(), PairRules(rules=("hard_negative",), hard_negative_max_distance=2))) == [
        ("hard_negative", 1, 4)
    ]
    # A wider hard-negative radius takes 0 and 3 too, closest first.
    assert brief(select_pairs(hand_tree(), PairRules(rules=("hard_negative",), hard_negative_max_distance=10))) == [
        ("hard_negative", 1, 4), ("hard_negative", 1, 0), ("hard_negative", 1, 3)
    ]
    with pytest.raises(ValueError, match="unknown rule"):
        PairRules(rules=("nearest",))


def test_no_pairs_without_both_sides_and_ambiguous_queries_are_left_out():
    tree = hand_tree()
    for n in tree.nodes:
        n.correct = False
    assert select_pairs(tree, PairRules()) == []
    tree = hand_tree()
    tree.nodes[4].correct = True  # only correct answers left besides ...
    tree.nodes.append(node(7, None, "SELECT name FROM items WHERE price > 10", False))  # ... a conflict
    pairs = select_pairs(tree, PairRules(hard_negative_max_distance=2))
    assert all(4 not in (p["chosen_node"], p["rejected_node"]) and p["rejected_node"] != 7 for p in pairs)


def test_pairs_for_trees_attaches_the_prompt():
    prompt = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    pairs = pairs_for_trees([hand_tree("a"), hand_tree("b")], PairRules(), lambda qid: prompt + [{"q": qid}])
    assert {p["question_id"] for p in pairs} == {"a", "b"}
    assert all(p["prompt"][-1] == {"q": p["question_id"]} for p in pairs)
    stats = pair_stats(pairs)
    assert stats["pairs"] == len(pairs) and stats["questions"] == 2
    assert stats["by_rejected_error"]["no_such_column"] == 2


def test_split_is_by_question_never_by_pair():
    pairs = [{"question_id": f"q{i}", "k": k} for i in range(10) for k in range(3)]
    train, test = split_by_question(pairs, 0.2, seed=1)
    train_q, test_q = {p["question_id"] for p in train}, {p["question_id"] for p in test}
    assert len(test_q) == 2 and len(train_q) == 8 and not train_q & test_q
    assert len(train) + len(test) == 30 and len(test) == 6
    assert split_by_question(pairs, 0.2, seed=1) == (train, test)  # deterministic
    one = [{"question_id": "only"}]
    assert split_by_question(one, 0.5) == (one, [])
