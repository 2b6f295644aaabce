"""The systems 06_eval compares, and their predictions.

A *system* is a named model: ``base`` (the profile's base model), ``sft`` / ``grpo`` / ``dpo``
(what that stage of this run saved, as the spec ``stage:<name>``), or ``name=spec`` for any
other model spec. For every system this module generates one greedy prediction per question
and, for the best-of-N systems, a pool of N candidates: the greedy prediction first, then N-1
samples at the configured temperature. Putting the greedy answer first makes "greedy" the
pool's first candidate, so the oracle can never fall below greedy.

Predictions are cached in ``eval/predictions_<system>.jsonl`` (one record per dataset and
question) beside ``predictions_<system>.meta.json``, which fingerprints what produced them
(model spec, the producing stage's manifest, decoding settings). A re-run keeps the records
whose fingerprint matches and generates only what is missing, so a finished system costs
nothing and an interrupted one resumes.

Only one model is loaded at a time and freed before the next (memory, see docs/cpu-notes.md).
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from ..config import NOTEBOOK_OF_STAGE, EvalParams, ModelParams, SchemaParams
from ..data.example import Example
from ..io import append_jsonl, iter_jsonl, read_json, write_json, write_jsonl
from .. import runs
from ..sampling import seeded_subsample
from ..runs import MissingStageOutput

# Systems that name a stage of this run: the folder outputs/<run>/<name>/ holds their model
# (adapter/ or model/, as models.resolve_spec("stage:<name>") reads it) and a manifest.json
# once finished; the value is the notebook stage that writes it (05_reward_model trains DPO
# when its parameter dpo is true, and revision SFT when revision_sft is true).
STAGE_SYSTEMS = {"sft": "sft", "grpo": "grpo", "dpo": "reward_model", "revision_sft": "reward_model"}


class GeneratorLike(Protocol):
    """What :func:`generate_predictions` needs from a generator (nl2sql_lib.generate.Generator).

    Constrained systems also pass ``schemas=`` (one database path per prompt).
    """

    def generate(
        self, messages_batch: list[list[dict]], *, n: int = 1, temperature: float = 0.0,
        max_new_tokens: int = 128,
    ) -> list[list[str]]: ...


GeneratorFactory = Callable[["System", EvalParams], GeneratorLike]

# Prompts handed to the generator per call, in batches (see _generate_missing): two of the fast
# greedy path's batches (generate.FAST_ROWS_PER_BATCH x batch_size rows each).
CHUNK_BATCHES = 16


@dataclass(frozen=True)
class System:
    """One system of the comparison: its report name, model spec, and where it comes from."""

    name: str
    spec: str
    stage: str | None = None  # outputs/<run>/<stage> made it (None: base or another spec)
    reasoning: bool = False  # the model was trained to answer with <think>...</think> first
    # The schema rendering its prompts use (SchemaParams as a dict): what it was trained with.
    schema_render: dict | None = field(default=None, hash=False, compare=False)
    # Decoding constrained to the question's schema identifiers (nl2sql_lib.constrained).
    constrained: bool = False
    # A schema-linking model whose predicted tables/columns prune each prompt's schema (the
    # two-stage DTS-SQL way); None: the whole schema.
    linking_model: str | None = None
    # What the model answers: "sql", or "schema_linking" for a linking model (JSON, no SQL stop).
    task: str = "sql"
    # One round of revision: a greedy answer that fails to execute (or has no SQL) goes back to
    # the model with the error (data.prompts.revision_messages) and its revision is the answer.
    revise: bool = False

    def schema(self) -> SchemaParams:
        return SchemaParams.model_validate(self.schema_render) if self.schema_render else SchemaParams()


@dataclass
class EvalSet:
    """A named list of questions to evaluate, with the comparison rule and what was left out.

    (Not a Hugging Face ``datasets.Dataset``: plain examples and a name for the report.)
    """

    name: str
    examples: list[Example]
    semantics: str
    best_of_n: bool = True
    skipped: dict[str, int] = field(default_factory=dict)  # db_id -> questions without a database
    total: int = 0  # questions before skipping and subsampling
    systems: frozenset[str] | None = None  # the systems evaluated on it; None: every system

    def evaluates(self, system_name: str) -> bool:
        return self.systems is None or system_name in self.systems


# --------------------------------------------------------------------------------------------
# Resolving systems
# --------------------------------------------------------------------------------------------


def _stage_manifest(cfg: EvalParams, folder: str) -> Path:
    return cfg.run_dir / folder / "manifest.json"


def _stage_record(cfg: EvalParams, folder: str) -> dict[str, Any]:
    """What a training stage recorded for later stages: its metrics.json (format,
    schema_render), completed by its manifest's parameters; {} when neither exists."""
    record: dict[str, Any] = {}
    for path, pick in ((_stage_manifest(cfg, folder), "parameters"), (cfg.run_dir / folder / "metrics.json", None)):
        if path.is_file():
            try:
                data = read_json(path)
            except Exception:  # a damaged file: the defaults apply, generation still runs
                continue
            data = data.get(pick, {}) if pick else data
            if isinstance(data, dict):
                record.update({k: v for k, v in data.items() if k in ("format", "schema_render") and v})
                # SFT records its linking model as parameter prune_schema_with / metric pruned_with
                pruned_with = data.get("pruned_with") or data.get("prune_schema_with")
                if pruned_with:
                    record["pruned_with"] = pruned_with
    return record


