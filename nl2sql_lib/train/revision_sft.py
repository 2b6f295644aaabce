"""Optional part of 05_reward_model: fine-tune the policy on revision (``revision_sft: true``).

    metrics = run_revision_sft(cfg, stage)      # when RewardModelParams.revision_sft is true

06_eval's ``+revise`` systems show the policy its failing SQL with the error and take its second
answer. The SFT model never saw such a prompt, and in the spider run it repaired 4 of 612
failing answers. This step teaches the prompt: each training record is a revision prompt
(:func:`nl2sql_lib.data.prompts.revision_messages`: question, schema, the failing SQL, the
error exactly as ``+revise`` renders it) answered with the gold SQL. The failing SQL comes from
two places:

- ``tree``: the policy's own attempts in 04's trees that fail to run (its real mistakes);
- ``perturbed``: gold SQL of a seeded sample of training questions edited until it fails to run
  (:mod:`nl2sql_lib.train.gold_perturbations`; mostly a column that does not exist, the 135M
  model's most common failure), so questions beyond the trees' few dozen teach it too.

Each question also keeps its ordinary record (question -> gold SQL), so the first answers the
policy gives in ``+revise`` do not drift. The result is saved where 06_eval looks for the
system ``revision_sft``: ``outputs/<run>/revision_sft/adapter`` (or ``model``), with its own
manifest, so ``stage:revision_sft`` loads it.
"""

from __future__ import annotations

import gc
import logging
import random
from typing import Any, Sequence

from ..config import REVISION_KEYS, RewardModelParams
from ..io import write_json
from ..runs import StageRun, require_output
from .common import checkpoint_fingerprint, memory_metrics, save_trained, train, trl_config

log = logging.getLogger(__name__)


def _record(prompt: list[dict], sql: str, source: str, question_id: str) -> dict[str, Any]:
    from ..data.prompts import finish_sql

    return {"prompt": prompt, "completion": [{"role": "assistant", "content": finish_sql(sql)}],
            "source": source, "question_id": question_id}


# gold_perturbations: how many kinds of edit it tries, and the margin of a pair whose rejected side fails.
EDIT_KINDS = 8
FAILS_MARGIN = 2.0


def tree_revision_records(trees: Sequence[Any], examples: dict[str, Any], schema_params: Any, *,
                          per_question: int, timeout: float) -> list[dict[str, Any]]:
    """Revision records from the trees' nodes that fail to run: at most ``per_question`` distinct
    failing SQL per question, each re-executed so the error reads as ``+revise`` shows it."""
    from ..data.prompts import failure_feedback, revision_messages
    from ..data.schema import schema_text_for

    records = []
    for tree in trees:
        example = examples.get(tree.question_id)
        if example is None:
            continue
        schema_text = None
        seen: set[str] = set()
        for node in tree.nodes:
            if len(seen) >= per_question:
                break
            if node.executes or node.sql in seen:
                continue
            feedback = failure_feedback(example.db_path, node.sql, timeout=timeout)
            if feedback is None:  # it runs after all (a time limit hit once, say): not a failure
                continue
            seen.add(node.sql)
            schema_text = schema_text or schema_text_for(example, schema_params)
            prompt = revision_messages(example, schema_text, node.sql, feedback)
            records.append(_record(prompt, example.sql, "tree", example.question_id))
    return records


