"""03_grpo: reinforcement learning from execution with TRL's GRPOTrainer.

    metrics = run_grpo(cfg, stage)      # cfg: GRPOParams, stage: StageRun(cfg, "grpo").start()

One run, top to bottom:

1. the training questions of 01_data (``data/train.jsonl``) become a conversational prompt
   dataset (schema rendered as the data stage did, so the prompts are the ones SFT saw); the
   Example columns (``db_path``, ``sql``, ...) stay in it because the rewards need them;
2. the policy is loaded from ``model.spec`` (``stage:sft`` by default): an SFT adapter is trained
   further (so ``grpo/adapter`` applies to the same base as ``sft/adapter``), any other model
   gets a fresh LoRA (or is fully fine-tuned when ``lora.enabled`` is false);
3. the rewards of :mod:`nl2sql_lib.rewards` with the parameter file's weights; TRL logs each
   one (``rewards/<name>/mean``) next to the KL and the entropy;
4. ``GRPOTrainer.train`` (resuming from ``grpo/checkpoints`` when the parameters match);
5. ``grpo/adapter`` (or ``grpo/model``) and ``grpo/metrics.json``: reward curves, KL/entropy,
   mean execution reward in the first against the last tenth of the steps, and sampled
   completions with their rewards at the start and at the end of training.

On a GPU, ``use_vllm: true`` generates with vLLM colocated in the training process and
``model.backend: unsloth`` loads through Unsloth; both are imported only then. The arguments
given to ``GRPOConfig`` come from the pure function :func:`grpo_config_kwargs`, which the tests
check on a CPU machine.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from .. import hardware as hw_rules
from ..config import GRPOParams, SchemaParams
from ..hardware import Hardware
from ..io import write_json
from ..sampling import seeded_shuffled_head
from ..rewards import (
    MODEL_REWARD,
    ExecutionScorer,
    RewardFunction,
    batch_column,
    build_rewards,
    completion_text,
    extract_sql,
)
from .. import runs
from ..runs import StageRun, require_output
from .common import (
    TrainingSetupError,
    _machine,
    checkpoint_fingerprint,
    memory_metrics,
    train,
    trl_config_kwargs,
)
from .question_selection import nonzero_advantage_share

logger = logging.getLogger(__name__)

# Keys of TRL's log history kept as curves in metrics.json (plus every rewards/<name>/mean).
CURVE_KEYS = (
    "loss", "reward", "reward_std", "kl", "entropy", "learning_rate", "grad_norm",
    "completions/mean_length", "completions/clipped_ratio", "frac_reward_zero_std",
    "sql/seconds", "sql/timeout_rate",
)


class GRPOSetupError(TrainingSetupError):
    """The parameters cannot run here (a GPU-only piece on a CPU, bad ``training.extra``)."""


# --------------------------------------------------------------------------------------------
# GRPOConfig arguments (pure: no torch, no vLLM, no Unsloth)
# --------------------------------------------------------------------------------------------


def grpo_config_kwargs(
    cfg: GRPOParams,
    output_dir: str | Path,
    *,
    cuda: bool | None = None,
    cpu_bf16: bool = False,
    hardware: Hardware | None = None,
    reward_weights: Sequence[float] | None = None,
    longest_prompt_tokens: int | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``trl.GRPOConfig`` for ``cfg`` on a machine.

    - ``hardware``: the machine (``detect_hardware()``); ``cuda``/``cpu_bf16`` describe an
      assumed one instead (``cuda=True``: an Ampere-class GPU), as the tests pass them.
    - The training loop and precision come from train/common.py, as for SFT: on a CPU
      ``use_cpu=True`` and bf16 autocast only where the CPU has native bf16 (``cpu_bf16``) or
      ``model.dtype: bfloat16`` asks for it (docs/cpu-notes.md, gotcha 3); bf16 on an Ampere+ GPU, fp16
      below. ``training.gradient_checkpointing: auto`` (the default) is on with CUDA: 16
      completions of ~1,200 tokens need tens of GB of activations without it.
    - ``optim``: paged 8-bit AdamW with quantized weights (QLoRA), plain AdamW otherwise.
    - With ``use_vllm`` generation goes to vLLM in ``vllm_mode`` (``colocate``: inside this
      process, sharing the GPU); its context is the longest kept prompt
      (``longest_prompt_tokens``) + ``max_completion_length``, or ``training.max_length`` when the
      prompts are not known yet (every kept prompt + completion fits it).
    - ``training.extra`` is passed last (it wins) after its keys are checked against GRPOConfig.
    """
    from trl import GRPOConfig  # the dataclass only; importing TRL does not import vLLM

    specific: dict[str, Any] = {
        "num_generations": cfg.num_generations,
        "max_completion_length": cfg.max_completion_length,
        "temperature": cfg.temperature,
        "beta": cfg.beta,
        "loss_type": cfg.loss_type,
        "remove_unused_columns": False,  # the rewards read db_path / sql from the dataset
        "log_completions": False,  # our own start/end table lives in metrics.json
        "use_vllm": cfg.use_vllm,
    }
    if reward_weights is not None:
        specific["reward_weights"] = [float(w) for w in reward_weights]
    if cfg.use_vllm:
        specific["vllm_mode"] = cfg.vllm_mode
        if cfg.vllm_mode == "colocate":
            specific["vllm_gpu_memory_utilization"] = 0.3  # the rest stays for training
            specific["vllm_max_model_length"] = colocate_max_model_len(cfg, longest_prompt_tokens)
    try:  # the shared part (loop, precision, optimizer, extra) comes from the harness (train/common.py)
        return trl_config_kwargs(GRPOConfig, cfg.training, cfg.model, output_dir, seed=cfg.seed,
                                 hardware=_machine(hardware, cuda, cpu_bf16), stage="GRPO", **specific)
    except TrainingSetupError as exc:
        raise GRPOSetupError(str(exc)) from None


