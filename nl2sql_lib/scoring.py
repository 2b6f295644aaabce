"""Score SQL candidates with the reward model that 05_reward_model trained.

    scorer = RewardScorer.from_spec("stage:reward_model", run_dir="outputs/cpu")
    scorer.score(messages_prompt, ["SELECT ...", "SELECT ..."])   # one float per SQL

What exactly is scored
----------------------
A candidate becomes the chat conversation ``prompt messages + {"role": "assistant", "content":
sql}`` rendered by the tokenizer's chat template, exactly as in training (one function,
:func:`encode_conversation`, serves both). The sequence-classification head reads the hidden
state of the **last token of that text**; with SmolLM2/Qwen templates that is the newline after
the assistant's ``<|im_end|>``, so the score sees the whole prompt and the whole SQL.

transformers finds that token as "the rightmost token that is not the pad token". SmolLM2's
tokenizer uses ``<|im_end|>`` both as end-of-turn and as padding (CPU-NOTES, gotcha 9), so a
text that ended in ``<|im_end|>`` would be scored one token early. :func:`prepare_tokenizer`
therefore switches padding to a token that never occurs in a conversation (``<|endoftext|>``)
whenever pad == eos, and batches are padded on the right, so a batched score equals the
single-sequence score.

Over-long conversations are cut from the left (the start of the system prompt and schema goes
first): the question, which the prompts put after the schema, and the SQL always survive.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

# Written next to the adapter by 05_reward_model: what from_spec needs to rebuild the scorer.
SCORER_CONFIG = "reward_model.json"
# Tokens tried, in order, as a padding token distinct from end-of-sequence.
_PAD_CANDIDATES = ("<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<unk>")


class RewardModelNotFound(FileNotFoundError):
    """The reward model named by a spec does not exist; the message says what to run."""


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Give ``tokenizer`` a padding token distinct from its end-of-sequence token, padding right.

    Returns the same tokenizer (changed in place). See the module docstring for why.
    """
    vocab = tokenizer.get_vocab()
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        for candidate in _PAD_CANDIDATES:
            if candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
                tokenizer.pad_token = candidate
                break
        else:
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            logger.warning(
                "no padding token distinct from eos (%r) in the vocabulary: a conversation that "
                "ends in it is scored at the token before", tokenizer.eos_token,
            )
    tokenizer.padding_side = "right"
    return tokenizer


