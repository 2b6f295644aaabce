"""Score SQL candidates with the reward model that 05_reward_model trained.

    scorer = RewardScorer.from_spec("stage:reward_model", run_dir="outputs/cpu")
    scorer.score(messages_prompt, ["SELECT ...", "SELECT ..."], db_path=example.db_path)  # one float per SQL

What exactly is scored
----------------------
A candidate becomes the chat conversation ``prompt messages + {"role": "assistant", "content":
sql}`` rendered by the tokenizer's chat template, exactly as in training (one function,
:func:`encode_conversation`, serves both). The sequence-classification head reads the hidden
state of the **last token of that text**; with SmolLM2/Qwen templates that is the newline after
the assistant's ``<|im_end|>``, so the score sees the whole prompt and the whole SQL.

transformers finds that token as "the rightmost token that is not the pad token". SmolLM2's
tokenizer uses ``<|im_end|>`` both as end-of-turn and as padding (docs/cpu-notes.md, gotcha 9), so a
text that ended in ``<|im_end|>`` would be scored one token early. :func:`prepare_tokenizer`
therefore switches padding to a token that never occurs in a conversation (``<|endoftext|>``)
whenever pad == eos, and batches are padded on the right, so a batched score equals the
single-sequence score.

Over-long conversations are cut from the left (the start of the system prompt and schema goes
first): the question, which the prompts put after the schema, the SQL and its outcome always
survive.

Execution feedback (the input format)
-------------------------------------
A reward model trained with ``execution_feedback: true`` reads, after the SQL, one comment line
with what that SQL did on the question's database, as execution-guided rerankers do::

    SELECT name FROM customers WHERE segment = 'Consumer';
    -- result: 14 rows x 1 column (name): Chloe Thomas; Ava Martin; ...

    SELECT name FROM customers WHERE segmnt = 'Consumer';
    -- result: error no_such_column: no such column: segmnt

It is the candidate's own outcome, run by the project's safe engine (read-only, time limit, row
cap): never the gold SQL, its result or a verdict. :func:`scored_text` writes the assistant turn,
:func:`encode_conversation` tokenizes it, and training (``build_preference_dataset``), pairwise
evaluation (``evaluate_pairs``) and best-of-N (``RewardScorer.score`` with ``db_path``) all go
through these two functions, so the three read the same text. Which format a model was trained on
is written next to it (``input_format.json``, :class:`InputFormat`); a model folder without that
file is a plain prompt + SQL model and is scored as before.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

# Written next to the adapter by 05_reward_model: what from_spec needs to rebuild the scorer.
SCORER_CONFIG = "reward_model.json"
# Written next to it too: the text format the model was trained on (see InputFormat).
INPUT_FORMAT_FILE = "input_format.json"
# Tokens tried, in order, as a padding token distinct from end-of-sequence.
_PAD_CANDIDATES = ("<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<unk>")


def sigmoid(score: float) -> float:
    """A reward-model score as a weight in [0, 1] (-inf, for "no SQL", gives 0)."""
    if score >= 0:
        return 1.0 / (1.0 + math.exp(-score))
    return math.exp(score) / (1.0 + math.exp(score))  # no overflow for very negative scores


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


# -------------------------------------------------------------------------------------------
# The input format: what text a candidate becomes
# -------------------------------------------------------------------------------------------

# Outcome records keep a little more than any rendering shows, so the rendering's knobs can
# shrink without executing again.
OUTCOME_ROWS = 5
OUTCOME_CELL_CHARS = 64
OUTCOME_MESSAGE_CHARS = 300
# Error kinds whose stored outcome (a tree node's) is exactly what running the SQL again gives:
# they depend on the SQL and the schema only, not on time limits or row caps.
REUSABLE_ERRORS = frozenset({"syntax", "no_such_table", "no_such_column", "other", "empty", "forbidden"})


@dataclass(frozen=True)
class InputFormat:
    """The text a reward model scores; written as ``input_format.json`` beside the model.

    ``execution_feedback`` false: the chat ``prompt + assistant SQL`` (the format of every model
    trained before this file existed, and what a folder without the file gets). True: the
    assistant turn also holds one ``-- result: ...`` line (:func:`render_outcome`) with at most
    ``preview_rows`` rows, each value cut to ``value_chars``, the whole line to ``max_chars``;
    candidates run with ``timeout`` seconds and ``max_rows`` rows (``N+ rows`` beyond).
    """

    execution_feedback: bool = False
    version: int = 1
    preview_rows: int = 2
    preview_columns: int = 4
    value_chars: int = 24
    message_chars: int = 100
    max_chars: int = 220
    timeout: float = 5.0
    max_rows: int = 10_000

    @property
    def name(self) -> str:
        return "prompt+sql+execution" if self.execution_feedback else "prompt+sql"

    def write(self, directory: str | Path) -> Path:
        from .io import write_json

        return write_json(Path(directory) / INPUT_FORMAT_FILE, {"name": self.name, **self.__dict__})

    @classmethod
    def read(cls, directory: str | Path) -> "InputFormat":
        """The folder's format; the plain prompt + SQL format when it has no ``input_format.json``."""
        path = Path(directory) / INPUT_FORMAT_FILE
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        if int(data.get("version", 1)) > cls.version:
            raise ValueError(
                f"{path}: input format version {data['version']} is newer than this library's "
                f"({cls.version}); update nl2sql_lib to score with this reward model"
            )
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