def colocate_max_model_len(cfg: GRPOParams, longest_prompt_tokens: int | None) -> int:
    """vLLM's context in colocate mode: the longest kept prompt + ``max_completion_length``."""
    if longest_prompt_tokens is None:
        # Prompts longer than max_length - max_completion_length are dropped before training.
        decision = hw_rules.Decision(
            "vllm_max_model_length", cfg.training.max_length,
            "training.max_length (the prompts are not measured yet)")
    else:
        sized = hw_rules.vllm_max_model_len(longest_prompt_tokens, cfg.max_completion_length)
        decision = hw_rules.Decision("vllm_max_model_length", sized.choice, sized.reason)
    hw_rules.log_decisions(decision, logger)
    return decision.choice


def check_hardware(cfg: GRPOParams, *, cuda: bool) -> None:
    """Stop before loading anything when the parameters ask for a GPU-only piece on a CPU."""
    if cfg.use_vllm and not cuda:
        raise GRPOSetupError(
            "use_vllm: true needs a CUDA GPU and the vllm package (pip install 'nl2sql_lib[gpu]'); "
            "none was found: set use_vllm: false (or use params/cpu/grpo.yaml) on this machine"
        )
    if cfg.use_vllm:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise GRPOSetupError("use_vllm: true but vllm is not installed: pip install 'nl2sql_lib[gpu]'")


# --------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------


def policy_stage_metrics(cfg: GRPOParams) -> dict[str, Any]:
    """metrics.json of the stage the policy comes from (``stage:sft`` -> sft/metrics.json), or {}."""
    return runs.policy_stage_metrics(cfg, cfg.model.spec)


# The schema rendering the policy was trained with, so GRPO's prompts are the ones it knows.
schema_params_for = runs.schema_params_for


def build_records(examples: Sequence[Any], cfg: GRPOParams, schema: SchemaParams) -> list[dict[str, Any]]:
    """One GRPO row per example: the chat ``prompt`` plus the columns the rewards read."""
    from ..data.prompts import sql_messages
    from ..data.schema import schema_text_for

    reasoning = cfg.format == "reasoning"
    records = []
    for ex in examples:
        records.append({
            "prompt": sql_messages(ex, schema_text_for(ex, schema), reasoning=reasoning),
            "db_path": str(ex.db_path),
            "sql": ex.sql,
            "db_id": ex.db_id,
            "question_id": str(ex.question_id),
            "question": ex.question,
            "difficulty": ex.difficulty,
        })
    return records


