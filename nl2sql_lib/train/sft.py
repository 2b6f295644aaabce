"""02_sft: supervised fine-tuning with TRL's SFTTrainer, loss on the answer only.

    metrics = run_sft(cfg, stage)     # cfg: SFTParams, stage: StageRun(cfg, "sft").start()
    python -m nl2sql_lib.train.sft --params params/smoke/sft.yaml --run smoke
    accelerate launch --multi_gpu --num_processes 2 -m nl2sql_lib.train.sft ...   # DDP

(``--multi_gpu`` also works without GPUs: torchrun starts the processes and they join a gloo
process group on the CPU; accelerate's ``--cpu`` flag alone starts one process unless MPI is
installed.)

One run, top to bottom:

1. ``data/train.jsonl`` of 01_data becomes prompt/completion chat records: the prompt is the
   system + user messages of :mod:`nl2sql_lib.data.prompts` (schema rendered as the data stage
   did), the completion the assistant's answer. Task ``sql`` answers with the SQL (format
   ``reasoning``: ``<think>...</think>`` then the SQL); task ``schema_linking`` with the JSON of
   the tables and columns the gold SQL uses. With ``prune_schema_with``, training prompts show
   only the gold-linked part of the schema and dev prompts the part the linking model predicts
   (the two-stage DTS-SQL recipe).
2. Records whose prompt + answer exceed ``training.max_length`` tokens are dropped (TRL would
   cut the answer, teaching the model to stop mid-query); how many is in the metrics.
3. The model: a fresh LoRA (PEFT) or full fine-tuning (``full_finetune: true``).
4. ``SFTTrainer`` with the prompt/completion layout, so ``completion_only_loss`` puts the loss on
   the answer only - this works with SmolLM2's stock chat template (docs/cpu-notes.md, gotcha 4); the
   completion ends with ``<|im_end|>``, so the model learns to stop. Resumes from the last
   checkpoint in ``sft/checkpoints`` when the parameters are unchanged.
5. Saves ``sft/adapter`` (adapter + tokenizer + the base's spec) or ``sft/model`` (full weights,
   or the adapter merged with ``merge_adapter: true``), and ``sft/metrics.json``: the loss
   curve, step times, peak memory, and a few dev questions answered before and after training.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence


from ..config import SchemaParams, SFTParams
from ..io import write_json
from ..data.linking import gold_links, parse_links, predict_links, score_linking
from ..sampling import seeded_subsample
from .. import runs
from ..runs import StageRun, require_output
from .. import hardware as hw_rules
from ..hardware import Hardware
from .common import (
    TrainingSetupError,
    _machine,
    checkpoint_fingerprint,
    is_main_process,
    loss_curve,
    memory_metrics,
    push_to_hub,
    save_trained,
    train,
    trl_config_kwargs,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# SFTConfig arguments (pure)
# --------------------------------------------------------------------------------------------


def sft_config_kwargs(cfg: SFTParams, output_dir: str | Path, *, cuda: bool | None = None, cpu_bf16: bool = False,
                      hardware: Hardware | None = None) -> dict[str, Any]:
    """The keyword arguments of ``trl.SFTConfig`` for ``cfg`` on this machine.

    ``hardware``: the machine (``detect_hardware()``); ``cuda``/``cpu_bf16`` describe an assumed
    one instead (``cuda=True``: an Ampere-class GPU). Precision: bf16 on Ampere+, fp16 on older
    GPUs, bf16 autocast on a CPU that has it. Gradient checkpointing: the parameter, or for
    ``auto`` on with CUDA and off on a CPU (TRL turns it on everywhere by default;
    docs/cpu-notes.md, gotcha 3). QLoRA: paged 8-bit AdamW.
    """
    from trl import SFTConfig

    # the shared part (loop, precision, optimizer, extra) comes from the harness (train/common.py)
    return trl_config_kwargs(
        SFTConfig, cfg.training, cfg.model, output_dir, seed=cfg.seed, hardware=_machine(hardware, cuda, cpu_bf16),
        stage="SFT",
        max_length=cfg.training.max_length,
        completion_only_loss=True,  # prompt/completion layout: loss on the answer only
        packing=False,
        save_only_model=False,  # keep optimizer state: resuming must continue, not restart
        ddp_find_unused_parameters=False,
        push_to_hub=False,  # done by us after saving, with the token from the environment
    )


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


# The parameter, else the data stage's schema rendering (what eval and GRPO use), else defaults.
schema_params_for = runs.schema_params_for


def prompt_messages(example, cfg: SFTParams, schema: SchemaParams, keep=None) -> list[dict]:
    from ..data.prompts import linking_messages, sql_messages
    from ..data.schema import schema_text_for

    schema_text = schema_text_for(example, schema, keep=keep)
    if cfg.task == "schema_linking":
        return linking_messages(example, schema_text)
    return sql_messages(example, schema_text, reasoning=cfg.format == "reasoning")


def answer_text(example, cfg: SFTParams) -> str:
    """The assistant's target; linking labels are derived from the gold SQL when 01_data left none."""
    import dataclasses

    from ..data.prompts import linking_answer, sql_answer

    needs_links = cfg.task == "schema_linking" or (cfg.format == "reasoning" and not example.reasoning)
    if needs_links and not example.schema_links:
        example = dataclasses.replace(example, schema_links=gold_links(example))

    if cfg.task == "schema_linking":
        return linking_answer(example)
    return sql_answer(example, reasoning=cfg.format == "reasoning")


