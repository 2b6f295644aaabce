"""Revision trees (ReSQLver-style): a policy revises its own wrong SQL with execution feedback.

    nodes.py    Node / Tree records, structural invariants
    builder.py  the policy protocol, ScriptedPolicy, model_policy, build_trees (batched per depth)
    pairs.py    preference pairs: the documented rules, the split by question
    shards.py   one worker process per shard, fsync'ed appends, resume, validating merge
    verify.py   re-execution of every node and pair (``python -m nl2sql_lib.tree.verify``)
    stage.py    run_tree(cfg, stage): the 04_revision_tree stage

Submodules are imported where used (``from nl2sql_lib.tree.stage import run_tree``) so that
``python -m nl2sql_lib.tree.verify`` and spawned shard workers stay light.
"""