def perturbed_revision_records(examples: Sequence[Any], schema_params: Any, *, per_question: int, seed: int,
                               timeout: float) -> list[dict[str, Any]]:
    """Revision records from gold SQL edited so that it fails to run (the perturbations of
    :func:`nl2sql_lib.train.gold_perturbations.perturbed_gold_pairs` whose result is an error)."""
    from ..data.prompts import failure_feedback, revision_messages
    from ..data.schema import schema_text_for
    from .gold_perturbations import perturbed_gold_pairs

    by_id = {ex.question_id: ex for ex in examples}
    # Every kind of edit, not only per_question of them (there are 8 kinds): most edits still run,
    # and only those that fail are kept.
    pairs = perturbed_gold_pairs(examples, schema_params=schema_params, per_question=EDIT_KINDS, seed=seed,
                                 timeout=timeout)
    records = []
    kept: dict[str, int] = {}
    for pair in pairs:
        example = by_id[pair["question_id"]]
        if pair["margin"] != FAILS_MARGIN or kept.get(example.question_id, 0) >= per_question:
            continue
        # as a model writes it and +revise shows it: no closing semicolon
        failing_sql = pair["rejected"].strip().rstrip(";").strip()
        feedback = failure_feedback(example.db_path, failing_sql, timeout=timeout)
        if feedback is None:
            continue
        kept[example.question_id] = kept.get(example.question_id, 0) + 1
        prompt = revision_messages(example, schema_text_for(example, schema_params), failing_sql, feedback)
        records.append(_record(prompt, example.sql, "perturbed", example.question_id))
    return records


def first_answer_records(examples: Sequence[Any], schema_params: Any) -> list[dict[str, Any]]:
    """The ordinary SFT record (question -> gold SQL) of each question, so first answers hold."""
    from ..data.prompts import sql_messages
    from ..data.schema import schema_text_for

    return [_record(sql_messages(ex, schema_text_for(ex, schema_params)), ex.sql, "first_answer", ex.question_id)
            for ex in examples]


def revision_schema(cfg: RewardModelParams) -> Any:
    """The schema rendering the policy was trained with (what 06_eval shows it too), checking that
    it answers in the plain format: revision prompts have no <think> variant."""
    from ..runs import policy_stage_metrics, schema_render_for

    if policy_stage_metrics(cfg, cfg.revision_policy.spec).get("format") == "reasoning":
        raise ValueError(f"revision_sft: the policy {cfg.revision_policy.spec} answers in the reasoning format, "
                         "and revision prompts exist in the plain format only; set revision_sft: false or "
                         "revision_policy to a plain-format model")
    return schema_render_for(cfg, None, cfg.revision_policy.spec)


def build_revision_records(cfg: RewardModelParams, stage: StageRun) -> tuple[list[dict], dict[str, int]]:
    """All records of this step (shuffled with the seed) and their counts by source."""
    from ..data.example import read_examples
    from ..sampling import seeded_subsample
    from ..tree.shards import read_trees

    schema_params = revision_schema(cfg)
    examples = read_examples(stage.record_input(require_output(cfg, "data", "train.jsonl")))
    by_id = {ex.question_id: ex for ex in examples}
    trees = read_trees(stage.record_input(require_output(cfg, "tree", "trees.jsonl")))
    timeout = cfg.revision_sql_timeout
    tree_records = tree_revision_records(trees, by_id, schema_params, per_question=cfg.revision_per_question,
                                         timeout=timeout)
    tree_ids = {tree.question_id for tree in trees}
    others = [ex for ex in examples if ex.question_id not in tree_ids]
    sampled = seeded_subsample(others, cfg.revision_questions, cfg.seed) if cfg.revision_questions else []
    perturbed = perturbed_revision_records(sampled, schema_params, per_question=cfg.revision_per_question,
                                           seed=cfg.seed, timeout=timeout)
    revised_ids = {r["question_id"] for r in tree_records + perturbed}
    first = first_answer_records([by_id[q] for q in sorted(revised_ids)], schema_params)
    records = tree_records + perturbed + first
    random.Random(cfg.seed).shuffle(records)
    counts = {"tree": len(tree_records), "perturbed": len(perturbed), "first_answer": len(first),
              "questions": len(revised_ids)}
    return records, counts