def build_records(examples: Sequence[Any], cfg: SFTParams, schema: SchemaParams,
                  keeps: Sequence[dict | None] | None = None) -> list[dict[str, Any]]:
    """One conversational prompt/completion record per example (TRL's prompt-completion layout)."""
    records = []
    for i, ex in enumerate(examples):
        keep = keeps[i] if keeps is not None else None
        records.append({
            "prompt": prompt_messages(ex, cfg, schema, keep),
            "completion": [{"role": "assistant", "content": answer_text(ex, cfg)}],
        })
    return records


def record_length(record: dict, tokenizer) -> int:
    """Tokens of prompt + completion through the chat template (as TRL tokenizes them)."""
    ids = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # docs/cpu-notes.md, gotcha 2
    return len(ids)


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    if not lengths:
        return {}
    ordered = sorted(lengths)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"min": ordered[0], "median": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1]}


# --------------------------------------------------------------------------------------------
# Schema linking: the model that prunes the schema (parsing, scoring, predicting: data/linking.py)
# --------------------------------------------------------------------------------------------


def linking_generator(spec: str, cfg: SFTParams):
    from ..config import ModelParams
    from ..generate import make_generator

    return make_generator(ModelParams(spec=spec), run_dir=cfg.run_dir, batch_size=8, stop_strings=None)


# --------------------------------------------------------------------------------------------
# Dev samples before/after
# --------------------------------------------------------------------------------------------


def sharded_training(args=None) -> bool:
    """True when the weights will be sharded over the processes (FSDP or DeepSpeed, from the
    ``accelerate launch`` config or the SFTConfig): no process holds the whole model, so the dev
    samples are skipped (sample from sft/adapter or sft/model afterwards)."""
    import os

    def on(name: str) -> bool:
        return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")

    if on("ACCELERATE_USE_FSDP") or on("ACCELERATE_USE_DEEPSPEED"):
        return True
    return bool(args is not None and (getattr(args, "fsdp", None) or getattr(args, "deepspeed", None)))


def place_for_samples(model, hardware: Hardware) -> str | None:
    """Move the training model to this process's GPU for the "before" dev samples.

    A model that trains in full precision loads on the CPU (the trainer places it:
    ``hardware.device_map``), so sampling it there would generate on the CPU of a GPU machine -
    minutes for a 1.5B model, and an error with flash-attention 2. On a CUDA machine such a model
    goes to ``hardware.device`` (``cuda:{LOCAL_RANK}``), where the trainer would put it anyway;
    a quantized model is there already. Returns the device moved to, or None.
    """
    if not hardware.cuda:
        return None
    device = getattr(model, "device", None)
    if device is None or getattr(device, "type", str(device)) != "cpu":
        return None
    model.to(hardware.device)
    hw_rules.log_decisions(hw_rules.Decision(
        "dev_samples_device", hardware.device,
        f"the training model loaded on the CPU (the trainer places it); moved to {hardware.device} "
        "for the dev samples"), log)
    return hardware.device


def sample_answers(model, tokenizer, cfg: SFTParams, examples, messages) -> list[dict[str, Any]]:
    """Greedy answers of ``model`` to a few dev questions, judged when the task is SQL."""
    from ..generate import Generator

    if not examples:
        return []
    was_training = model.training
    model.eval()
    stop = [";"] if cfg.task == "sql" and cfg.format == "plain" else None
    generator = Generator(model, copy.deepcopy(tokenizer), batch_size=8, stop_strings=stop, progress=False)
    texts = generator.generate(messages, max_new_tokens=cfg.sample_max_new_tokens, desc="dev samples")
    if was_training:
        model.train()
    rows = []
    judge = None
    for ex, (text,) in zip(examples, texts):
        row: dict[str, Any] = {"question_id": ex.question_id, "db_id": ex.db_id, "question": ex.question,
                               "gold": ex.sql, "output": text}
        if cfg.task == "sql":
            from ..sql.extract import extract_sql
            from ..sql.judge import Judge

            judge = judge or Judge(timeout=2.0)
            pred = extract_sql(text)
            verdict = judge.judge(ex.db_path, ex.sql, pred) if pred else None
            row.update(pred_sql=pred, correct=bool(verdict and verdict.correct),
                       executes=bool(verdict and verdict.pred.ok))
        else:
            row["links"] = parse_links(text)
        rows.append(row)
    return rows


