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

from pathlib import Path
from typing import Any, Sequence

from ..config import TreeParams
from ..data.example import Example, read_examples
from ..generate import EngineContext
from ..io import write_json, write_jsonl
from .. import runs
from ..sampling import seeded_subsample
from ..runs import StageRun, require_output
from .builder import BuildSettings, Policy
from .nodes import Tree
from .pairs import PairRules, pair_stats, pairs_for_trees, split_by_question
from .shards import ModelPolicySource, SchemaTextSource, local_gpu_devices, merge_shards, read_trees, run_sharded
from .verify import verify_trees


# The one seeded-subsample rule (nl2sql_lib/sampling.py); the old name stays for callers.
subsample = seeded_subsample


def _policy_stage_metrics(cfg: TreeParams) -> dict[str, Any]:
    """metrics.json of the stage whose model is the policy (``stage:sft`` -> sft/), or {}."""
    return runs.policy_stage_metrics(cfg, cfg.policy.spec)


# The schema rendering the policy was trained with (see runs.schema_params_for).
schema_params_for = runs.schema_params_for


def policy_uses_reasoning(cfg: TreeParams) -> bool:
    """True when the policy's stage trained the reasoning format (<think>...</think> then SQL)."""
    return _policy_stage_metrics(cfg).get("format") == "reasoning"


def model_policy_source(cfg: TreeParams, examples: Sequence[Example] = (), schema: "SchemaTextSource | None" = None,
                        *, reasoning: bool = False) -> ModelPolicySource:
    """How each worker builds its model policy (one GPU per worker when there are GPUs).

    With vLLM, the engine's context is sized from these ``examples``' prompts (see
    :func:`engine_context`).
    """
    context = None
    if cfg.use_vllm and examples and schema is not None:
        context = engine_context(cfg, examples, schema, reasoning=reasoning)
    source = ModelPolicySource(
        model=cfg.policy.model_dump(mode="json"),
        run_dir=str(cfg.run_dir),
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        use_vllm=cfg.use_vllm,
        devices=local_gpu_devices(),
        seed=cfg.seed,
        context=context,
    )
    return source


def engine_context(cfg: TreeParams, examples: Sequence[Example], schema: "SchemaTextSource", *,
                   reasoning: bool = False) -> EngineContext:
    """What vLLM's ``max_model_len`` must hold in this stage: every root prompt, and every
    revision prompt, which is known only as a frame here (the question and schema with an empty
    previous SQL and feedback). The headroom covers what fills the frame later: the previous SQL
    (at most ``max_new_tokens``) and its execution feedback (at most 300 characters)."""
    from ..data.prompts import revision_headroom_tokens, revision_messages, sql_messages

    prompts = []
    for example in examples:
        schema_text = schema(example)
        prompts.append(sql_messages(example, schema_text, reasoning=reasoning))
        prompts.append(revision_messages(example, schema_text, "", ""))
    headroom = revision_headroom_tokens(cfg.max_new_tokens) if cfg.max_depth > 0 else 0
    return EngineContext(prompts=prompts, max_new_tokens=cfg.max_new_tokens, headroom_tokens=headroom)


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
    trees: Sequence[Tree], examples: Sequence[Example], cfg: TreeParams, schema: SchemaTextSource,
    *, reasoning: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pairs of all trees with the SFT prompt attached, split (train, test) by question."""
    from ..data.prompts import sql_messages

    by_id = {e.question_id: e for e in examples}

    def prompt_for(question_id: str) -> list[dict[str, str]]:
        example = by_id[question_id]
        return sql_messages(example, schema(example), reasoning=reasoning)

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
    settings = BuildSettings.from_params(cfg)
    settings.reasoning = policy_uses_reasoning(cfg)
    source: Any = policy if policy is not None else model_policy_source(
        cfg, examples, schema, reasoning=settings.reasoning)

    with stage.timer("build"):
        paths = run_sharded(
            examples,
            source,
            settings,
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
        train, test = build_pairs(trees, examples, cfg, schema, reasoning=settings.reasoning)
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


# ---------------------------------------------------------------------------------------------
# Figures (used by the notebook)
# ---------------------------------------------------------------------------------------------


def pick_tree(trees: Sequence[Tree]) -> Tree | None:
    """A tree worth drawing: one where a revision repaired a wrong node, else the biggest."""
    repaired = [
        t for t in trees
        if any(n.correct and n.parent is not None and not t.node(n.parent).correct for n in t.nodes)
    ]
    pool = repaired or list(trees)
    return max(pool, key=lambda t: (len(t.nodes), t.question_id), default=None)


def _layered_positions(tree: Tree) -> dict[int, tuple[float, float]]:
    """A tidy layered layout: leaves spread left to right, a parent centred over its children."""
    positions: dict[int, tuple[float, float]] = {}
    next_x = [0.0]

    def place(node_id: int, depth: int) -> float:
        children = tree.children(node_id)
        if children:
            xs = [place(c.id, depth + 1) for c in children]
            x = sum(xs) / len(xs)
        else:
            x, next_x[0] = next_x[0], next_x[0] + 1.0
        positions[node_id] = (x, -depth)
        return x

    for root in tree.roots():
        place(root.id, 0)
    return positions


def draw_tree(tree: Tree, ax=None):
    """Nodes coloured by outcome (correct / wrong result / error), edges labelled with distance."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    positions = _layered_positions(tree)
    if ax is None:
        width = max(6.0, 0.9 * (1 + max((x for x, _ in positions.values()), default=0)))
        _, ax = plt.subplots(figsize=(min(width, 18), 1.8 * (tree.max_depth + 2)))
    colours = {"correct": "#2e9d4f", "wrong": "#f0a030", "error": "#d23c3c"}

    def colour(node) -> str:
        return colours["correct"] if node.correct else colours["wrong" if node.executes else "error"]

    for node in tree.nodes:
        if node.parent is None or node.parent not in positions:
            continue
        (x0, y0), (x1, y1) = positions[node.parent], positions[node.id]
        ax.plot([x0, x1], [y0, y1], color="#999999", zorder=1)
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, str(node.dist_parent), fontsize=8, ha="center",
                va="center", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"}, zorder=2)
    for node in tree.nodes:
        x, y = positions[node.id]
        ax.scatter([x], [y], s=380, color=colour(node), edgecolors="black", zorder=3)
        ax.text(x, y, str(node.id), ha="center", va="center", fontsize=8, color="white", zorder=4)
    ax.legend(
        handles=[Line2D([], [], marker="o", ls="", color=c, markeredgecolor="black", markersize=10, label=k)
                 for k, c in (("correct", colours["correct"]), ("wrong result", colours["wrong"]),
                              ("does not execute", colours["error"]))],
        loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False,
    )
    ax.set_yticks([-d for d in range(tree.max_depth + 1)], [f"depth {d}" for d in range(tree.max_depth + 1)])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{tree.question_id}: {tree.question[:90]}\n(edge label: token edit distance to the parent)",
                 fontsize=10)
    ax.margins(x=0.08, y=0.2)
    return ax


