"""05_reward_model: a reward model that scores SQL answers, trained on revision-tree pairs.

    metrics = run_reward_model(cfg, stage)      # cfg: RewardModelParams, stage: StageRun

Top to bottom:

1. read ``tree/pairs_train.jsonl`` and ``tree/pairs_test.jsonl`` (prompt messages, chosen SQL,
   rejected SQL, optional margin);
2. with ``execution_feedback`` (the default), give each side its execution outcome on the
   question's database: reused from the tree node when it recorded a failure that re-running
   would repeat, else run with the safe engine (never gold information; ``test_pairs.jsonl``
   keeps them as ``chosen_exec`` / ``rejected_exec``);
3. tokenize each side as the chat ``prompt + assistant SQL [+ "-- result: ..." line]`` with the
   function the scorer uses at inference (:func:`nl2sql_lib.scoring.encode_conversation`), so
   training, pairwise evaluation and best-of-N read the same text and the same token (the last
   one; see :mod:`nl2sql_lib.scoring`);
4. train ``AutoModelForSequenceClassification`` (one output) on the profile's base model with
   TRL's ``RewardTrainer``: LoRA with ``task_type=SEQ_CLS`` (PEFT then trains the new ``score``
   head in full through ``modules_to_save``), Bradley-Terry loss ``-log sigmoid(r_c - r_r - m)``
   with the pair's margin ``m`` when ``use_margin``; built, resumed (from the last checkpoint
   when the parameters are unchanged), timed and logged (``reward_model/logs``) by the trainer
   harness of :mod:`nl2sql_lib.train.common`, as SFT, GRPO and DPO are;
5. save ``reward_model/adapter/`` (adapter + score head + tokenizer + ``reward_model.json`` +
   ``input_format.json``, the text format it was trained on);
6. pairwise accuracy on the held-out pairs, by difficulty, with the score gaps
   (``reward_model/metrics.json``, ``test_scores.jsonl``, ``plots/score_gap.png``);
7. optionally (``dpo: true``) DPO of the policy on the same pairs (:mod:`nl2sql_lib.train.dpo`);
8. optionally (``revision_sft: true``) SFT of the policy on revision prompts (:mod:`nl2sql_lib.train.revision_sft`).

Without the notebook::

    python -m nl2sql_lib.train.reward_model --params params/cpu/reward_model.yaml --run cpu
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any, Sequence

from ..config import DPO_KEYS, REVISION_KEYS, RewardModelParams
from ..evaluate.reward_model import evaluate_pairs, load_pairs, plot_pair_results
from ..io import write_json, write_jsonl
from ..hardware import Hardware
from ..runs import StageRun, require_output, start_stage_from_command_line
from .common import checkpoint_fingerprint, save_trained, train, trl_config
from .gold_perturbations import perturbed_gold_pairs
from ..scoring import (
    PLAIN_FORMAT,
    InputFormat,
    RewardScorer,
    ScorerConfig,
    canonical_sql,
    encode_conversation,
    execute_outcome,
    load_sequence_classifier,
    outcome_from_node,
    pair_outcomes,
    prepare_tokenizer,
)

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------
# Data
# -------------------------------------------------------------------------------------------


def pairs_paths(cfg: RewardModelParams) -> tuple[Path, Path]:
    """The tree pairs files: the parameters' paths, else the tree stage's output."""
    train = Path(cfg.pairs_train) if cfg.pairs_train else require_output(cfg, "tree", "pairs_train.jsonl")
    test = Path(cfg.pairs_test) if cfg.pairs_test else require_output(cfg, "tree", "pairs_test.jsonl")
    return train, test


def _read_pairs_file(path: Path, *, allow_empty: bool) -> list[dict]:
    from ..io import DataFileError

    try:
        return load_pairs(path)
    except DataFileError:
        if allow_empty and path.is_file() and not path.read_text().strip():
            return []  # the trees gave no pairs; the gold_perturbed pairs still train
        raise


def data_schema_params(cfg: RewardModelParams) -> Any:
    """The schema rendering the data stage used (the prompts the policy was trained on)."""
    from .. import runs

    return runs.schema_params_for(cfg)


def gather_pairs(cfg: RewardModelParams, stage: StageRun) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Training and test pairs from the sources ``cfg.pairs_source`` names, with counts.

    Test pairs come from held-out questions: the tree splits its pairs by question, and the
    gold_perturbed test pairs are built from data/dev.jsonl (other databases than training).
    """
    import random

    from ..data.example import read_examples

    train: list[dict] = []
    test: list[dict] = []
    sources: dict[str, Any] = {"pairs_source": cfg.pairs_source}
    both = cfg.pairs_source == "tree+gold_perturbed"
    if cfg.pairs_source in ("tree", "tree+gold_perturbed"):
        train_path, test_path = pairs_paths(cfg)
        for path, bucket in ((train_path, train), (test_path, test)):
            stage.record_input(path)
            bucket.extend(_read_pairs_file(path, allow_empty=both))
        sources["tree_pairs"] = {"train": len(train), "test": len(test)}
    if cfg.pairs_source in ("gold_perturbed", "tree+gold_perturbed"):
        schema_params = data_schema_params(cfg)
        built = {}
        for split, bucket, cap in (("train", train, cfg.max_train_pairs), ("dev", test, cfg.max_test_pairs)):
            path = stage.record_input(require_output(cfg, "data", f"{split}.jsonl"))
            examples = read_examples(path)
            if cap:  # build pairs for a random sample of questions only, enough to fill the cap
                wanted = min(len(examples), -(-cap * 3 // (2 * cfg.perturbed_per_question)))
                examples = random.Random(cfg.seed).sample(examples, wanted)
            pairs = perturbed_gold_pairs(examples, schema_params=schema_params,
                                         per_question=cfg.perturbed_per_question, seed=cfg.seed)
            random.Random(cfg.seed).shuffle(pairs)  # a cap below keeps every database represented
            write_jsonl(stage.path(f"pairs_gold_perturbed_{split}.jsonl"), pairs)
            built[split] = len(pairs)
            bucket.extend(pairs)
        sources["gold_perturbed_pairs"] = {"train": built["train"], "test": built["dev"]}
    if cfg.max_train_pairs:
        train = train[: cfg.max_train_pairs]
    if cfg.max_test_pairs:
        test = test[: cfg.max_test_pairs]
    if not train or not test:
        raise ValueError(
            f"pairs_source={cfg.pairs_source!r} gave {len(train)} training and {len(test)} test pairs; "
            "both must be non-empty (use pairs_source: tree+gold_perturbed when the trees give few pairs)"
        )
    sources.update(train_pairs=len(train), test_pairs=len(test))
    fmt = input_format_for(cfg)
    if fmt.execution_feedback:
        databases, nodes = _tree_and_data_records(cfg, stage)
        train, train_exec = attach_execution(train, fmt, databases=databases, nodes=nodes)
        test, test_exec = attach_execution(test, fmt, databases=databases, nodes=nodes)
        sources["execution"] = {"train": train_exec, "test": test_exec}
    write_jsonl(stage.path("test_pairs.jsonl"), test)  # exactly the pairs evaluated
    return train, test, sources


def input_format_for(cfg: RewardModelParams) -> InputFormat:
    """The text format this stage trains on (written as the model's ``input_format.json``)."""
    return InputFormat(execution_feedback=True) if cfg.execution_feedback else PLAIN_FORMAT


def _tree_and_data_records(cfg: RewardModelParams, stage: StageRun) -> tuple[dict[str, str], dict]:
    """``{question_id: db_path}`` and ``{(question_id, node id): node}`` of this run's trees and data."""
    from ..evaluate.reward_model import question_databases
    from ..io import iter_jsonl
    from ..runs import stage_dir

    data = stage_dir(cfg, "data")
    trees = []
    if cfg.pairs_source != "gold_perturbed":
        trees = [pairs_paths(cfg)[0].parent / "trees.jsonl", stage_dir(cfg, "tree") / "trees.jsonl"]
    trees = [path for path in dict.fromkeys(trees) if path.is_file()]
    databases = question_databases(*trees, data / "train.jsonl", data / "dev.jsonl")
    nodes: dict[tuple[str, int], dict] = {}
    for path in trees:
        stage.record_input(path)
        for record in iter_jsonl(path):
            for node in record.get("nodes") or []:
                nodes.setdefault((str(record["question_id"]), int(node["id"])), node)
    return databases, nodes


def attach_execution(
    pairs: Sequence[dict], fmt: InputFormat, *, databases: dict[str, str] | None = None,
    nodes: dict[tuple[str, int], dict] | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """Copies of ``pairs`` with ``db_path`` and each side's outcome (``chosen_exec``, ``rejected_exec``).

    An outcome the pair already carries is kept; a tree node's recorded failure is reused when
    its SQL is the pair's (:func:`nl2sql_lib.scoring.outcome_from_node`); anything else runs on
    the pair's database with the safe engine. Returns the pairs and how many outcomes came from
    where. A side with no outcome and no known database stops with a message.
    """
    databases = databases or {}
    nodes = nodes or {}
    counts = {"stored": 0, "reused_from_tree": 0, "executed": 0}
    cache: dict[tuple[str, str], dict] = {}
    out = []
    for pair in pairs:
        pair = dict(pair)
        qid = str(pair.get("question_id"))
        if not pair.get("db_path") and qid in databases:
            pair["db_path"] = databases[qid]
        for side in ("chosen", "rejected"):
            key = f"{side}_exec"
            if pair.get(key) is not None:
                counts["stored"] += 1
                continue
            node = nodes.get((qid, pair[f"{side}_node"])) if pair.get(f"{side}_node") is not None else None
            if node is not None and canonical_sql(node.get("sql")) == canonical_sql(pair[side]):
                reused = outcome_from_node(node)
                if reused is not None:
                    pair[key] = reused
                    counts["reused_from_tree"] += 1
                    continue
            if not pair.get("db_path"):
                raise ValueError(
                    f"pair of question {qid!r}: no database to run its {side} SQL on (the pair has no "
                    "db_path and neither the run's data/*.jsonl nor tree/trees.jsonl name this question); "
                    "add db_path to the pairs or set execution_feedback: false"
                )
            cache_key = (str(pair["db_path"]), canonical_sql(pair[side]))
            if cache_key not in cache:
                cache[cache_key] = execute_outcome(pair["db_path"], pair[side], fmt)
                counts["executed"] += 1
            pair[key] = cache[cache_key]
        out.append(pair)
    return out, counts


def build_preference_dataset(
    pairs: Sequence[dict], tokenizer: Any, *, max_length: int, use_margin: bool,
    fmt: InputFormat = PLAIN_FORMAT,
) -> tuple[Any, dict[str, int]]:
    """TRL's processed preference format: ``chosen_ids``, ``rejected_ids`` (and ``margin``).

    Handing TRL token ids (rather than text) keeps tokenization in one place, shared with the
    scorer. Conversations longer than ``max_length`` are cut from the left (TRL would drop the
    whole pair, docs/cpu-notes.md, gotcha 9). ``fmt``: the input format (with execution feedback, each
    side's outcome comes from the pair, see :func:`attach_execution`, or is run on its
    ``db_path``). Returns the dataset and counts for the metrics.
    """
    from datasets import Dataset

    with_margin = use_margin and any(pair.get("margin") is not None for pair in pairs)
    columns: dict[str, list] = {"chosen_ids": [], "rejected_ids": []}
    if with_margin:
        columns["margin"] = []
    stats = {"pairs": len(pairs), "used": 0, "truncated": 0, "identical_skipped": 0}
    chosen_outcomes, rejected_outcomes = pair_outcomes(pairs, fmt)
    for pair, chosen_outcome, rejected_outcome in zip(pairs, chosen_outcomes, rejected_outcomes):
        chosen, cut_c = encode_conversation(tokenizer, pair["prompt"], pair["chosen"], max_length,
                                            outcome=chosen_outcome, fmt=fmt)
        rejected, cut_r = encode_conversation(tokenizer, pair["prompt"], pair["rejected"], max_length,
                                              outcome=rejected_outcome, fmt=fmt)
        if chosen == rejected:  # nothing to learn, and a zero-gap pair only adds noise
            stats["identical_skipped"] += 1
            continue
        stats["truncated"] += int(cut_c or cut_r)
        columns["chosen_ids"].append(chosen)
        columns["rejected_ids"].append(rejected)
        if with_margin:
            columns["margin"].append(float(pair.get("margin") or 0.0))
        stats["used"] += 1
    if not stats["used"]:
        raise ValueError("no usable training pairs (every pair had the same SQL on both sides)")
    stats["with_margin"] = int(with_margin)
    return Dataset.from_dict(columns), stats


# -------------------------------------------------------------------------------------------
# The trainer harness (train/common.py), shared with SFT, GRPO and DPO
# -------------------------------------------------------------------------------------------

# What the reward model's checkpoints do not depend on: the DPO and revision SFT keys (each
# trains a policy in its own folder).
POLICY_KEYS = DPO_KEYS + REVISION_KEYS


def reward_config(cfg: RewardModelParams, output_dir: Path, *, hardware: Hardware | None = None) -> Any:
    """TRL's RewardConfig from the parameters (RewardConfig's own options, such as
    ``center_rewards_coefficient``, come through ``training.extra``)."""
    from trl import RewardConfig

    return trl_config(RewardConfig, cfg.training, cfg.model, output_dir, cfg.seed, hardware=hardware,
                      max_length=cfg.training.max_length)


# -------------------------------------------------------------------------------------------
# The stage
# -------------------------------------------------------------------------------------------


def build_reward_trainer(cfg: RewardModelParams, train_dataset: Any, tokenizer: Any, model: Any,
                         output_dir: Path, callbacks: list | None = None) -> Any:
    """TRL's RewardTrainer with our parameters (LoRA on SEQ_CLS: the score head is trained)."""
    from trl import RewardTrainer

    args = reward_config(cfg, output_dir)
    peft_config = None
    if cfg.lora.enabled:
        from peft import LoraConfig

        from ..models import lora_config_kwargs

        # SEQ_CLS: PEFT adds the head ("score") to modules_to_save, so it trains in full and is
        # saved with the adapter; listed explicitly so that it does not depend on that default.
        peft_config = LoraConfig(**{**lora_config_kwargs(cfg.lora), "task_type": "SEQ_CLS", "modules_to_save": ["score"]})
    return RewardTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def load_reward_base(cfg: RewardModelParams) -> tuple[Any, Any]:
    """The sequence classifier (random head) and its tokenizer, padding prepared."""
    from ..models import load_tokenizer

    tokenizer = prepare_tokenizer(load_tokenizer(cfg.model.spec, cfg.run_dir, padding_side="right"))
    model = load_sequence_classifier(cfg.model, run_dir=cfg.run_dir, for_training=True,
                                     trains_all_weights=not cfg.lora.enabled)
    model.config.pad_token_id = tokenizer.pad_token_id
    upcast_score_head(model)
    return model, tokenizer


def upcast_score_head(model: Any) -> None:
    """Keep the score head in fp32 when the body loaded in fp16 (a GPU without bf16, a T4).

    The head trains in full (PEFT's modules_to_save) and fp16 mixed precision's gradient scaler
    refuses fp16 gradients; PEFT upcasts the LoRA weights itself but not a saved module.
    """
    import torch

    head = getattr(model, "score", None)
    if head is not None and next(head.parameters()).dtype == torch.float16:
        head.float()


def save_reward_model(trainer: Any, tokenizer: Any, cfg: RewardModelParams, directory: Path) -> Path:
    """Adapter (or full model) + tokenizer + what RewardScorer.from_spec needs to reload it
    (``reward_model.json``) + the text format it was trained on (``input_format.json``)."""
    save_trained(trainer, tokenizer, directory, base_spec=cfg.model.spec if cfg.lora.enabled else None)
    ScorerConfig(
        base_spec=cfg.model.spec,
        max_length=cfg.training.max_length,
        pad_token=tokenizer.pad_token,
        adapter=cfg.lora.enabled,
    ).write(directory)
    input_format_for(cfg).write(directory)
    return directory


def run_reward_model(cfg: RewardModelParams, stage: StageRun) -> dict[str, Any]:
    """Train the reward model, save it, evaluate it on the test pairs; returns the metrics."""
    with stage.timer("pairs"):
        train_pairs, test_pairs, sources = gather_pairs(cfg, stage)

    with stage.timer("load_model"):
        model, tokenizer = load_reward_base(cfg)
    dataset, data_stats = build_preference_dataset(
        train_pairs, tokenizer, max_length=cfg.training.max_length, use_margin=cfg.use_margin,
        fmt=input_format_for(cfg),
    )
    logger.info("reward model: %d training pairs (%s)", len(dataset), data_stats)

    # the harness: resume when the parameters are unchanged, step times, logs/
    run = train(stage, lambda callbacks: build_reward_trainer(cfg, dataset, tokenizer, model, stage.dir / "checkpoints",
                                                              callbacks=callbacks),
                fingerprint=checkpoint_fingerprint(cfg, drop=POLICY_KEYS), resume=cfg.training.resume)
    trainer, result = run.trainer, run.result
    # adapter/ with LoRA; model/ holds full weights when lora.enabled is false
    adapter_dir = save_reward_model(trainer, tokenizer, cfg, stage.dir / ("adapter" if cfg.lora.enabled else "model"))
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    steps = trainer.state.global_step
    del trainer, model  # free the training copy before loading the saved one
    gc.collect()

    with stage.timer("evaluate"):
        # Evaluate the saved artifact, loaded as 06_eval will load it (fp32, merged adapter):
        # the trainer's in-memory model still runs under the training autocast.
        scorer = RewardScorer.from_spec(adapter_dir, run_dir=cfg.run_dir, batch_size=cfg.eval_batch_size)
        summary, items = evaluate_pairs(scorer, test_pairs)
        del scorer
    write_jsonl(stage.path("test_scores.jsonl"), items)
    if cfg.plots:
        plot_pair_results(items, summary, stage.path("plots/score_gap.png"))

    metrics = {
        **summary,
        "input_format": input_format_for(cfg).name,
        "pairs": sources,
        "train": {
            **data_stats,
            "steps": steps,
            "resumed_from": run.resumed_from,
            "train_loss": run.train_loss,
            "first_logged_loss": history[0]["loss"] if history else None,
            "last_logged_loss": history[-1]["loss"] if history else None,
            "last_logged_accuracy": history[-1].get("accuracy") if history else None,
            **run.step_times,  # step_seconds_median, as every trainer reports it
            "runtime_s": round(result.metrics.get("train_runtime", 0.0), 1),
            "tensorboard_dir": str(run.logs_dir),
        },
        "adapter": str(adapter_dir),
    }
    if cfg.dpo:
        from .dpo import run_dpo

        with stage.timer("dpo"):
            metrics["dpo"] = run_dpo(cfg, stage, train_pairs)
    if cfg.revision_sft:
        from .revision_sft import run_revision_sft

        with stage.timer("revision_sft"):
            metrics["revision_sft"] = run_revision_sft(cfg, stage)
    write_json(stage.path("metrics.json"), metrics)
    return metrics


# -------------------------------------------------------------------------------------------
# The manifest's figures and the command line (the notebook: notebooks/src/05_reward_model.py)
# -------------------------------------------------------------------------------------------


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures 05_reward_model's manifest records, from the notebook and the command line
    alike; the rest (by difficulty, by reason, the training run) stays in its metrics.json."""
    keys = ("n", "pairwise_accuracy", "mean_gap", "median_gap", "ties", "n_questions", "input_format", "adapter")
    return {key: metrics[key] for key in keys if key in metrics}


def main(argv: list[str] | None = None) -> int:
    """``python -m nl2sql_lib.train.reward_model --params params/cpu/reward_model.yaml --run cpu [--set k=v]``"""
    import json

    cfg, stage = start_stage_from_command_line(
        "reward_model", argv, description="05_reward_model without the notebook",
        example="params/cpu/reward_model.yaml")
    metrics = run_reward_model(cfg, stage)
    stage.finish(headline(metrics))
    print(json.dumps({**headline(metrics), "by_reason": metrics.get("by_reason"), "train": metrics["train"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