PLAIN_FORMAT = InputFormat()


def canonical_sql(sql: str | None) -> str:
    """The SQL without surrounding space and trailing ``;`` (as run and as written, + ``;``)."""
    return (sql or "").strip().rstrip(";").strip()


def _cell(value: Any) -> str:
    """A deterministic short text of one result value."""
    if value is None:
        text = "NULL"
    elif isinstance(value, float):
        text = repr(round(value, 4))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        text = f"<{len(bytes(value))} bytes>"
    else:
        text = str(value)
    return _cut(" ".join(text.split()), OUTCOME_CELL_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def outcome_of(result: Any) -> dict[str, Any]:
    """A JSON-able record of an :class:`~nl2sql_lib.sql.execute.ExecResult` (what rendering needs).

    ``error`` (an ErrorKind value), ``message``, ``n_rows`` (None when no rows came back),
    ``truncated`` (a row cap was hit: at least ``n_rows``), ``columns`` and the first rows as
    short texts.
    """
    error = getattr(result.error, "value", str(result.error))
    rows = result.rows
    return {
        "error": error,
        "message": " ".join((result.message or "").split())[:OUTCOME_MESSAGE_CHARS],
        "n_rows": None if rows is None else len(rows),
        "truncated": bool(result.truncated),
        "columns": [_cut(str(c), OUTCOME_CELL_CHARS) for c in result.columns] if rows is not None else [],
        "rows": [[_cell(v) for v in row] for row in rows[:OUTCOME_ROWS]] if rows is not None else [],
    }


def outcome_from_node(node: dict[str, Any]) -> dict[str, Any] | None:
    """The outcome a revision-tree node recorded, when it equals what running it again gives.

    Only failures that depend on the SQL and the schema alone (syntax, no such table/column,
    ...) are reused; a node whose SQL ran gets None (its stored preview has no column names),
    and so does a timeout (depends on the machine): those are executed again.
    """
    if node.get("error") not in REUSABLE_ERRORS:
        return None
    return {
        "error": node["error"],
        "message": " ".join((node.get("message") or "").split())[:OUTCOME_MESSAGE_CHARS],
        "n_rows": None, "truncated": False, "columns": [], "rows": [],
    }


def execute_outcome(db_path: str | Path, sql: str, fmt: InputFormat = PLAIN_FORMAT) -> dict[str, Any]:
    """Run ``sql`` on ``db_path`` with the safe engine (read-only, time limit, row cap)."""
    from .sql.execute import execute_sql

    return outcome_of(execute_sql(db_path, canonical_sql(sql), timeout=fmt.timeout, max_rows=fmt.max_rows))


def render_outcome(outcome: dict[str, Any], fmt: InputFormat = PLAIN_FORMAT) -> str:
    """The ``-- result: ...`` line of one outcome record (see the module docstring)."""
    error = outcome.get("error") or "ok"
    n_rows = outcome.get("n_rows")
    if n_rows is None or error not in ("ok", "too_many_rows"):
        message = _cut(" ".join((outcome.get("message") or "").split()), fmt.message_chars)
        text = f"error {error}" + (f": {message}" if message else "")
    else:
        columns = list(outcome.get("columns") or [])
        more = "+" if outcome.get("truncated") else ""
        shown = [_cut(c, fmt.value_chars) for c in columns[: fmt.preview_columns]]
        if len(columns) > fmt.preview_columns:
            shown.append("...")
        text = (f"{n_rows}{more} row{'' if n_rows == 1 and not more else 's'} x {len(columns)} "
                f"column{'' if len(columns) == 1 else 's'} ({', '.join(shown)})")
        rows = list(outcome.get("rows") or [])[: fmt.preview_rows]
        if rows:
            def row_text(row: list) -> str:
                cells = [_cut(str(v), fmt.value_chars) for v in row[: fmt.preview_columns]]
                return " | ".join(cells + (["..."] if len(row) > fmt.preview_columns else []))

            text += ": " + "; ".join(row_text(row) for row in rows)
            if n_rows > len(rows):
                text += "; ..."
    return _cut("-- result: " + text, fmt.max_chars)


def scored_text(sql: str, outcome: dict[str, Any] | None = None, fmt: InputFormat = PLAIN_FORMAT) -> str:
    """The assistant turn a reward model reads: the SQL (one statement, one ``;``) and, in the
    execution-feedback format, its outcome line. The one place this text is made."""
    sql = canonical_sql(sql)
    text = sql + ";" if sql else ""
    if fmt.execution_feedback:
        if outcome is None:
            raise ValueError(
                "this input format shows each SQL's execution outcome, but none was given: pass the "
                "question's database (db_path) or stored outcomes"
            )
        text += "\n" + render_outcome(outcome, fmt)
    return text


def encode_conversation(
    tokenizer: Any, prompt: Sequence[dict], sql: str, max_length: int | None = None,
    *, outcome: dict[str, Any] | None = None, fmt: InputFormat = PLAIN_FORMAT,
) -> tuple[list[int], bool]:
    """Token ids of ``prompt`` + the assistant turn :func:`scored_text`; and whether they were cut.

    The same function builds the training pairs and the inputs of :class:`RewardScorer`, so a
    score at inference reads the token it was trained on. The SQL is written the way the SFT
    targets are (one statement ending in a single ``;``), whether it came with a ``;`` (gold,
    tree nodes) or without (``extract_sql`` output): a trailing ``;`` must not move a score.
    ``outcome`` (an :func:`outcome_of` record) is needed when ``fmt.execution_feedback``.
    """
    messages = [*prompt, {"role": "assistant", "content": scored_text(sql, outcome, fmt)}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    ids = list(ids)
    if max_length is not None and len(ids) > max_length:
        return ids[-max_length:], True  # keep the end: the question, the SQL and its outcome
    return ids, False


def resolve_outcomes(
    sqls: Sequence[str], fmt: InputFormat, *, db_paths: Sequence[str | Path | None] | None = None,
    outcomes: Sequence[dict | None] | None = None,
) -> list[dict[str, Any] | None]:
    """One outcome per SQL for ``fmt``: the given one, else the SQL run on its database.

    All None for the plain format. Raises when an outcome is needed and neither is there.
    """
    if not fmt.execution_feedback:
        return [None] * len(sqls)
    out: list[dict[str, Any] | None] = []
    for i, sql in enumerate(sqls):
        known = outcomes[i] if outcomes is not None else None
        if known is None:
            db_path = db_paths[i] if db_paths is not None else None
            if not db_path:
                raise ValueError(
                    f"SQL {i} ({canonical_sql(sql)[:60]!r}) has no execution outcome and no database: "
                    "this reward model scores SQL with its execution outcome "
                    f"({INPUT_FORMAT_FILE}: {fmt.name}); pass db_path"
                )
            known = execute_outcome(db_path, sql, fmt)
        out.append(known)
    return out


def pair_outcomes(pairs: Sequence[dict], fmt: InputFormat) -> tuple[list, list]:
    """(chosen outcomes, rejected outcomes) of preference pairs for ``fmt``.

    A pair carries them as ``chosen_exec`` / ``rejected_exec`` (05_reward_model stores them in
    ``test_pairs.jsonl``) or names its database (``db_path``), then its SQL runs here.
    """
    db_paths = [pair.get("db_path") for pair in pairs]
    chosen = resolve_outcomes([p["chosen"] for p in pairs], fmt, db_paths=db_paths,
                              outcomes=[p.get("chosen_exec") for p in pairs])
    rejected = resolve_outcomes([p["rejected"] for p in pairs], fmt, db_paths=db_paths,
                                outcomes=[p.get("rejected_exec") for p in pairs])
    return chosen, rejected


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

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 1024, batch_size: int = 8,
                 input_format: InputFormat = PLAIN_FORMAT):
        import torch

        self.input_format = input_format
        self._warned_no_database = False
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
        return cls(model, tokenizer, max_length=length, batch_size=batch_size,
                   input_format=InputFormat.read(directory))

    # ---------------------------------------------------------------------------------------
    # Scoring
    # ---------------------------------------------------------------------------------------

    def score(
        self, messages_prompt: Sequence[dict], sql_list: Sequence[str], *, db_path: str | Path | None = None,
        outcomes: Sequence[dict | None] | None = None,
    ) -> list[float]:
        """Scores of each SQL as the answer to one prompt (chat messages), in input order.

        ``db_path``: the question's database. A model trained with execution feedback runs each
        SQL there (read-only) and reads its outcome; ``outcomes`` gives them instead (see
        :func:`outcome_of`). Without either, such a model is scored on the SQL alone, with a
        warning: pass the database.
        """
        return self.score_conversations(
            [messages_prompt] * len(sql_list), list(sql_list),
            db_paths=None if db_path is None else [db_path] * len(sql_list), outcomes=outcomes,
        )

    def score_conversations(
        self, prompts: Sequence[Sequence[dict]], sqls: Sequence[str], *,
        db_paths: Sequence[str | Path | None] | None = None, outcomes: Sequence[dict | None] | None = None,
    ) -> list[float]:
        """Scores of ``(prompts[i], sqls[i])`` pairs, batched by similar length.

        ``db_paths`` / ``outcomes`` (one per SQL): see :meth:`score`.
        """
        if len(prompts) != len(sqls):
            raise ValueError(f"got {len(prompts)} prompts but {len(sqls)} SQL strings")
        for name, values in (("db_paths", db_paths), ("outcomes", outcomes)):
            if values is not None and len(values) != len(sqls):
                raise ValueError(f"got {len(values)} {name} for {len(sqls)} SQL strings")
        fmt = self.input_format
        if fmt.execution_feedback and db_paths is None and outcomes is None:
            if not self._warned_no_database:
                logger.warning(
                    "this reward model was trained on SQL with its execution outcome (%s), but no "
                    "database was given: scoring the SQL alone, which it was not trained on; pass db_path",
                    INPUT_FORMAT_FILE,
                )
                self._warned_no_database = True
            fmt = PLAIN_FORMAT
        resolved = resolve_outcomes(sqls, fmt, db_paths=db_paths, outcomes=outcomes)
        encoded = [
            encode_conversation(self.tokenizer, p, s, self.max_length, outcome=o, fmt=fmt)[0]
            for p, s, o in zip(prompts, sqls, resolved)
        ]
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

    from . import hardware as hw_rules

    torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
    # Scoring runs on this process's GPU when there is one (cuda:{LOCAL_RANK}), not on its CPU.
    placement = hw_rules.device_map(hw_rules.detect_hardware(), quantized=False, for_training=False)
    hw_rules.log_decisions(placement, logger)
    extra = {} if placement.choice is None else {"device_map": placement.choice}
    model = AutoModelForSequenceClassification.from_pretrained(str(directory), num_labels=1, dtype=torch_dtype, **extra)
    return model, AutoTokenizer.from_pretrained(str(directory))


def load_sequence_classifier(
    model_params: Any, *, run_dir: str | Path | None = None, for_training: bool = False,
    trains_all_weights: bool = False,
) -> Any:
    """``AutoModelForSequenceClassification`` with one output on the weights a model spec names.

    ``model_params`` is a :class:`~nl2sql_lib.config.ModelParams` (spec, dtype, quantization).
    The score head is new (random); the rest comes from the spec's weights. When the spec is an
    adapter (``stage:sft``), the adapter is merged into the base first, so the reward model can
    start from the fine-tuned policy. For inference (``for_training=False``) on a GPU it loads
    onto this process's GPU (``cuda:{LOCAL_RANK}``); see :func:`nl2sql_lib.models.from_pretrained_kwargs`.
    """
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    from .models import bnb_config_kwargs, check_gpu_options, detect_hardware, from_pretrained_kwargs, resolve_spec

    check_gpu_options(model_params)
    resolved = resolve_spec(model_params.spec, run_dir=run_dir)
    hardware = detect_hardware()
    kwargs = {"num_labels": 1, **from_pretrained_kwargs(model_params, for_training=for_training, hardware=hardware,
                                                        trains_all_weights=trains_all_weights)}
    bnb = bnb_config_kwargs(model_params, hardware)
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