def plot_repair_by_depth(repair: dict[str, dict[str, Any]], ax=None):
    """Bars: root accuracy at depth 0, repair rate and revision accuracy at each revision depth."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    depths = sorted(repair, key=int)
    labels, values, colours = [], [], []
    for d in depths:
        row = repair[d]
        if d == "0":
            labels.append("roots\naccuracy"), values.append(row["accuracy"]), colours.append("#4c72b0")
            continue
        labels.append(f"depth {d}\nrepair rate"), values.append(row["repair_rate"] or 0), colours.append("#2e9d4f")
        labels.append(f"depth {d}\nrevision acc."), values.append(row["revision_accuracy"] or 0)
        colours.append("#8fd19e")
    bars = ax.bar(range(len(values)), values, color=colours)
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.01, f"{value:.0%}", ha="center", fontsize=8)
    ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_ylim(0, max([*values, 0.1]) * 1.25)
    ax.set_ylabel("fraction")
    ax.set_title("How often revision repairs a wrong answer")
    return ax


def node_table(tree: Tree):
    """The nodes of one tree as a DataFrame (for display)."""
    import pandas as pd

    return pd.DataFrame(
        [{"id": n.id, "parent": n.parent, "depth": n.depth, "correct": n.correct, "error": n.error,
          "d_parent": n.dist_parent, "d_gold": n.dist_gold, "sql": n.sql, "result": n.preview or n.message}
         for n in tree.nodes]
    ).set_index("id")


# ---------------------------------------------------------------------------------------------
# The manifest's figures (the command line: tree/__main__.py; the notebook:
# notebooks/src/04_revision_tree.py)
# ---------------------------------------------------------------------------------------------

HEADLINE_KEYS = ("questions", "nodes", "correct_nodes", "questions_solved_at_root", "questions_solved",
                 "questions_solved_only_by_revision", "questions_never_solved", "pairs_train", "pairs_test",
                 "build_seconds", "verification")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures 04_revision_tree's manifest records, from the notebook and the command line
    alike: the counts, the pairs and the verification's verdict; the rest (repair by depth,
    pair statistics, node errors) stays in tree/metrics.json."""
    return {key: metrics[key] for key in HEADLINE_KEYS if key in metrics}