def _with_prompt_settings(system: "System", cfg: EvalParams) -> "System":
    """The system with the prompt format and schema rendering it was trained with.

    Schema rendering, in order: eval's ``schema_render``; the one the system's stage recorded
    (sft/grpo/dpo metrics.json or parameters); the data stage's (what SFT uses by default);
    the defaults. Format: reasoning when the stage trained the <think> format.
    """
    record = _stage_record(cfg, system.stage) if system.stage else {}
    if cfg.schema_render is not None:
        schema = cfg.schema_render
    elif record.get("schema_render"):
        schema = SchemaParams.model_validate(record["schema_render"])
    else:
        schema = schema_params_for(cfg)
    # A model trained on pruned prompts is evaluated on pruned prompts (eval's linking_model, if
    # set, replacing the linking model it trained with).
    linking = (cfg.linking_model or record["pruned_with"]) if record.get("pruned_with") else system.linking_model
    return System(system.name, system.spec, system.stage, record.get("format") == "reasoning",
                  schema.model_dump(mode="json"), system.constrained, linking)


def _stage_output_exists(cfg: EvalParams, stage: str) -> bool:
    """A stage's model is usable when the stage finished (manifest) and saved weights."""
    folder = cfg.run_dir / stage
    has_weights = (folder / "adapter").is_dir() or (folder / "model").is_dir()
    return _stage_manifest(cfg, stage).is_file() and has_weights


CONSTRAINED_SUFFIX = "+constrained"
PRUNED_SUFFIX = "+pruned"
REVISE_SUFFIX = "+revise"
VARIANT_SUFFIXES = (CONSTRAINED_SUFFIX, PRUNED_SUFFIX, REVISE_SUFFIX)


def _split_variants(entry: str) -> tuple[str, set[str]]:
    """``sft+pruned+constrained`` -> (``sft``, {"+pruned", "+constrained"})."""
    variants: set[str] = set()
    while "=" not in entry:
        suffix = next((s for s in VARIANT_SUFFIXES if entry.endswith(s)), None)
        if suffix is None:
            break
        variants.add(suffix)
        entry = entry[: -len(suffix)]
    return entry, variants


