"""Optional part of 05_reward_model: DPO of the policy on the same preference pairs.

    metrics = run_dpo(cfg, stage, train_pairs)      # when RewardModelParams.dpo is true

TRL's ``DPOTrainer`` with an **explicit prompt** (docs/cpu-notes.md, gotcha 8: with an implicit prompt
TRL splits chosen/rejected at their longest common prefix, which can swallow the start of the
SQL). The pairs are conversational: ``prompt`` = the question's chat messages, ``chosen`` /
``rejected`` = one assistant message each.

The policy is ``cfg.dpo_policy`` (by default this run's SFT adapter, trained further; TRL keeps
a frozen copy of it as the reference). The result is saved where 06_eval looks for the system
``dpo``: ``outputs/<run>/dpo/adapter`` with its own manifest, so ``stage:dpo`` loads it.
"""

from __future__ import annotations

import gc
from typing import Any, Sequence

from ..config import REVISION_KEYS, RewardModelParams
from ..runs import StageRun
from .common import checkpoint_fingerprint, save_trained, train, trl_config

# What DPO's checkpoints do not depend on: the reward model's own keys (it trains in its folder)
# and revision SFT's (its own folder too).
REWARD_MODEL_KEYS = ("dpo", "model", "training", "use_margin") + REVISION_KEYS


def dpo_dataset(pairs: Sequence[dict]) -> Any:
    """Conversational preference records with an explicit prompt."""
    from datasets import Dataset

    def answer(sql: str) -> list[dict]:
        return [{"role": "assistant", "content": sql}]

    return Dataset.from_list([
        {"prompt": list(pair["prompt"]), "chosen": answer(pair["chosen"]), "rejected": answer(pair["rejected"])}
        for pair in pairs
        if pair["chosen"] != pair["rejected"]
    ])


def run_dpo(cfg: RewardModelParams, stage: StageRun, pairs: Sequence[dict]) -> dict[str, Any]:
    """Train the policy with DPO on ``pairs``; save ``<run>/dpo/adapter``; return metrics."""
    from trl import DPOConfig, DPOTrainer

    from ..hardware import choose_gradient_checkpointing, detect_hardware
    from ..models import load_model, resolve_spec

    dpo_stage = StageRun(cfg, "dpo").start()  # its own folder: 06_eval's system "dpo" reads it
    dpo_stage.inputs.update(stage.inputs)
    with dpo_stage.timer("load_model"):
        # the trainer's checkpointing decision, also where the model turns it on itself (QLoRA, Unsloth)
        checkpointing = choose_gradient_checkpointing(cfg.dpo_training.gradient_checkpointing, detect_hardware(),
                                                      stage="DPO")
        model, tokenizer = load_model(cfg.dpo_policy, run_dir=cfg.run_dir, lora=cfg.lora, for_training=True,
                                      seed=cfg.seed, gradient_checkpointing=checkpointing.choice)
    dataset = dpo_dataset(pairs)
    args = trl_config(DPOConfig, cfg.dpo_training, cfg.dpo_policy, dpo_stage.dir / "checkpoints", cfg.seed,
                      max_length=cfg.dpo_training.max_length, beta=cfg.dpo_beta)
    # the harness: resume when the parameters are unchanged, step times, logs/
    run = train(dpo_stage, lambda callbacks: DPOTrainer(model=model, args=args, train_dataset=dataset,
                                                        processing_class=tokenizer, callbacks=callbacks),
                fingerprint=checkpoint_fingerprint(cfg, drop=REWARD_MODEL_KEYS), resume=cfg.dpo_training.resume)
    trainer = run.trainer
    adapter = dpo_stage.dir / "adapter"
    # The adapter applies to the policy's base (the SFT adapter was trained further, not stacked).
    save_trained(trainer, tokenizer, adapter,
                 base_spec=resolve_spec(cfg.dpo_policy.spec, cfg.run_dir).base_spec or cfg.dpo_policy.spec)
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        "pairs": len(dataset),
        "steps": trainer.state.global_step,
        "resumed_from": run.resumed_from,
        "train_loss": run.train_loss,
        "last_logged": {k: history[-1][k] for k in history[-1] if k.startswith(("loss", "rewards/"))} if history else {},
        **run.step_times,  # step_seconds_median, as every trainer reports it
        "tensorboard_dir": str(run.logs_dir),
        "adapter": str(adapter),
    }
    del trainer, model
    gc.collect()
    dpo_stage.finish(metrics)
    return metrics