def revision_fingerprint(cfg: RewardModelParams) -> dict[str, Any]:
    """What the revision policy's checkpoints depend on: its own keys, the LoRA settings and the
    seed (not the reward model's or DPO's keys: each trains in its own folder)."""
    from ..runs import policy_manifest_sha256

    drop = tuple(k for k in RewardModelParams.model_fields if k not in REVISION_KEYS + ("lora", "seed"))
    # a re-trained policy (its stage's manifest rewritten) makes old checkpoints stale
    return {**checkpoint_fingerprint(cfg, drop=drop),
            "policy_manifest": policy_manifest_sha256(cfg, cfg.revision_policy.spec)}


def run_revision_sft(cfg: RewardModelParams, stage: StageRun) -> dict[str, Any]:
    """Fine-tune ``cfg.revision_policy`` on revision records; save ``<run>/revision_sft``."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ..hardware import choose_gradient_checkpointing, detect_hardware
    from ..models import load_model, resolve_spec
    from .sft import length_stats, record_length

    revision_stage = StageRun(cfg, "revision_sft").start()  # its own folder: 06_eval's system reads it
    revision_stage.inputs.update(stage.inputs)
    with revision_stage.timer("records"):
        records, counts = build_revision_records(cfg, revision_stage)
    if not counts["tree"] + counts["perturbed"]:
        raise ValueError("revision_sft: neither the trees (tree/trees.jsonl) nor the perturbed gold SQL gave a "
                         "failing query to revise; raise revision_questions or build trees with more questions")
    with revision_stage.timer("load_model"):
        checkpointing = choose_gradient_checkpointing(cfg.revision_training.gradient_checkpointing,
                                                      detect_hardware(), stage="revision SFT")
        model, tokenizer = load_model(cfg.revision_policy, run_dir=cfg.run_dir, lora=cfg.lora, for_training=True,
                                      seed=cfg.seed, gradient_checkpointing=checkpointing.choice)
    lengths = [record_length(r, tokenizer) for r in records]
    kept = [{"prompt": r["prompt"], "completion": r["completion"]}
            for r, n in zip(records, lengths) if n <= cfg.revision_training.max_length]
    log.info("revision SFT on %d records (%s; %d longer than %d tokens left out)", len(kept), counts,
             len(records) - len(kept), cfg.revision_training.max_length)
    # as 02_sft trains: the loss on the answer only, one record per sequence
    args = trl_config(SFTConfig, cfg.revision_training, cfg.revision_policy, revision_stage.dir / "checkpoints",
                      cfg.seed, max_length=cfg.revision_training.max_length, completion_only_loss=True,
                      packing=False)
    run = train(revision_stage, lambda callbacks: SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(kept),
                                                             processing_class=tokenizer, callbacks=callbacks),
                fingerprint=revision_fingerprint(cfg), resume=cfg.revision_training.resume)
    trainer = run.trainer
    is_peft = hasattr(trainer.accelerator.unwrap_model(trainer.model), "peft_config")
    folder = revision_stage.dir / ("adapter" if is_peft else "model")
    # A LoRA trained on top of the policy applies to the policy's base (not stacked on its adapter).
    save_trained(trainer, tokenizer, folder, padding_side="left",
                 base_spec=resolve_spec(cfg.revision_policy.spec, cfg.run_dir).base_spec or cfg.revision_policy.spec)
    curve = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        # what 06_eval reads to prompt this model as it was trained (evaluate/systems._stage_record)
        "format": "plain",
        "schema_render": revision_schema(cfg).model_dump(mode="json"),
        "records": {**counts, "trained": len(kept), "too_long": len(records) - len(kept)},
        "token_lengths": length_stats(lengths),
        "policy": cfg.revision_policy.spec,
        **run.metrics(),  # global_step, train_loss, step_seconds_median, ...
        "loss_first": curve[0] if curve else None,
        "loss_last": curve[-1] if curve else None,
        "saved": str(folder),
        **memory_metrics(),
    }
    del trainer, model
    gc.collect()
    write_json(revision_stage.path("metrics.json"), metrics)
    revision_stage.finish(metrics)
    return metrics