def parse_system(entry: str, cfg: EvalParams) -> System:
    """``base`` | ``sft`` | ``grpo`` | ``dpo`` | ``name=spec`` -> :class:`System` (no checks).

    Suffixes make variants of the same model, each reported as a system of its own:

    - ``+constrained`` (``sft+constrained``): decoding under the schema constraint of
      :mod:`nl2sql_lib.constrained`, which only lets it write the question's own names;
    - ``+pruned`` (``sft+pruned``): each prompt shows only the tables and columns that the
      schema-linking model ``linking_model`` predicts for the question (the whole schema where it
      predicts nothing usable). A system whose SFT stage trained with ``prune_schema_with`` is
      pruned without the suffix, as it was trained;
    - ``+revise`` (``sft+revise``): answer greedily, execute, and when the answer fails (or has
      no SQL) ask the model once for a revision given the error; the revision is the answer.
      Its greedy first answers are the plain system's, reused from its predictions file when
      that is up to date.
    """
    entry = entry.strip()
    base, variants = _split_variants(entry)
    if variants:
        plain = parse_system(base, cfg)
        if CONSTRAINED_SUFFIX in variants and cfg.use_vllm:
            raise ValueError(
                f"eval parameter 'systems': {entry!r} needs schema-constrained decoding, which runs "
                "on the transformers path only: set use_vllm: false or drop the system"
            )
        linking = plain.linking_model
        if PRUNED_SUFFIX in variants:
            linking = cfg.linking_model or plain.linking_model
            if not linking:
                raise ValueError(
                    f"eval parameter 'systems': {entry!r} needs a schema-linking model: set "
                    "linking_model to its spec (a model trained by 02_sft with task: schema_linking)"
                )
        return replace(plain, name=plain.name + entry[len(base):], linking_model=linking,
                       constrained=plain.constrained or CONSTRAINED_SUFFIX in variants,
                       revise=plain.revise or REVISE_SUFFIX in variants)
    if "=" in entry:
        name, spec = (part.strip() for part in entry.split("=", 1))
        if not name or not spec or "/" in name:
            raise ValueError(
                f"eval parameter 'systems': {entry!r} must be NAME=MODEL_SPEC with a NAME "
                "without '/' (for example 'coder=Qwen/Qwen2.5-Coder-1.5B-Instruct')"
            )
        stage = spec.split(":", 1)[1] if spec.startswith("stage:") else None
        return _with_prompt_settings(System(name, spec, stage), cfg)
    if entry == "base":
        return _with_prompt_settings(System("base", cfg.base_model), cfg)
    if entry in STAGE_SYSTEMS:
        return _with_prompt_settings(System(entry, f"stage:{entry}", entry), cfg)
    raise ValueError(
        f"eval parameter 'systems': unknown system {entry!r}; use base, "
        f"{', '.join(STAGE_SYSTEMS)} or NAME=MODEL_SPEC"
    )


def resolve_systems(cfg: EvalParams) -> tuple[list[System], list[str]]:
    """The systems to evaluate (``systems`` then any best-of-N-only ones), and notes.

    A system whose stage has not produced a model stops with an error naming the notebook to
    run, unless it is listed in ``optional_systems``: then it is skipped and a note says so.
    """
    optional = set(cfg.optional_systems)
    systems, notes = [], []
    for entry in dict.fromkeys([*cfg.systems, *cfg.best_of_n_systems]):
        if entry in [s.name for s in systems]:  # best-of-N naming a listed name=spec system
            continue
        system = parse_system(entry, cfg)
        if system.stage and not _stage_output_exists(cfg, system.stage):
            producer = STAGE_SYSTEMS.get(system.stage, system.stage)
            notebook = NOTEBOOK_OF_STAGE.get(producer, producer)
            if system.stage in ("dpo", "revision_sft"):
                notebook += f".ipynb with {system.stage}: true"
            else:
                notebook += ".ipynb"
            where = cfg.run_dir / system.stage
            if entry in optional or system.name in optional:
                notes.append(
                    f"System '{system.name}' skipped: stage '{system.stage}' has no finished "
                    f"model in {where} (it is optional in this profile)."
                )
                continue
            raise MissingStageOutput(
                f"system '{system.name}' needs the model of stage '{system.stage}', but {where} "
                f"has no finished model (manifest.json plus adapter/ or model/): run "
                f"notebooks/{notebook} for run '{cfg.run}' first, or list "
                f"'{system.name}' in optional_systems / remove it from systems"
            )
        systems.append(system)
    return systems, notes


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


# The one seeded-subsample rule (nl2sql_lib/sampling.py); the old name stays for callers.
subsample = seeded_subsample


def drop_missing_databases(examples: list[Example]) -> tuple[list[Example], dict[str, int]]:
    """Questions whose database file exists, and per db_id how many were dropped."""
    kept, skipped = [], {}
    for ex in examples:
        if Path(ex.db_path).is_file():
            kept.append(ex)
        else:
            skipped[ex.db_id] = skipped.get(ex.db_id, 0) + 1
    return kept, skipped


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