def _sample_summary(rows: list[dict], cfg: SFTParams, golds: list[dict] | None) -> dict[str, Any]:
    if not rows:
        return {}
    if cfg.task == "sql":
        return {"n": len(rows), "correct": sum(r["correct"] for r in rows), "executes": sum(r["executes"] for r in rows)}
    return {"n": len(rows), **score_linking([r["links"] for r in rows], golds or [])}


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def _is_main_process() -> bool:
    return is_main_process()


def _clear_outputs(stage: StageRun) -> None:
    """Remove the previous run's model folders: stage:sft must never load a stale one."""
    for name in ("adapter", "model"):
        shutil.rmtree(stage.dir / name, ignore_errors=True)


def run_sft(cfg: SFTParams, stage: StageRun) -> dict[str, Any]:
    """Train, save the adapter/model and ``sft/metrics.json``; returns the metrics."""
    from ..models import check_gpu_options, count_parameters, detect_hardware, load_model, resolve_spec

    started = time.perf_counter()
    check_gpu_options(cfg.model)
    if cfg.model.backend == "unsloth":
        # Before TRL, transformers and PEFT: Unsloth patches them on import (warning that its
        # patches are lost when they came first), as grpo.py does.
        import unsloth  # noqa: F401  (unsloth extra, CUDA only)
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ..data.example import read_examples

    hardware = detect_hardware()
    log.info("hardware: %s", hardware.describe())
    main = _is_main_process()
    schema = schema_params_for(cfg)
    train_path = stage.record_input(require_output(cfg, "data", "train.jsonl"))
    examples = read_examples(train_path)
    examples = seeded_subsample(examples, cfg.max_train_examples, cfg.seed)
    dev_path = cfg.run_dir / "data" / "dev.jsonl"
    dev = read_examples(dev_path)[: cfg.sample_dev_questions] if dev_path.is_file() and cfg.sample_dev_questions else []

    # 1-2. records, with optional pruning, and the length filter
    with stage.timer("records"):
        train_keeps = dev_keeps = None
        if cfg.prune_schema_with and cfg.task == "sql":
            train_keeps = [gold_links(ex) for ex in examples]
            if dev and main:
                dev_keeps = predict_links(linking_generator(cfg.prune_schema_with, cfg), dev, schema)
        records = build_records(examples, cfg, schema, train_keeps)
        checkpointing = hw_rules.choose_gradient_checkpointing(cfg.training.gradient_checkpointing, hardware,
                                                               stage="SFT")
        model, tokenizer = load_model(cfg.model, run_dir=cfg.run_dir,
                                      lora=None if cfg.full_finetune else cfg.lora, for_training=True,
                                      seed=cfg.seed, gradient_checkpointing=checkpointing.choice)
        lengths = [record_length(r, tokenizer) for r in records]
        kept = [r for r, n in zip(records, lengths) if n <= cfg.training.max_length or not cfg.drop_longer_than_max_length]
        dropped = len(records) - len(kept)
        if not kept:
            raise TrainingSetupError(
                f"all {len(records)} training records are longer than training.max_length="
                f"{cfg.training.max_length} tokens (median {length_stats(lengths).get('median')}); raise "
                "training.max_length or lower schema_render.max_tokens"
            )
    trainable, total = count_parameters(model)
    log.info("SFT on %d records (%d dropped as longer than %d tokens); %d of %d parameters train",
             len(kept), dropped, cfg.training.max_length, trainable, total)

    dev_messages = [prompt_messages(ex, cfg, schema, dev_keeps[i] if dev_keeps else None) for i, ex in enumerate(dev)]
    dev_golds = [gold_links(ex) for ex in dev] if cfg.task == "schema_linking" else None
    checkpoints = stage.dir / "checkpoints"
    args = SFTConfig(**sft_config_kwargs(cfg, checkpoints, hardware=hardware))
    sharded = sharded_training(args)
    before: list[dict] = []
    if main and dev and not sharded:
        place_for_samples(model, hardware)
        with stage.timer("samples_before"):
            before = sample_answers(model, tokenizer, cfg, dev, dev_messages)

    # 3-4. trainer (the harness: resume when the parameters are unchanged, step times, logs/)
    if main:
        _clear_outputs(stage)
    run = train(stage, lambda callbacks: SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(kept),
                                                    processing_class=tokenizer, callbacks=callbacks),
                fingerprint=checkpoint_fingerprint(cfg), resume=cfg.training.resume)
    trainer = run.trainer

    # 5. save and measure
    metrics: dict[str, Any] = {
        "task": cfg.task,
        "format": cfg.format,
        "method": "full" if cfg.full_finetune else "lora",
        "model_spec": cfg.model.spec,
        "train_examples": len(kept),
        "dropped_too_long": dropped,
        "token_lengths": length_stats(lengths),
        "trainable_params": trainable,
        "total_params": total,
        **run.metrics(),  # global_step, resumed_from, train_loss, step_seconds_median, ...
        "epoch": round(float(trainer.state.epoch or 0.0), 4),
        "loss_curve": loss_curve(trainer.state.log_history),
        "schema_render": schema.model_dump(mode="json"),
        "pruned_with": cfg.prune_schema_with,
        "world_size": trainer.args.world_size,
    }
    curve = metrics["loss_curve"]
    if curve:
        metrics["loss_first"], metrics["loss_last"] = curve[0]["loss"], curve[-1]["loss"]
    with stage.timer("save"):
        saved = save_outputs(trainer, tokenizer, cfg, stage, resolve_spec(cfg.model.spec, cfg.run_dir).base_spec)
    if not main:
        return metrics
    metrics.update(saved)

    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if sharded or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        after: list[dict] = []  # sharded weights: sample from sft/adapter or sft/model afterwards
        before = []
        metrics["samples_note"] = "skipped under FSDP/DeepSpeed (sharded weights)"
    else:
        with stage.timer("samples_after"):
            after = sample_answers(unwrapped, tokenizer, cfg, dev, dev_messages)
    metrics["samples"] = [
        {**{k: b[k] for k in ("question_id", "db_id", "question", "gold")},
         "before": b.get("pred_sql", b["output"]), "after": a.get("pred_sql", a["output"]),
         **({"correct_before": b["correct"], "correct_after": a["correct"]} if "correct" in a else {})}
        for b, a in zip(before, after)
    ]
    metrics["dev_samples_before"] = _sample_summary(before, cfg, dev_golds)
    metrics["dev_samples_after"] = _sample_summary(after, cfg, dev_golds)
    if cfg.merge_adapter and "adapter_dir" in saved:
        with stage.timer("merge"):
            metrics["model_dir"] = merge_adapter(unwrapped, tokenizer, stage)
    if cfg.push_to_hub:
        metrics["hub_url"] = push_to_hub(unwrapped, tokenizer, cfg.hub_model_id)
    metrics.update(memory_metrics())
    metrics["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_json(stage.path("metrics.json"), metrics)
    return metrics


def save_outputs(trainer, tokenizer, cfg: SFTParams, stage: StageRun, base_spec: str) -> dict[str, str]:
    """``sft/adapter`` (LoRA: adapter + tokenizer + base spec) or ``sft/model`` (full weights),
    the tokenizer padding left as generation wants (on every process: see ``save_trained``)."""
    is_peft = hasattr(trainer.accelerator.unwrap_model(trainer.model), "peft_config")
    folder = stage.dir / ("adapter" if is_peft else "model")
    if not save_trained(trainer, tokenizer, folder, base_spec=base_spec, padding_side="left"):
        return {}
    return {"adapter_dir": str(folder)} if is_peft else {"model_dir": str(folder)}


def merge_adapter(peft_model, tokenizer, stage: StageRun) -> str:
    """Merge the LoRA weights into the base and save full weights to ``sft/model``.

    Merges a copy: the PEFT model stays usable (push_to_hub uploads the adapter).
    """
    merged = copy.deepcopy(peft_model).merge_and_unload()
    folder = stage.path("model")
    merged.save_pretrained(folder)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(folder)
    return str(folder)


# --------------------------------------------------------------------------------------------
# The manifest's figures and the command line (also the entry point for `accelerate launch`);
# the notebook: notebooks/src/02_sft.py
# --------------------------------------------------------------------------------------------

HEADLINE_KEYS = ("train_loss", "loss_first", "loss_last", "train_examples", "global_step",
                 "step_seconds_median", "peak_rss_mb", "dev_samples_before", "dev_samples_after")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures 02_sft's manifest records, from the notebook and the command line alike
    (those of :data:`HEADLINE_KEYS` that the run has: no dev samples without a dev split)."""
    return {key: metrics[key] for key in HEADLINE_KEYS if key in metrics}


def main(argv: list[str] | None = None) -> int:
    cfg, stage = runs.start_stage_from_command_line(
        "sft", argv, description="02_sft without the notebook (works under accelerate launch)",
        example="params/smoke/sft.yaml")
    metrics = run_sft(cfg, stage)
    if _is_main_process():
        stage.finish(headline(metrics))
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("loss_curve", "samples")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