def probed_question_count(cfg: GRPOParams) -> int | None:
    """How many training questions 03_grpo reads: max_train_examples, or the pass-rate probe's
    candidates when the filter is on (the kept ones are then capped at max_train_examples)."""
    if cfg.pass_rate_filter.enabled and cfg.pass_rate_filter.candidates is not None:
        return cfg.pass_rate_filter.candidates
    return cfg.max_train_examples


def probe_fingerprint(cfg: GRPOParams) -> dict[str, Any]:
    """What a probed pass rate depends on besides the question: the policy (how it loads, and its
    stage's manifest, rewritten whenever the stage trains again), how answers are sampled and judged."""
    from ..runs import policy_manifest_sha256

    return {"policy": cfg.model.model_dump(mode="json"),
            "policy_manifest": policy_manifest_sha256(cfg, cfg.model.spec),
            "temperature": cfg.temperature, "max_completion_length": cfg.max_completion_length,
            "samples": cfg.pass_rate_filter.samples, "seed": cfg.seed, "semantics": cfg.semantics,
            "sql_timeout": cfg.sql_timeout}


def select_questions(records: list[dict], cfg: GRPOParams, model: Any, tokenizer: Any,
                     scorer: ExecutionScorer) -> tuple[list[dict], dict[str, Any]]:
    """The rows the policy answers right sometimes but not always (train/question_selection.py),
    at most max_train_examples of them, and the probe's summary for metrics.json."""
    from .question_selection import cached_pass_rates, keep_informative, policy_sampler, probe_pass_rates

    probe = cfg.pass_rate_filter
    sampler = policy_sampler(model, tokenizer, temperature=cfg.temperature, max_new_tokens=cfg.max_completion_length,
                             batch_size=probe.batch_size, seed=cfg.seed)
    rates, reused = cached_pass_rates(
        records, lambda todo: probe_pass_rates(todo, sampler, scorer, samples=probe.samples),
        cfg.run_dir / "grpo" / "pass_rates.json", probe_fingerprint(cfg))
    kept, summary = keep_informative(records, rates)
    summary["reused"] = reused
    if cfg.max_train_examples is not None:
        kept = kept[: cfg.max_train_examples]
        summary["kept"] = len(kept)  # what trains: the informative questions after the cap
    summary["samples"] = probe.samples
    return kept, summary


