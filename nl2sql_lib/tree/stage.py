"""The 04_revision_tree stage: trees of self-revision -> preference pairs -> verification.

    metrics = run_tree(cfg, stage)      # cfg: TreeParams, stage: StageRun(cfg, "tree")

Reads ``data/train.jsonl`` (a seeded subsample of ``max_questions``), grows one tree per
question with the policy ``cfg.policy`` (default: the SFT adapter of this run) in
``cfg.workers`` shards under ``tree/shards/`` (resumable), and writes

    tree/trees.jsonl         one tree a line (nodes, outcomes, correctness, distances)
    tree/pairs_train.jsonl   preference pairs of the training questions
    tree/pairs_test.jsonl    pairs of held-out questions (split by question, never by pair)
    tree/verification.json   re-execution of every node and pair (see tree/verify.py)
    tree/metrics.json        the metrics returned (repair rate by depth, counts, pair stats)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from ..config import SchemaParams, TreeParams
from ..data.example import Example, read_examples
from ..io import write_json, write_jsonl
from ..runs import StageRun, require_output
from .builder import BuildSettings, Policy
from .nodes import Tree
from .pairs import PairRules, pair_stats, pairs_for_trees, split_by_question
from .shards import ModelPolicySource, SchemaTextSource, local_gpu_devices, merge_shards, read_trees, run_sharded
from .verify import verify_trees


def subsample(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    """``limit`` examples drawn with ``seed``, kept in their file order (all when no limit)."""
    if limit is None or limit >= len(examples):
        return list(examples)
    keep = set(random.Random(seed).sample(range(len(examples)), limit))
    return [e for i, e in enumerate(examples) if i in keep]


def schema_params_for(cfg: TreeParams) -> SchemaParams:
    """The schema rendering the policy was trained with: cfg's, else the data stage's, else default."""
    if cfg.schema_render is not None:
        return cfg.schema_render
    manifest = cfg.run_dir / "data" / "manifest.json"
    if manifest.is_file():
        from ..io import read_json

        rendered = read_json(manifest).get("parameters", {}).get("schema_render")
        if rendered:
            return SchemaParams(**rendered)
    return SchemaParams()


def model_policy_source(cfg: TreeParams) -> ModelPolicySource:
    """How each worker builds its model policy (one GPU per worker when there are GPUs)."""
    source = ModelPolicySource(
        model=cfg.policy.model_dump(mode="json"),
        run_dir=str(cfg.run_dir),
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        use_vllm=cfg.use_vllm,
        devices=local_gpu_devices(),
        seed=cfg.seed,
    )
    return source


def _policy_fingerprint(cfg: TreeParams) -> str:
    """Changes when the policy's weights may have changed (a re-trained stage), for resume."""
    spec = cfg.policy.spec
    if spec.startswith("stage:"):
        manifest = cfg.run_dir / spec.split(":", 1)[1] / "manifest.json"
        if manifest.is_file():
            return f"{spec}@{manifest.stat().st_mtime_ns}"
    return spec


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def repair_by_depth(trees: Sequence[Tree]) -> dict[str, dict[str, Any]]:
    """How often revision repairs a wrong answer, per depth of the revision.

    For depth d >= 1: ``revised`` wrong nodes at depth d-1 that got revisions, ``repaired`` those
    with at least one correct revision (``repair_rate``), and over the revisions themselves
    ``revisions`` / ``correct`` (``revision_accuracy``). Depth 0 reports the roots' accuracy.
    """
    out: dict[str, dict[str, Any]] = {}
    depth_max = max((t.max_depth for t in trees), default=-1)
    roots = [n for t in trees for n in t.roots()]
    if roots:
        correct = sum(n.correct for n in roots)
        out["0"] = {"roots": len(roots), "correct": correct, "accuracy": round(correct / len(roots), 4)}
    for depth in range(1, depth_max + 1):
        revised = repaired = revisions = correct = 0
        for tree in trees:
            for node in tree.at_depth(depth - 1):
                children = tree.children(node.id)
                if node.correct or not children:
                    continue
                revised += 1
                repaired += any(c.correct for c in children)
                revisions += len(children)
                correct += sum(c.correct for c in children)
        out[str(depth)] = {
            "revised": revised,
            "repaired": repaired,
            "repair_rate": round(repaired / revised, 4) if revised else None,
            "revisions": revisions,
            "correct": correct,
            "revision_accuracy": round(correct / revisions, 4) if revisions else None,
        }
    return out