# The run's default schema rendering: eval's parameter, else the data stage's, else defaults.
schema_params_for = runs.schema_params_for


def build_messages(
    examples: Sequence[Example], schema: SchemaParams, *, reasoning: bool = False,
    count_tokens: Callable[[str], int] | None = None, keeps: Sequence[dict | None] | None = None,
) -> list[list[dict]]:
    """The chat prompt of every example (schema text rendered as the training stages do).

    ``keeps``: per example, the tables/columns to show (a linking model's prediction) or None
    for the whole schema.
    """
    from ..data.prompts import sql_messages
    from ..data.schema import schema_text_for

    keeps = keeps if keeps is not None else [None] * len(examples)
    return [
        sql_messages(ex, schema_text_for(ex, schema, count_tokens=count_tokens, keep=keep), reasoning=reasoning)
        for ex, keep in zip(examples, keeps)
    ]


# --------------------------------------------------------------------------------------------
# Generation with a per-system cache
# --------------------------------------------------------------------------------------------


def record_key(dataset: str, example: Example) -> str:
    return f"{dataset}::{example.question_id}"


def fingerprint(system: System, cfg: EvalParams, n_candidates: int) -> dict[str, Any]:
    """What determines a system's predictions; cached records are reused only when it matches."""
    # the stage's model changes whenever its manifest does
    produced_by = runs.stage_manifest_sha256(cfg, system.stage) if system.stage else None
    return {
        "spec": system.spec,
        "stage_manifest_sha256": produced_by,
        "reasoning": system.reasoning,
        "max_new_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "num_candidates": n_candidates,
        "seed": cfg.seed,
        "schema_render": system.schema_render,
        "constrained": system.constrained,
        "linking_model": system.linking_model,
        # absent for plain systems, so older caches stay valid; 2 since answers over the 50 rows
        # the failure check fetches are no longer revised (predictions made before are stale)
        **({"revise": 2} if system.revise else {}),
    }


def predictions_path(eval_dir: Path, system: str) -> Path:
    return Path(eval_dir) / f"predictions_{system}.jsonl"


def load_cached(path: Path, meta: dict[str, Any], *, ignore: Sequence[str] = ()) -> dict[str, dict]:
    """Records of a predictions file whose meta matches ``meta`` (else none), by key; the meta
    keys in ``ignore`` are not compared."""
    meta_path = path.with_suffix(".meta.json")
    if not path.is_file() or not meta_path.is_file():
        return {}

    def compared(values: dict) -> dict:
        return {k: v for k, v in values.items() if k not in ignore}

    try:
        if compared(read_json(meta_path)) != compared(json.loads(json.dumps(meta))):
            return {}
        return {rec["key"]: rec for rec in iter_jsonl(path) if "key" in rec}
    except Exception:  # a damaged cache is regenerated, never trusted
        return {}


def _extract(text: str) -> str:
    from ..sql.extract import extract_sql

    return extract_sql(text)