def encode_conversation(
    tokenizer: Any, prompt: Sequence[dict], sql: str, max_length: int | None = None
) -> tuple[list[int], bool]:
    """Token ids of ``prompt`` + the assistant answer ``sql``; and whether they were cut.

    The same function builds the training pairs and the inputs of :class:`RewardScorer`, so a
    score at inference reads the token it was trained on. The SQL is written the way the SFT
    targets are (one statement ending in a single ``;``), whether it came with a ``;`` (gold,
    tree nodes) or without (``extract_sql`` output): a trailing ``;`` must not move a score.
    """
    sql = (sql or "").strip().rstrip(";").strip()
    messages = [*prompt, {"role": "assistant", "content": sql + ";" if sql else ""}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    ids = list(ids)
    if max_length is not None and len(ids) > max_length:
        return ids[-max_length:], True  # keep the end: the question and the SQL
    return ids, False


@dataclass
class ScorerConfig:
    """The contents of ``reward_model.json`` written beside a trained adapter."""

    base_spec: str  # the model spec the head sits on (resolved again when loading)
    max_length: int
    pad_token: str
    scored_token: str = "last token of the chat-template text (after the assistant's end-of-turn)"
    adapter: bool = True

    def write(self, directory: str | Path) -> Path:
        from .io import write_json

        return write_json(Path(directory) / SCORER_CONFIG, self.__dict__)

    @classmethod
    def read(cls, directory: str | Path) -> "ScorerConfig | None":
        path = Path(directory) / SCORER_CONFIG
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class RewardScorer:
    """A sequence-classification reward model: higher score = more likely a correct SQL."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 1024, batch_size: int = 8):
        import torch

        self.model = model.eval()
        self.tokenizer = prepare_tokenizer(tokenizer)
        # The model locates the scored token through config.pad_token_id: keep them in step.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self._torch = torch

    # ---------------------------------------------------------------------------------------
    # Loading
    # ---------------------------------------------------------------------------------------

    @classmethod
    def from_spec(
        cls,
        spec_or_dir: str | Path,
        run_dir: str | Path | None = None,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        dtype: str = "float32",
    ) -> "RewardScorer":
        """Load a trained reward model.

        ``spec_or_dir``: ``stage:reward_model`` (the adapter this run's 05_reward_model saved,
        needs ``run_dir``), the stage folder ``outputs/<run>/reward_model``, a folder holding a
        PEFT adapter with ``reward_model.json``, or a folder holding a full
        sequence-classification model. ``dtype``: float32 by default
        (scores of close candidates differ by little; bf16 rounding could swap them).
        """
        directory = _resolve_directory(spec_or_dir, run_dir)
        saved = ScorerConfig.read(directory)
        length = max_length or (saved.max_length if saved else 1024)
        if (directory / "adapter_config.json").is_file():
            model, tokenizer = _load_adapter(directory, saved, run_dir, dtype)
        else:
            model, tokenizer = _load_full(directory, dtype)
        if saved is not None:
            tokenizer.pad_token = saved.pad_token
        return cls(model, tokenizer, max_length=length, batch_size=batch_size)

    # ---------------------------------------------------------------------------------------
    # Scoring
    # ---------------------------------------------------------------------------------------

    def score(self, messages_prompt: Sequence[dict], sql_list: Sequence[str]) -> list[float]:
        """Scores of each SQL as the answer to one prompt (chat messages), in input order."""
        return self.score_conversations([messages_prompt] * len(sql_list), list(sql_list))

    def score_conversations(self, prompts: Sequence[Sequence[dict]], sqls: Sequence[str]) -> list[float]:
        """Scores of ``(prompts[i], sqls[i])`` pairs, batched by similar length."""
        if len(prompts) != len(sqls):
            raise ValueError(f"got {len(prompts)} prompts but {len(sqls)} SQL strings")
        encoded = [encode_conversation(self.tokenizer, p, s, self.max_length)[0] for p, s in zip(prompts, sqls)]
        return self.score_ids(encoded)

    def score_ids(self, encoded: Sequence[list[int]]) -> list[float]:
        """Scores of already tokenized conversations (see :func:`encode_conversation`)."""
        torch = self._torch
        # Sorting by length keeps padding (wasted compute) small; results go back in order.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores: list[float] = [0.0] * len(encoded)
        pad_id = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                width = max(len(encoded[i]) for i in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    ids = encoded[index]
                    input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention[row, : len(ids)] = 1
                logits = self.model(
                    input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), use_cache=False
                ).logits
                for row, index in enumerate(batch):
                    scores[index] = float(logits[row, 0].float())
        return scores


# -------------------------------------------------------------------------------------------
# Loading helpers
# -------------------------------------------------------------------------------------------


def _resolve_directory(spec_or_dir: str | Path, run_dir: str | Path | None) -> Path:
    spec = str(spec_or_dir)
    if spec.startswith("stage:"):
        stage = spec.split(":", 1)[1] or "reward_model"
        if run_dir is None:
            raise ValueError(f"model spec {spec!r} needs run_dir (the outputs/<run> folder of the run)")
        folder = Path(run_dir) / stage
        directory = folder / ("model" if (folder / "model" / SCORER_CONFIG).is_file() else "adapter")
        if not directory.is_dir():
            raise RewardModelNotFound(
                f"{directory} does not exist: run notebooks/05_reward_model.ipynb for this run first "
                f"(make pipeline RUN={Path(run_dir).name} FROM=05_reward_model)"
            )
        return directory
    directory = Path(spec)
    for inner in ("adapter", "model"):  # the stage folder itself (outputs/<run>/reward_model)
        if (directory / inner / SCORER_CONFIG).is_file() or (directory / inner / "config.json").is_file():
            return directory / inner
    if not directory.is_dir():
        raise RewardModelNotFound(
            f"reward model {spec!r} is neither 'stage:reward_model' nor an existing folder "
            "(give the reward_model/adapter folder of a run)"
        )
    return directory


def _load_adapter(directory: Path, saved: ScorerConfig | None, run_dir, dtype: str) -> tuple[Any, Any]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from .config import ModelParams
    from .models import adapter_base_spec

    # The base spec we recorded (portable: "embedded:...") or, for an adapter trained
    # elsewhere, the path PEFT recorded.
    base_spec = saved.base_spec if saved is not None else adapter_base_spec(directory)
    base = load_sequence_classifier(ModelParams(spec=base_spec, dtype=dtype), run_dir=run_dir)
    model = PeftModel.from_pretrained(base, str(directory))
    model = model.merge_and_unload()  # plain model: faster inference, no adapter bookkeeping
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return model, tokenizer


def _load_full(directory: Path, dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForSequenceClassification.from_pretrained(str(directory), num_labels=1, dtype=torch_dtype)
    return model, AutoTokenizer.from_pretrained(str(directory))


def load_sequence_classifier(
    model_params: Any, *, run_dir: str | Path | None = None, for_training: bool = False
) -> Any:
    """``AutoModelForSequenceClassification`` with one output on the weights a model spec names.

    ``model_params`` is a :class:`~nl2sql_lib.config.ModelParams` (spec, dtype, quantization).
    The score head is new (random); the rest comes from the spec's weights. When the spec is an
    adapter (``stage:sft``), the adapter is merged into the base first, so the reward model can
    start from the fine-tuned policy.
    """
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    from .models import bnb_config_kwargs, check_gpu_options, from_pretrained_kwargs, resolve_spec

    check_gpu_options(model_params)
    resolved = resolve_spec(model_params.spec, run_dir=run_dir)
    kwargs = {"num_labels": 1, **from_pretrained_kwargs(model_params, for_training=for_training)}
    bnb = bnb_config_kwargs(model_params)
    if bnb is not None:
        import torch

        if "bnb_4bit_compute_dtype" in bnb:
            bnb = {**bnb, "bnb_4bit_compute_dtype": getattr(torch, bnb["bnb_4bit_compute_dtype"])}
        kwargs["quantization_config"] = BitsAndBytesConfig(**bnb)
    with suppress_seqcls_warning():  # "score.weight newly initialized" is expected here
        model = AutoModelForSequenceClassification.from_pretrained(str(resolved.path), **kwargs)
    if resolved.adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(resolved.adapter_path)).merge_and_unload()
    return model