def prompt_tokens(record: dict, tokenizer: Any) -> int:
    """Tokens of a row's templated prompt (with the assistant turn opened)."""
    ids = tokenizer.apply_chat_template(record["prompt"], tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # docs/cpu-notes.md, gotcha 2
    return len(ids)


def drop_long_prompts(records: list[dict], tokenizer: Any, max_prompt_tokens: int,
                      lengths: list[int] | None = None) -> tuple[list[dict], int]:
    """Rows whose templated prompt fits ``max_prompt_tokens`` (GRPOConfig has no prompt cut).

    ``lengths``: when a list is given, the kept rows' prompt lengths are appended to it.
    """
    kept = []
    for rec in records:
        n = prompt_tokens(rec, tokenizer)
        if n <= max_prompt_tokens:
            kept.append(rec)
            if lengths is not None:
                lengths.append(n)
    return kept, len(records) - len(kept)


# --------------------------------------------------------------------------------------------
# The trained reward model as a reward
# --------------------------------------------------------------------------------------------


class RewardModelReward:
    """A trained reward model's opinion of each completion, as a reward in (0, 1).

    Scored by :class:`nl2sql_lib.scoring.RewardScorer`, through the very text the model was
    trained on: the prompt, the SQL and - for a model trained with execution feedback - the SQL's
    outcome on the question's database (``db_path`` column). That is why this wraps the scorer
    instead of handing TRL the model itself: TRL would score the bare completion text. The score
    goes through a sigmoid so that its scale matches the other rewards; a completion without SQL
    gets 0. (Here, not in rewards.py: rewards stays free of the model-loading modules.) The
    model loads on first use (``spec`` as :meth:`RewardScorer.from_spec` takes it).
    """

    __name__ = MODEL_REWARD

    def __init__(self, spec: str | None = None, *, run_dir: Any = None, scorer: Any = None):
        if spec is None and scorer is None:
            raise ValueError("RewardModelReward needs a reward model spec or a scorer")
        self.spec, self.run_dir, self._scorer = spec, run_dir, scorer

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from ..scoring import RewardScorer

            self._scorer = RewardScorer.from_spec(self.spec, run_dir=self.run_dir)
        return self._scorer

    def __repr__(self) -> str:
        return f"RewardModelReward({self.spec!r})"

    def __call__(self, prompts: Sequence[Any] | None, completions: Sequence[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        sqls = [extract_sql(completion_text(c)) for c in completions]
        db_paths = batch_column(kwargs, ("db_path",), n, MODEL_REWARD)
        if prompts is None or len(prompts) != n:
            raise ValueError(f"reward {MODEL_REWARD!r} needs one prompt per completion")
        rewards = [0.0] * n
        scored = [i for i, sql in enumerate(sqls) if sql]
        if scored:
            values = self.scorer.score_conversations(
                [_as_messages(prompts[i]) for i in scored], [sqls[i] for i in scored],
                db_paths=[db_paths[i] for i in scored],
            )
            from ..scoring import sigmoid

            for i, value in zip(scored, values):
                rewards[i] = sigmoid(float(value))
        return rewards


def _as_messages(prompt: Any) -> list[dict]:
    """A TRL prompt as chat messages (conversational prompts already are)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


# --------------------------------------------------------------------------------------------
# Sampled completions at the start and the end of training
# --------------------------------------------------------------------------------------------


class SampleRecorder:
    """Wraps the reward functions to keep the first and the last ``keep`` scored completions.

    TRL calls every reward function with the same batch in turn; the recorder joins their
    outputs into rows ``{step, question, completion, <reward>: value, ...}``. The completions are
    the ones training really sampled, so the table costs no extra generation.
    """

    def __init__(self, keep: int = 8, max_chars: int = 400, group_size: int | None = None):
        self.keep = keep
        # TRL passes each question's group of completions consecutively: with ``group_size``
        # (num_generations) the recorder also counts, per reward, the groups whose values differ
        # - the ones that reward gives a non-zero advantage
        self.group_size = group_size
        self.groups: dict[str, list[int]] = {}  # name -> [groups, groups with differing values]
        self.max_chars = max_chars
        self.start: list[dict] = []
        self.end: deque[dict] = deque(maxlen=max(keep, 1))
        self.calls = 0
        self._batch_key: tuple | None = None
        self._rows: list[dict] = []

    def wrap(self, func: RewardFunction):
        recorder = self

        class _Recorded:
            __name__ = func.__name__

            def __call__(self, prompts, completions, **kwargs):
                values = func(prompts, completions, **kwargs)
                recorder._record(func.__name__, completions, values, kwargs)
                return values

        return _Recorded()

    def _record(self, name: str, completions: Sequence[Any], values: Sequence, kwargs: dict) -> None:
        state = kwargs.get("trainer_state")
        step = int(getattr(state, "global_step", 0) or 0)
        key = (step, id(completions), len(completions))
        if key != self._batch_key:
            self.flush()
            self._batch_key = key
            questions = kwargs.get("question") or [None] * len(completions)
            self._rows = [
                {"step": step, "question": q, "completion": completion_text(c)[: self.max_chars]}
                for c, q in zip(completions, questions)
            ]
            self.calls += 1
        for row, value in zip(self._rows, values):
            row[name] = None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), 4)
        self._count_groups(name, values)

    def _count_groups(self, name: str, values: Sequence) -> None:
        if not self.group_size:
            return
        counts = self.groups.setdefault(name, [0, 0])
        for start in range(0, len(values) - self.group_size + 1, self.group_size):
            group = [float(v) for v in values[start : start + self.group_size] if v is not None]
            counts[0] += 1
            counts[1] += int(bool(group) and max(group) > min(group))

    def signal(self) -> dict[str, dict[str, Any]]:
        """Per reward: the groups scored, how many had differing values, and their share."""
        return {name: {"groups": n, "varied": k, "share": round(k / n, 4) if n else None}
                for name, (n, k) in self.groups.items()}

    def flush(self) -> None:
        """Move the batch being recorded into the start/end tables."""
        if not self._rows or self.keep == 0:
            self._rows = []
            return
        for row in self._rows:
            if len(self.start) < self.keep:
                self.start.append(row)
            else:
                self.end.append(row)
        self._rows = []

    def tables(self) -> dict[str, list[dict]]:
        self.flush()
        return {"start": list(self.start), "end": list(self.end)}


# --------------------------------------------------------------------------------------------
# Metrics from TRL's log history
# --------------------------------------------------------------------------------------------


def curves_from_history(log_history: Sequence[dict]) -> dict[str, list[list[float]]]:
    """``{key: [[step, value], ...]}`` for every reward mean and the keys in CURVE_KEYS."""
    curves: dict[str, list[list[float]]] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None or "train_runtime" in entry:  # the final summary entry is not a point
            continue
        for key, value in entry.items():
            wanted = key in CURVE_KEYS or (key.startswith("rewards/") and key.endswith("/mean"))
            if wanted and isinstance(value, (int, float)) and not math.isnan(value):
                curves.setdefault(key, []).append([int(step), float(value)])
    return curves


def tenth_trend(points: Sequence[Sequence[float]]) -> dict[str, Any] | None:
    """Mean of the first tenth of the logged points against the last tenth (at least one each)."""
    values = [v for _, v in points]
    if not values:
        return None
    k = max(1, len(values) // 10)
    first, last = sum(values[:k]) / k, sum(values[-k:]) / k
    return {
        "points": len(values), "per_tenth": k,
        "first_tenth": round(first, 4), "last_tenth": round(last, 4), "delta": round(last - first, 4),
        "rose": last > first,
    }


def half_comparison(points: Sequence[Sequence[float]]) -> dict[str, Any] | None:
    """The mean of the second half of the logged points against the first half: the difference,
    its 95% interval and p (evaluate/stats.unpaired_difference); None with fewer than 4 points."""
    from ..evaluate.stats import unpaired_difference

    values = [float(v) for _, v in points]
    half = len(values) // 2
    if half < 2:
        return None
    first, second = values[:half], values[len(values) - half:]
    result = unpaired_difference(first, second)
    rounded = {key: round(value, 4) if isinstance(value, float) else value for key, value in result.items()}
    rounded["difference_ci"] = [round(x, 4) for x in result["difference_ci"]]
    return {"first_half": round(sum(first) / half, 4), "second_half": round(sum(second) / half, 4), **rounded}


def summarize_training(log_history: Sequence[dict], reward_names: Sequence[str]) -> dict[str, Any]:
    curves = curves_from_history(log_history)
    summary: dict[str, Any] = {"curves": curves, "reward_trends": {}}
    for name in reward_names:
        trend = tenth_trend(curves.get(f"rewards/{name}/mean", []))
        if trend is not None:
            summary["reward_trends"][name] = trend
    summary["execution_trend"] = summary["reward_trends"].get("execution") or tenth_trend(curves.get("reward", []))
    # did the execution reward rise? the second half of the steps against the first, with a 95%
    # bootstrap interval and Welch's p (steps are the unit: one mean per logged step)
    execution_points = curves.get("rewards/execution/mean") or curves.get("reward", [])
    summary["execution_halves"] = half_comparison(execution_points)
    # the share of groups that taught something (a zero-variance group has zero advantages)
    summary["nonzero_advantage_share"] = nonzero_advantage_share(curves.get("frac_reward_zero_std", []))
    for key in ("kl", "entropy"):
        points = curves.get(key)
        if points:
            summary[f"{key}_start"], summary[f"{key}_end"] = points[0][1], points[-1][1]
    final = next((e for e in reversed(log_history) if "train_runtime" in e), {})
    summary["train_runtime_s"] = final.get("train_runtime")
    return summary


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def run_grpo(cfg: GRPOParams, stage: StageRun) -> dict[str, Any]:
    """Train with GRPO and save ``grpo/adapter`` (or ``grpo/model``) and ``grpo/metrics.json``."""
    from ..data.example import read_examples
    from ..models import count_parameters, detect_hardware, load_model, resolve_spec, save_base_spec

    hardware = detect_hardware()
    logger.info("hardware: %s", hardware.describe())
    check_hardware(cfg, cuda=hardware.cuda)
    if cfg.model.backend == "unsloth":
        import unsloth  # noqa: F401  (GPU extra) must be imported before TRL to patch it

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    train_path = stage.record_input(require_output(cfg, "data", "train.jsonl"))
    examples = read_examples(train_path)
    # a sample across databases, not the first one (GRPO's own rule, kept: see sampling.py)
    examples = seeded_shuffled_head(examples, probed_question_count(cfg), cfg.seed)
    trained_format = policy_stage_metrics(cfg).get("format")
    if trained_format and trained_format != cfg.format:
        logger.warning("the policy was trained with format %r but GRPO asks for %r: its prompts will be "
                       "new to it (set format: %s)", trained_format, cfg.format, trained_format)
    schema = schema_params_for(cfg)
    for name in ("adapter", "model"):  # stage:grpo must never load a previous run's model
        shutil.rmtree(stage.dir / name, ignore_errors=True)

    with stage.timer("load_model"):
        # the trainer's checkpointing decision, also where the model turns it on itself (QLoRA, Unsloth)
        checkpointing = hw_rules.choose_gradient_checkpointing(cfg.training.gradient_checkpointing, hardware,
                                                               stage="GRPO")
        model, tokenizer = load_model(cfg.model, run_dir=cfg.run_dir, lora=cfg.lora, for_training=True,
                                      seed=cfg.seed, gradient_checkpointing=checkpointing.choice)
        resolved = resolve_spec(cfg.model.spec, cfg.run_dir)
    trainable, total = count_parameters(model)

    with stage.timer("dataset"):
        records = build_records(examples, cfg, schema)
        max_prompt = max(16, cfg.training.max_length - cfg.max_completion_length)
        kept_lengths: list[int] = []
        records, too_long = drop_long_prompts(records, tokenizer, max_prompt, kept_lengths)
    if not records:
        raise GRPOSetupError(
            f"no training prompt fits training.max_length={cfg.training.max_length} minus "
            f"max_completion_length={cfg.max_completion_length} tokens: raise max_length or shrink "
            "the schema (schema_render.max_tokens)"
        )

    scorer = ExecutionScorer(semantics=cfg.semantics, timeout=cfg.sql_timeout, batch_budget=cfg.sql_batch_budget)
    selection = None
    if cfg.pass_rate_filter.enabled:
        with stage.timer("pass_rate_probe"):
            records, selection = select_questions(records, cfg, model, tokenizer, scorer)
        logger.info("pass-rate probe: %s", selection)
    model_reward = None
    if cfg.rewards.reward_model > 0:
        model_reward = RewardModelReward(cfg.reward_model, run_dir=cfg.run_dir)
        with stage.timer("load_reward_model"):
            _ = model_reward.scorer  # load now: a wrong spec fails before training starts
    funcs, weights = build_rewards(cfg.rewards, scorer=scorer, reasoning=cfg.format == "reasoning",
                                   reward_model=model_reward)
    reward_names = [f.__name__ for f in funcs]
    recorder = SampleRecorder(keep=cfg.num_samples_shown, group_size=cfg.num_generations)

    args = GRPOConfig(**grpo_config_kwargs(cfg, stage.dir / "checkpoints", hardware=hardware, reward_weights=weights,
                                           longest_prompt_tokens=max(kept_lengths)))
    # the harness: resume when the parameters are unchanged, step times, logs/
    run = train(stage, lambda callbacks: GRPOTrainer(
        model=model, reward_funcs=[recorder.wrap(f) for f in funcs], args=args,
        train_dataset=Dataset.from_list(records), processing_class=tokenizer, callbacks=callbacks,
    ), fingerprint=checkpoint_fingerprint(cfg), resume=cfg.training.resume)
    trainer, result = run.trainer, run.result

    with stage.timer("save"):
        saved = _save_policy(trainer.accelerator.unwrap_model(trainer.model), tokenizer, stage)
        if saved.name == "adapter":
            save_base_spec(saved, resolved.base_spec or cfg.model.spec)

    steps = int(trainer.state.global_step)
    metrics = {
        "model_spec": cfg.model.spec,
        "base_spec": resolved.base_spec,
        "saved": str(saved),
        "format": cfg.format,  # what later stages prompting stage:grpo follow, as for stage:sft
        "schema_render": schema.model_dump(mode="json"),
        "rewards": dict(zip(reward_names, weights)),
        "train_examples": len(records),
        "dropped_long_prompts": too_long,
        "pass_rate_selection": selection,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "steps": steps,
        "resumed_from": run.resumed_from,
        "train_loss": result.metrics.get("train_loss"),
        **run.step_times,
        **memory_metrics(),
        "tensorboard_dir": str(run.logs_dir),
        **summarize_training(trainer.state.log_history, reward_names),
        "samples": recorder.tables(),
        # per reward, the share of question groups whose completions it scored differently; the
        # total reward's share is nonzero_advantage_share (partial credit makes it vary more often)
        "reward_signal": recorder.signal(),
    }
    metrics["seconds_per_step"] = metrics.get("step_seconds_median")
    write_json(stage.path("metrics.json"), metrics)
    return metrics


def _save_policy(model: Any, tokenizer: Any, stage: StageRun) -> Path:
    """``grpo/adapter`` for a PEFT model (only the trained adapter, not TRL's frozen "ref" copy),
    ``grpo/model`` for full weights.

    Not the harness's ``save_trained``: ``Trainer.save_model`` would write every adapter of the
    PEFT model, the "ref" copy included; ``save_pretrained(selected_adapters=...)`` picks one.
    """
    from peft import PeftModel

    if isinstance(model, PeftModel):
        target = stage.dir / "adapter"
        if target.exists():
            shutil.rmtree(target)
        model.save_pretrained(str(target), selected_adapters=["default"])
    else:
        target = stage.dir / "model"
        if target.exists():
            shutil.rmtree(target)
        model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


# --------------------------------------------------------------------------------------------
# What the notebook shows
# --------------------------------------------------------------------------------------------


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few numbers the stage manifest and the README quote."""
    trend = metrics.get("execution_trend") or {}
    halves = metrics.get("execution_halves") or {}
    keys = ("steps", "seconds_per_step", "train_examples", "dropped_long_prompts", "kl_end", "entropy_start",
            "entropy_end", "nonzero_advantage_share")
    selection = metrics.get("pass_rate_selection") or {}
    execution_signal = (metrics.get("reward_signal") or {}).get("execution") or {}
    return {
        **{k: metrics.get(k) for k in keys},
        **({f"probe_{k}": selection.get(k) for k in ("probed", "reused", "mixed", "all_right", "all_wrong")} if selection else {}),
        "execution_signal_share": execution_signal.get("share"),
        "execution_reward_first_tenth": trend.get("first_tenth"),
        "execution_reward_last_tenth": trend.get("last_tenth"),
        "execution_reward_rose": trend.get("rose"),
        "execution_reward_half_difference": halves.get("difference"),
        "execution_reward_half_difference_ci": halves.get("difference_ci"),
        "execution_reward_half_p": halves.get("p_value"),
    }


def plot_training(metrics: dict[str, Any], path: str | Path | None = None):
    """Each reward's mean over the steps (left) and the entropy/KL (right); saved to ``path``."""
    import matplotlib.pyplot as plt

    curves = metrics.get("curves", {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, points in sorted(curves.items()):
        if key.startswith("rewards/") and key.endswith("/mean"):
            left.plot(*zip(*points), marker=".", label=key.split("/")[1])
    if "reward" in curves:
        left.plot(*zip(*curves["reward"]), color="black", linewidth=2, label="weighted total")
    left.set(title="reward means per step", xlabel="step", ylabel="mean reward")
    left.legend(fontsize=8)
    for key in ("entropy", "kl"):
        if key in curves:
            right.plot(*zip(*curves[key]), marker=".", label=key)
    right.set(title="entropy and KL (KL only when beta > 0)", xlabel="step")
    right.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def samples_table(metrics: dict[str, Any]):
    """Sampled completions with their rewards, at the start and at the end of training."""
    import pandas as pd

    rows = []
    for when in ("start", "end"):
        for row in metrics.get("samples", {}).get(when, []):
            rows.append({"when": when, **row})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Command line: 03_grpo without the notebook (also under accelerate launch)
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m nl2sql_lib.train.grpo --params params/cpu/grpo.yaml --run cpu [--set k=v]``"""
    cfg, stage = runs.start_stage_from_command_line(
        "grpo", argv, description="03_grpo without the notebook", example="params/cpu/grpo.yaml")
    metrics = run_grpo(cfg, stage)
    stage.finish(headline(metrics))
    print(json.dumps(headline(metrics), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