def generate_predictions(
    system: System,
    datasets: Sequence[EvalSet],
    cfg: EvalParams,
    eval_dir: Path,
    make_generator: GeneratorFactory,
    *,
    best_of_n: bool,
    progress: bool = True,
) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Greedy predictions (and candidate pools when ``best_of_n``) of one system on every dataset.

    Returns the records by dataset name (in the datasets' order) and a small info dict
    (questions generated vs. reused, seconds, seconds per question). The generator is made
    only when something is missing, and freed before returning.
    """
    n_candidates = cfg.num_candidates if best_of_n else 1
    path = predictions_path(eval_dir, system.name)
    meta = fingerprint(system, cfg, n_candidates)
    cached = load_cached(path, meta)
    records: dict[str, dict] = dict(cached)
    todo = [
        (ds, ex) for ds in datasets for ex in ds.examples
        if not _complete(cached.get(record_key(ds.name, ex)), best_of_n and ds.best_of_n, n_candidates)
    ]
    # Datasets without candidate pools first: the best-of-N sample repeats some of their
    # questions, and then reuses the greedy answers they made (_greedy_made_elsewhere). Within
    # that, by database: a chunk then holds many questions on few databases, whose shared prompt
    # prefix the fast greedy path computes and reads once (generate.py).
    todo.sort(key=lambda item: (item[0].best_of_n, item[1].db_id))
    info: dict[str, Any] = {"system": system.name, "spec": system.spec, "reused": len(records)}
    if system.linking_model:
        info["linking_model"] = system.linking_model
    if system.constrained:
        info["constrained"] = True
    started = time.perf_counter()
    if todo:
        # Start the file afresh with the complete records kept, then append batch by batch.
        path.parent.mkdir(parents=True, exist_ok=True)
        wanted = {record_key(ds.name, ex) for ds in datasets for ex in ds.examples}
        keep = [rec for key, rec in records.items() if key in wanted]
        records = {rec["key"]: rec for rec in keep}
        write_jsonl(path, keep)
        write_json(path.with_suffix(".meta.json"), meta)
        keeps = _predict_keeps(system, todo, cfg, make_generator) if system.linking_model else {}
        if system.linking_model:
            info["pruned_questions"] = sum(keep is not None for keep in keeps.values())
        first = first_answers(system, cfg, eval_dir) if system.revise else {}
        if system.revise:
            info["first_answers_reused"] = sum(record_key(ds.name, ex) in first for ds, ex in todo)
        generator = _open_generator(make_generator, system, cfg, todo, keeps)
        try:
            _generate_missing(generator, todo, system, cfg, n_candidates, path, records, progress, keeps, first)
        finally:
            del generator
            free_memory()
    seconds = time.perf_counter() - started
    if system.revise:
        info["revised"] = sum(bool(rec.get("revised")) for rec in records.values())
    info.update(
        generated=len(todo), seconds=round(seconds, 1),
        seconds_per_question=round(seconds / len(todo), 2) if todo else None,
    )
    by_dataset = {
        ds.name: [records[record_key(ds.name, ex)] for ex in ds.examples] for ds in datasets
    }
    return by_dataset, info


def _predict_keeps(system: System, todo: list[tuple[EvalSet, Example]], cfg: EvalParams,
                   make_generator: GeneratorFactory) -> dict[str, dict | None]:
    """The linking model's tables/columns for each question to generate, by record key.

    The linking model is loaded through the same factory as the systems (a System named
    ``<system>:linker``) and freed before the system's own model loads.
    """
    # The linking prompts and their token budget come from train/sft.py, which sends them
    # (predict_links): the engine is sized by exactly what it will be asked.
    from ..data.linking import LINKING_MAX_NEW_TOKENS, linking_prompts, predict_links

    linking_system = System(f"{system.name}:linker", system.linking_model, task="schema_linking")
    examples = [ex for _, ex in todo]
    if make_generator is default_generator_factory and cfg.use_vllm:
        prompts = linking_prompts(examples, system.schema())
        linker = default_generator_factory(linking_system, cfg, prompts=prompts,
                                           max_new_tokens=LINKING_MAX_NEW_TOKENS)
    else:
        linker = make_generator(linking_system, cfg)
    try:
        keeps = predict_links(linker, examples, system.schema())
    finally:
        del linker
        free_memory()
    return {record_key(ds.name, ex): keep for (ds, ex), keep in zip(todo, keeps)}


def _open_generator(make_generator: GeneratorFactory, system: System, cfg: EvalParams,
                    todo: list[tuple[EvalSet, Example]], keeps: dict[str, dict | None]) -> GeneratorLike:
    """The system's generator. The default factory with vLLM is also given every prompt it will
    get, so that the engine's context (``max_model_len``) fits the longest of them."""
    if make_generator is not default_generator_factory or not cfg.use_vllm:
        return make_generator(system, cfg)
    examples = [ex for _, ex in todo]
    prompt_keeps = [keeps.get(record_key(ds.name, ex)) for ds, ex in todo] if keeps else None
    prompts = build_messages(examples, system.schema(), reasoning=system.reasoning, keeps=prompt_keeps)
    if not system.revise:
        return default_generator_factory(system, cfg, prompts=prompts)
    # revision prompts: their frames now, room for the previous SQL and its feedback later
    from ..data.prompts import revision_headroom_tokens, revision_messages
    from ..data.schema import schema_text_for

    prompts += [revision_messages(ex, schema_text_for(ex, system.schema()), "", "") for ex in examples]
    return default_generator_factory(system, cfg, prompts=prompts,
                                     headroom_tokens=revision_headroom_tokens(cfg.max_new_tokens))


def _complete(record: dict | None, wants_pool: bool, n_candidates: int) -> bool:
    if record is None or "pred_sql" not in record:
        return False
    return not wants_pool or len(record.get("candidates") or []) >= n_candidates


def _generate_missing(
    generator: GeneratorLike,
    todo: list[tuple[EvalSet, Example]],
    system: System,
    cfg: EvalParams,
    n_candidates: int,
    path: Path,
    records: dict[str, dict],
    progress: bool,
    keeps: dict[str, dict | None] | None = None,
    first: dict[str, str] | None = None,
) -> None:
    """Generate greedy answers, then the sampled rest of each pool, appending as it goes.

    ``first``: greedy answers already made (by record key) that a ``+revise`` system starts from.

    Questions go to the generator in chunks of a few batches: large enough for its batching
    (by database and length) to fill its batches, small enough that an interrupted run loses at
    most one chunk.
    """
    schema = system.schema()
    chunk = CHUNK_BATCHES * cfg.batch_size
    batches = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
    bar = _progress(len(todo), f"generate {system.name}", progress)
    for batch in batches:
        examples = [ex for _, ex in batch]
        batch_keeps = [keeps.get(record_key(ds.name, ex)) for ds, ex in batch] if keeps else None
        messages = build_messages(examples, schema, reasoning=system.reasoning, keeps=batch_keeps)
        # Constrained systems pass each question's database: its identifiers are the vocabulary.
        schemas = [ex.db_path for ex in examples] if system.constrained else None
        greedy = _greedy_texts(generator, batch, messages, schemas, cfg,
                               {**_greedy_made_elsewhere(batch, records), **(first or {})})
        revisions = _revise_failures(generator, examples, schema, greedy, schemas, cfg) if system.revise else {}
        pool_rows = [i for i, (ds, _) in enumerate(batch) if ds.best_of_n and n_candidates > 1]
        samples: dict[int, list[str]] = {}
        if pool_rows:
            sampled = generator.generate(
                [messages[i] for i in pool_rows], n=n_candidates - 1,
                temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                **({"schemas": [schemas[i] for i in pool_rows]} if schemas else {}),
            )
            samples = dict(zip(pool_rows, sampled))
        for i, (ds, ex) in enumerate(batch):
            record = _record(ds.name, ex, greedy[i][0], samples.get(i))
            if system.revise:
                record.update(_revision_fields(record, revisions.get(i)))
            if system.linking_model:
                record["schema_keep"] = batch_keeps[i]  # what the prompt showed (None: everything)
            records[record["key"]] = record
            append_jsonl(path, record)
        bar.update(len(batch))
    bar.close()


def _greedy_made_elsewhere(batch: list[tuple[EvalSet, Example]], records: dict[str, dict]) -> dict[str, str]:
    """Greedy answers (by the batch's record keys) this system already made for the same question
    in another dataset - the best-of-N sample repeats dev questions, and a greedy answer depends on
    the question and the system, not on the dataset it is scored in. A ``+revise`` record's first
    answer is its greedy one."""
    made = {(rec["question_id"], rec["db_id"]): rec.get("first_raw", rec["raw"])
            for rec in records.values() if "raw" in rec}
    found = {}
    for ds, ex in batch:
        text = made.get((ex.question_id, ex.db_id))
        if text is not None:
            found[record_key(ds.name, ex)] = text
    return found


def _greedy_texts(generator: GeneratorLike, batch: list[tuple[EvalSet, Example]], messages: list[list[dict]],
                  schemas: list | None, cfg: EvalParams, first: dict[str, str]) -> list[list[str]]:
    """The greedy answer of each row: from ``first`` where it has one, generated otherwise."""
    texts = [[first[record_key(ds.name, ex)]] if record_key(ds.name, ex) in first else None for ds, ex in batch]
    # a question in the batch twice (dev, and the best-of-N sample) is answered once
    rows_of: dict[tuple[str, str], list[int]] = {}
    for i, (_, ex) in enumerate(batch):
        if texts[i] is None:
            rows_of.setdefault((ex.question_id, ex.db_id), []).append(i)
    if rows_of:
        asked = [rows[0] for rows in rows_of.values()]
        made = generator.generate(
            [messages[i] for i in asked], n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens,
            **({"schemas": [schemas[i] for i in asked]} if schemas else {}),
        )
        for rows, text in zip(rows_of.values(), made):
            for i in rows:
                texts[i] = text
    return texts


def first_answers(system: System, cfg: EvalParams, eval_dir: Path) -> dict[str, str]:
    """The plain system's greedy answers (raw text by record key) when its predictions file was
    made with the same model, prompts and token budget; {} otherwise."""
    plain = replace(system, revise=False, name=system.name[: -len(REVISE_SUFFIX)]
                    if system.name.endswith(REVISE_SUFFIX) else system.name)
    # the greedy answer does not depend on the pool's size or temperature
    cached = load_cached(predictions_path(eval_dir, plain.name), fingerprint(plain, cfg, 1),
                         ignore=("num_candidates", "temperature"))
    return {key: rec["raw"] for key, rec in cached.items() if "raw" in rec}


def _revise_failures(generator: GeneratorLike, examples: list[Example], schema: SchemaParams,
                     greedy: list[list[str]], schemas: list | None, cfg: EvalParams) -> dict[int, dict]:
    """One revision round: each greedy answer that fails to run (or has no SQL) is shown to the
    model with the error, greedily; returns {row: {"feedback", "raw"}} for the revised rows."""
    from ..data.prompts import failure_feedback, revision_messages
    from ..data.schema import schema_text_for

    failing: dict[int, str] = {}
    for i, (ex, texts) in enumerate(zip(examples, greedy)):
        feedback = failure_feedback(ex.db_path, _extract(texts[0]) or "", timeout=cfg.sql_timeout)
        if feedback is not None:
            failing[i] = feedback
    if not failing:
        return {}
    rows = sorted(failing)
    prompts = [revision_messages(examples[i], schema_text_for(examples[i], schema), _extract(greedy[i][0]), failing[i])
               for i in rows]
    revised = generator.generate(prompts, n=1, temperature=0.0, max_new_tokens=cfg.max_new_tokens,
                                 **({"schemas": [schemas[i] for i in rows]} if schemas else {}))
    return {i: {"feedback": failing[i], "raw": texts[0]} for i, texts in zip(rows, revised)}


def _revision_fields(record: dict, revision: dict | None) -> dict:
    """A ``+revise`` record's answer: the revision when there was one, with the first answer kept."""
    if revision is None:
        return {"revised": False}
    return {"revised": True, "first_sql": record["pred_sql"], "first_raw": record["raw"],
            "feedback": revision["feedback"], "raw": revision["raw"], "pred_sql": _extract(revision["raw"])}


def _record(dataset: str, ex: Example, greedy_text: str, sampled: list[str] | None) -> dict:
    """One prediction record: the question, the greedy answer and, if any, the candidate pool."""
    pred = _extract(greedy_text)
    record = {
        "key": record_key(dataset, ex),
        "dataset": dataset,
        "question_id": ex.question_id,
        "db_id": ex.db_id,
        "difficulty": ex.difficulty,
        "question": ex.question,
        "gold_sql": ex.sql,
        "raw": greedy_text,
        "pred_sql": pred,
    }
    if sampled is not None:
        record["candidates"] = [pred, *(_extract(text) for text in sampled)]
        record["candidates_raw"] = [greedy_text, *sampled]
    return record


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="q")