def tree_stats(trees: Sequence[Tree]) -> dict[str, Any]:
    """Node and question counts: outcomes, solved at the root vs. only after revision."""
    nodes = [n for t in trees for n in t.nodes]
    errors: dict[str, int] = {}
    for node in nodes:
        errors[node.error] = errors.get(node.error, 0) + 1
    solved_root = sum(any(n.correct for n in t.roots()) for t in trees)
    solved = sum(t.solved for t in trees)
    return {
        "questions": len(trees),
        "nodes": len(nodes),
        "correct_nodes": sum(n.correct for n in nodes),
        "nodes_by_depth": {str(d): sum(n.depth == d for n in nodes) for d in sorted({n.depth for n in nodes})},
        "node_errors": dict(sorted(errors.items())),
        "questions_solved_at_root": solved_root,
        "questions_solved": solved,
        "questions_solved_only_by_revision": solved - solved_root,
        "questions_never_solved": len(trees) - solved,
    }


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------


def build_pairs(
    trees: Sequence[Tree], examples: Sequence[Example], cfg: TreeParams, schema: SchemaTextSource
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pairs of all trees with the SFT prompt attached, split (train, test) by question."""
    from ..data.prompts import sql_messages

    by_id = {e.question_id: e for e in examples}

    def prompt_for(question_id: str) -> list[dict[str, str]]:
        example = by_id[question_id]
        return sql_messages(example, schema(example))

    pairs = pairs_for_trees(trees, PairRules.from_params(cfg), prompt_for)
    return split_by_question(pairs, cfg.test_fraction, seed=cfg.seed)


def run_tree(cfg: TreeParams, stage: StageRun, policy: Policy | None = None) -> dict[str, Any]:
    """Build trees, extract and split pairs, verify; write the artifacts; return metrics.

    ``policy`` overrides ``cfg.policy`` (a callable, e.g. a ScriptedPolicy in tests).
    """
    train_path = stage.record_input(require_output(cfg, "data", "train.jsonl"))
    examples = subsample(read_examples(train_path), cfg.max_questions, cfg.seed)
    if not examples:
        raise ValueError(f"{train_path} holds no questions: re-run notebooks/01_data.ipynb")
    schema = SchemaTextSource(schema_params_for(cfg).model_dump(mode="json"))
    source: Any = policy if policy is not None else model_policy_source(cfg)

    with stage.timer("build"):
        paths = run_sharded(
            examples,
            source,
            BuildSettings.from_params(cfg),
            stage.path("shards/run.json").parent,
            workers=cfg.workers,
            schema=schema,
            semantics=cfg.semantics,
            sql_timeout=cfg.sql_timeout,
            resume=cfg.resume,
            fingerprint={"policy_weights": _policy_fingerprint(cfg)} if policy is None else None,
        )
        merged = merge_shards(paths, stage.path("trees.jsonl"), order=[e.question_id for e in examples])
    trees = read_trees(stage.path("trees.jsonl"))

    with stage.timer("pairs"):
        train, test = build_pairs(trees, examples, cfg, schema)
        write_jsonl(stage.path("pairs_train.jsonl"), train)
        write_jsonl(stage.path("pairs_test.jsonl"), test)

    with stage.timer("verify"):
        report = verify_trees(
            trees,
            pairs_files={"pairs_train.jsonl": train, "pairs_test.jsonl": test},
            semantics=cfg.semantics,
            timeout=cfg.sql_timeout,
        )
        report["merge"] = merged
        write_json(stage.path("verification.json"), report)

    metrics = {
        **tree_stats(trees),
        "repair_by_depth": repair_by_depth(trees),
        "pairs_train": len(train),
        "pairs_test": len(test),
        "pair_stats": pair_stats(train + test),
        "verification": {"ok": report["ok"], "discrepancies": len(report["discrepancies"]),
                         "warnings": len(report["warnings"])},
        "merge": {k: (len(v) if isinstance(v, list) else v) for k, v in merged.items()},
        "build_seconds": stage.timings.get("build"),
    }
    write_json(stage.path("metrics.json"), metrics)
    return metrics


def load_stage_trees(run_dir: str | Path) -> list[Tree]:
    """The trees a finished tree stage wrote (for notebooks and later stages)."""
    return read_trees(Path(run_dir) / "tree" / "trees.jsonl")