def free_memory() -> None:
    """Give a freed model's memory back before the next one loads."""
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def default_generator_factory(system: System, cfg: EvalParams, *, prompts: Sequence[list[dict]] | None = None,
                              max_new_tokens: int | None = None, headroom_tokens: int = 0) -> GeneratorLike:
    """A transformers (or vLLM) generator for the system's model, from nl2sql_lib.generate.

    Transformers: on this process's GPU when there is one. vLLM: ``prompts`` (every prompt it
    will get), ``max_new_tokens`` (default ``cfg.max_new_tokens``) and ``headroom_tokens`` (room
    for prompts filled in later) size its context.
    """
    from ..generate import DEFAULT_STOP, EngineContext, make_generator

    context = None
    if cfg.use_vllm and prompts:
        context = EngineContext(prompts=prompts, max_new_tokens=max_new_tokens or cfg.max_new_tokens,
                                headroom_tokens=headroom_tokens)
    return make_generator(
        ModelParams(spec=system.spec), run_dir=cfg.run_dir, use_vllm=cfg.use_vllm,
        batch_size=cfg.batch_size, progress=False, seed=cfg.seed,
        stop_strings=DEFAULT_STOP if system.task == "sql" else None,  # a linking model answers JSON
        context=context,
    )


# --------------------------------------------------------------------------------------------
# Best of N
# --------------------------------------------------------------------------------------------

STRATEGIES = ("greedy", "vote", "rm", "rm_vote", "oracle")


def strategy_key(system: str, strategy: str, n: int) -> str:
    """``sft/greedy``, ``sft/vote@4``, ``sft/rm@4``, ``sft/rm_vote@4``, ``sft/oracle@4``."""
    return f"{system}/greedy" if strategy == "greedy" else f"{system}/{strategy}@{n}"


def pick_vote(records: list[dict], examples: list[Example], judge) -> list[str]:
    """Execution-result majority vote over each pool (failed SQL does not vote)."""
    from .selection import select_vote

    return [select_vote(rec["candidates"], ex.db_path, judge) for rec, ex in zip(records, examples)]


def pick_by_scores(records: list[dict], scores: list[list[float]], examples: list[Example], judge) -> list[str]:
    """The highest-scored candidate (a reward model's) among those that execute, first one on
    ties; a failing one only when none runs (see selection.select_runnable_by_score)."""
    from .selection import select_runnable_by_score

    return [select_runnable_by_score(rec["candidates"], s, ex.db_path, judge)
            for rec, s, ex in zip(records, scores, examples)]


def pick_rm_vote(records: list[dict], scores: list[list[float]], examples: list[Example], judge) -> list[str]:
    """Execution-result vote weighted by the reward model (see selection.select_weighted_vote)."""
    from .selection import select_weighted_vote

    return [select_weighted_vote(rec["candidates"], s, ex.db_path, judge)
            for rec, s, ex in zip(records, scores, examples)]


def pick_oracle(records: list[dict], examples: list[Example], judge) -> list[str]:
    """The first correct candidate of each pool, else its first: scores as pass@N."""
    from .selection import oracle_correct

    picks = []
    for rec, ex in zip(records, examples):
        cands = rec["candidates"]
        pick = cands[0]
        if oracle_correct(cands, ex.db_path, ex.sql, judge):
            pick = next(c for c in cands if judge.judge(ex.db_path, ex.sql, c).correct)
        picks.append(pick)
    return picks


def rm_scores(scorer, records: list[dict], examples: list[Example], system: System) -> list[list[float]]:
    """The reward model's score of every candidate, given the prompt the candidates answered.

    A candidate without SQL (nothing could be extracted) is not scored and gets -inf: like a
    failed query in the vote, it can only be picked when no candidate has SQL. The question's
    database goes along, so a reward model trained with execution feedback can run each candidate.
    """
    # The prompt the candidates answered: pruned as it was when they were generated.
    keeps = [rec.get("schema_keep") for rec in records] if system.linking_model else None
    messages = build_messages(examples, system.schema(), reasoning=system.reasoning, keeps=keeps)
    out = []
    for msgs, rec, ex in zip(messages, records, examples):
        sqls = [sql for sql in rec["candidates"] if sql]
        scored = iter([float(x) for x in scorer.score(msgs, sqls, db_path=ex.db_path)] if sqls else [])
        out.append([next(scored) if sql else float("-inf") for sql in rec["candidates"]])
    return out
