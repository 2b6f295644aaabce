"""Batched candidate generation: transformers on CPU, vLLM on a GPU, one interface.

    gen = make_generator(ModelParams(spec="stage:sft"), run_dir="outputs/cpu")
    texts = gen.generate([sql_messages(ex, schema) for ex in dev], n=4, temperature=0.8)
    # texts[i] holds the 4 candidates for question i

Prompts are chat messages; the tokenizer's chat template turns them into the model's prompt.
Generation is batched with left padding (so every prompt ends where its answer starts), greedy
when ``temperature == 0`` and sampled otherwise, ``n`` candidates per prompt, and stops once
the SQL is complete: at the end token, or at ``;`` (``stop_strings``; CPU-NOTES measured it).
Texts are cut right after the first stop string, the same as the vLLM path returns them.

Greedy answers take a faster path by default (``Generator(fast=True)``, issue #13): prompts that
share a long token prefix (the system message and the schema, for every question on one
database) are grouped, the prefix is run through the model once per group, and its keys and
values are stored once and read by every question of the group
(:mod:`nl2sql_lib.shared_prefix`), so only each question's few tokens are prefilled and a batch
can hold many rows (``FAST_ROWS_PER_BATCH``); finished rows leave the batch. Outputs are the
same greedy texts as the ``model.generate`` path (``fast=False``), up to float rounding: the
two paths add up the same numbers in a different order, which can flip a near-tie between two
tokens (see tests/bench/bench_generation.py, which counts and explains every difference on
Spider dev; in float32 the texts are identical, tests/test_generate.py).

Schema-constrained decoding (issue #4, :mod:`nl2sql_lib.constrained`): pass one database per
question and the model can only name that database's tables and columns::

    texts = gen.generate(messages, schemas=[ex.db_path for ex in dev])
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from . import hardware as hw_rules
from .config import ModelParams
from .hardware import Hardware
from .shared_prefix import supports_shared_prefix

if TYPE_CHECKING:
    from .constrained import SchemaSource

log = logging.getLogger(__name__)

DEFAULT_STOP = (";",)

# Rows per batch of the fast greedy path, per row of ``batch_size``. Measured on 96 Spider dev
# prompts (tests/bench/bench_generation.py, 1 thread): 16 rows 1.47 questions/s, 32 1.97,
# 64 2.35, 128 2.91 - the old path 0.56.
FAST_ROWS_PER_BATCH = 8


@dataclass
class EngineContext:
    """The prompts a vLLM engine will be given, so that its context (``max_model_len``) fits them.

    ``prompts``: every chat prompt known in advance; ``max_new_tokens``: the most it generates;
    ``headroom_tokens``: room for longer prompts made later (the tree stage's revision prompts
    add a previous SQL and its execution feedback to a root prompt).
    """

    prompts: Sequence[list[dict]]
    max_new_tokens: int
    headroom_tokens: int = 0


def _speed_stats(prompts: int, new_tokens: int, start: float) -> dict[str, Any]:
    """A generate call's size and speed since ``start`` (a ``time.perf_counter()`` reading)."""
    elapsed = time.perf_counter() - start
    return {
        "prompts": prompts,
        "new_tokens": new_tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(new_tokens / elapsed, 2) if elapsed > 0 else 0.0,
    }


def cut_at_stop(text: str, stop_strings: Sequence[str] | None) -> str:
    """``text`` up to and including the first stop string (unchanged when none occurs)."""
    if not stop_strings:
        return text
    ends = [text.find(s) + len(s) for s in stop_strings if s in text]
    return text[: min(ends)] if ends else text


class Generator:
    """Generate with a loaded transformers model.

    ``batch_size`` counts sequences (prompts x candidates) per forward pass, which is what
    bounds memory. Prompts are sorted by length so a batch wastes little on padding; results
    come back in the input order. ``constraint_top_k`` and ``constraint_widen``: how many of the
    best tokens the schema constraint checks per step, and whether it searches further when
    none is valid (see :class:`~nl2sql_lib.constrained.SchemaConstrainedLogitsProcessor`).

    ``fast`` (default True): greedy answers, schema-constrained or not, take the shared-prefix
    path (module docstring); False: every answer comes from ``model.generate`` (the path before
    issue #13, kept for comparison). Sampling always takes ``model.generate``.
    ``fast_batch_size``: questions per forward pass on that path
    (default ``FAST_ROWS_PER_BATCH * batch_size``): a row there holds only its question's and
    answer's keys and values (its prefix is stored once per database), and at these sizes a
    decoding step costs about the same at 8 rows as at 64 - reading the weights dominates -
    so the more rows share a step, the more questions per second.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        batch_size: int = 8,
        stop_strings: Sequence[str] | None = DEFAULT_STOP,
        progress: bool = True,
        seed: int = 0,
        constraint_top_k: int = 48,
        constraint_widen: bool = True,
        fast: bool = True,
        fast_batch_size: int | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.stop_strings = list(stop_strings) if stop_strings else None
        self.progress = progress
        self.seed = seed
        self.constraint_top_k = constraint_top_k
        self.constraint_widen = constraint_widen
        self.fast = fast
        self.fast_batch_size = fast_batch_size or FAST_ROWS_PER_BATCH * batch_size
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.last_stats: dict[str, float] = {}

    def prompt_texts(self, messages_batch: list[list[dict]]) -> list[str]:
        """The chat template applied, ending with the assistant's turn opening."""
        return [
            self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            for messages in messages_batch
        ]

    def generate(
        self,
        messages_batch: list[list[dict]],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_new_tokens: int = 128,
        top_p: float = 1.0,
        desc: str = "generating",
        schemas: Sequence["SchemaSource | None"] | None = None,
    ) -> list[list[str]]:
        """``n`` texts per prompt (greedy: ``n`` copies of the one greedy answer).

        ``schemas``: per prompt, the database (file path or schema) whose tables and columns
        its answer may name, or None to leave that prompt free; None: no constraint at all.
        Meant for answers that are plain SQL (a <think> block would be constrained too).
        """

        import torch
        from tqdm.auto import tqdm

        prompts = self.prompt_texts(messages_batch)
        vocabularies = self._vocabularies(schemas, len(prompts))
        greedy = temperature <= 0
        if greedy and self._fast_path_applies():
            return self._generate_greedy_fast(prompts, n, max_new_tokens, desc, vocabularies,
                                              report_constraint=schemas is not None)
        per_prompt = 1 if greedy else n
        prompts_per_batch = max(1, self.batch_size // per_prompt)
        lengths = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        results: list[list[str]] = [[] for _ in prompts]
        torch.manual_seed(self.seed)
        new_tokens = 0
        constraint: dict[str, int] = {}
        start = time.perf_counter()
        bar = tqdm(total=len(prompts), desc=desc, disable=not self.progress, unit="q")
        for first in range(0, len(order), prompts_per_batch):
            indices = order[first : first + prompts_per_batch]
            texts, count, stats = self._generate_batch(
                [prompts[i] for i in indices], per_prompt, temperature, top_p, max_new_tokens,
                [vocabularies[i] for i in indices],
            )
            new_tokens += count
            for key, value in stats.items():
                constraint[key] = constraint.get(key, 0) + value
            for k, i in enumerate(indices):
                candidates = texts[k * per_prompt : (k + 1) * per_prompt]
                results[i] = candidates * n if greedy else candidates
            bar.update(len(indices))
        bar.close()
        self.last_stats = _speed_stats(len(prompts), new_tokens, start)
        if schemas is not None:  # how often the constraint overrode the model's first choice
            self.last_stats.update({f"constraint_{k}": v for k, v in constraint.items()})
        return results

    def _fast_path_applies(self) -> bool:
        """The fast greedy path runs for an eval-mode model whose attention
        :mod:`nl2sql_lib.shared_prefix` reproduces (full attention: a sliding window would drop
        the shared prefix); everything else, and all sampling, goes through ``model.generate``."""
        return (
            self.fast
            and not self.model.training
            and supports_shared_prefix(self.model)
        )

    def _generate_greedy_fast(self, prompts: list[str], n: int, max_new_tokens: int, desc: str,
                              vocabularies: list, report_constraint: bool = False) -> list[list[str]]:
        """Greedy answers with each shared prompt prefix computed once (see the module docstring);
        rows with a vocabulary are constrained to their schema, as on the old path."""

        import torch
        from tqdm.auto import tqdm

        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        decoder = _GreedyDecoder(self.model, self.tokenizer, self.stop_strings, max_new_tokens)
        results: list[list[str]] = [[] for _ in prompts]
        torch.manual_seed(self.seed)
        start = time.perf_counter()
        groups = shared_prefix_groups(ids)
        prefixes: dict[int, Any] = {}  # group -> its prefix's keys/values, while a batch needs it
        group_of = {i: g for g, (_, members) in enumerate(groups) for i in members}
        new_tokens = 0
        constraint_stats: dict[str, int] = {}
        # By group, longest prompt first within a group: a batch holds few groups (each group's
        # prefix is read once per step for all its rows) and its rows pad little.
        order = sorted(range(len(prompts)), key=lambda i: (group_of[i], -len(ids[i])))
        bar = tqdm(total=len(prompts), desc=desc, disable=not self.progress, unit="q")
        for first in range(0, len(order), self.fast_batch_size):
            batch = order[first : first + self.fast_batch_size]
            row_groups = [group_of[i] for i in batch]
            for g in dict.fromkeys(row_groups):  # computed when its first row comes up
                if g not in prefixes:
                    prefixes[g] = decoder.prefill_prefix(ids[groups[g][1][0]][: groups[g][0]])
            constraint = self._constraint([vocabularies[i] for i in batch], 1, greedy=True)
            texts, count = decoder.decode_batch(prefixes, row_groups, [groups[g][0] for g in row_groups],
                                                [ids[i] for i in batch], constraint)
            new_tokens += count
            for key, value in (constraint.stats if constraint is not None else {}).items():
                constraint_stats[key] = constraint_stats.get(key, 0) + value
            for i, text in zip(batch, texts):
                results[i] = [cut_at_stop(text, self.stop_strings).strip()] * n
            # rows come by group: every group of this batch but its last is finished
            for g in [g for g in prefixes if g != row_groups[-1]]:
                del prefixes[g]
            bar.update(len(batch))
        bar.close()
        self.last_stats = {
            **_speed_stats(len(prompts), new_tokens, start),
            "prefix_groups": len(groups),
            "prompt_tokens": sum(len(x) for x in ids),
            "prompt_tokens_computed": sum(prefix_len + sum(len(ids[i]) - prefix_len for i in members)
                                          for prefix_len, members in groups),
        }
        if report_constraint:  # how often the constraint overrode the model's first choice
            self.last_stats.update({f"constraint_{k}": v for k, v in constraint_stats.items()})
        return results

    @staticmethod
    def _vocabularies(schemas, count: int) -> list:
        """One :class:`~nl2sql_lib.constrained.SchemaVocabulary` (or None) per prompt."""
        if schemas is None:
            return [None] * count
        if len(schemas) != count:
            raise ValueError(
                f"generate: {len(schemas)} schemas for {count} prompts; give one per prompt (or None)"
            )
        from .constrained import schema_vocabulary

        return [None if s is None else schema_vocabulary(s) for s in schemas]

    def _constraint(self, vocabularies, per_prompt: int, greedy: bool):
        """The schema constraint for a batch, or None when no prompt of it is constrained."""
        if all(v is None for v in vocabularies):
            return None
        from .constrained import SchemaConstrainedLogitsProcessor

        # generate() repeats each prompt's row per_prompt times (num_return_sequences), in order
        rows = [v for v in vocabularies for _ in range(per_prompt)]
        return SchemaConstrainedLogitsProcessor(
            self.tokenizer, rows, top_k=self.constraint_top_k, first_valid_only=greedy,
            widen=self.constraint_widen,
        )

    def _generate_batch(self, prompts, per_prompt, temperature, top_p, max_new_tokens, vocabularies):
        import torch
        from transformers import LogitsProcessorList

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if self.stop_strings:
            kwargs["stop_strings"] = self.stop_strings
            kwargs["tokenizer"] = self.tokenizer  # generate() needs it to match stop strings
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, num_return_sequences=per_prompt)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        constraint = self._constraint(vocabularies, per_prompt, greedy=temperature <= 0)
        if constraint is not None:
            kwargs["logits_processor"] = LogitsProcessorList([constraint])
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        completions = out[:, enc["input_ids"].shape[1] :]
        # Tokens before the first pad/end count as generated (for the tokens/s figure).
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        finished = (completions == pad) | (completions == eos)
        counted = int(torch.where(finished.any(1), finished.int().argmax(1) + 1, completions.shape[1]).sum())
        texts = self.tokenizer.batch_decode(completions, skip_special_tokens=True)
        stats = constraint.stats if constraint is not None else {}
        return [cut_at_stop(t, self.stop_strings).strip() for t in texts], counted, stats


# --------------------------------------------------------------------------------------------
# The fast greedy path: shared prefixes computed once, finished rows leave the batch
# --------------------------------------------------------------------------------------------

# A prompt joins a group when the prefix it shares with the group is at least this share of the
# shorter prompt: questions on one database share ~90% (system message and schema), questions on
# different databases only the system message (~10%).
MIN_SHARED_PREFIX = 0.5


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def shared_prefix_groups(token_ids: Sequence[Sequence[int]],
                         min_share: float = MIN_SHARED_PREFIX) -> list[tuple[int, list[int]]]:
    """Prompts grouped by a shared token prefix: ``[(prefix_length, [prompt indices]), ...]``.

    Sorted lexicographically, prompts with a common prefix are neighbours and a group's prefix
    is the smallest common prefix of neighbours in it. A prompt joins the group before it while
    that prefix stays at least ``min_share`` of the group's shortest prompt. The prefix always
    leaves each prompt at least one token of its own (the model needs a last token to predict
    from). Every index appears in exactly one group.
    """
    order = sorted(range(len(token_ids)), key=lambda i: list(token_ids[i]))
    groups: list[tuple[int, list[int]]] = []
    shortest = 0
    for i in order:
        if groups:
            prefix, members = groups[-1]
            shared = min(prefix, common_prefix_length(token_ids[members[-1]], token_ids[i]))
            shorter = min(shortest, len(token_ids[i]))
            if shared >= min_share * shorter and shared > 0:
                groups[-1] = (shared, members + [i])
                shortest = shorter
                continue
        groups.append((len(token_ids[i]), [i]))
        shortest = len(token_ids[i])
    return [(min(prefix, *(len(token_ids[i]) - 1 for i in members)), members) for prefix, members in groups]


class _GreedyDecoder:
    """Greedy decoding of batches whose rows start from shared prefixes, with the stops of
    ``model.generate``.

    A row is ``[its group's prefix][its own tokens: question, then answer]``. Prefixes are
    computed once per group (:meth:`prefill_prefix`) and attended to through
    :class:`~nl2sql_lib.shared_prefix.SharedPrefixBatch`; each row's own tokens are left-padded
    to the batch's widest, the padding masked out and skipped by the position ids, so every row
    sees exactly the positions and tokens it would see alone. Stops: the end token, or
    ``transformers``' own StopStringCriteria on the row's last tokens (the same rule
    ``model.generate(stop_strings=...)`` applies).
    """

    # Finished rows stay in the batch (their tokens are ignored) until they are this share of
    # it: dropping them copies every layer's buffers, which costs more than a few idle rows -
    # the weights, read once per step whatever the rows, dominate a step at these batch sizes.
    COMPACT_WHEN_FINISHED = 0.25

    def __init__(self, model, tokenizer, stop_strings: Sequence[str] | None, max_new_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id
        self.stop = None
        self.tail = 1
        if stop_strings:
            from transformers import StopStringCriteria

            self.stop = StopStringCriteria(tokenizer, list(stop_strings))
            self.tail = self.stop.maximum_token_len

    def prefill_prefix(self, prefix: Sequence[int]) -> list[tuple[Any, Any]]:
        """Per layer, the keys and values of ``prefix`` (``[kv_heads, len, head_dim]``, float32),
        computed once and read by every batch row of its group."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        if prefix:
            with torch.inference_mode():
                self.model(input_ids=torch.tensor([list(prefix)], device=self.model.device),
                           past_key_values=cache, use_cache=True, logits_to_keep=1)
            return [(layer.keys[0].float(), layer.values[0].float()) for layer in cache.layers]
        config = self.model.config.get_text_config(decoder=True)
        heads = config.num_key_value_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        empty = torch.zeros((heads, 0, dim), dtype=torch.float32, device=self.model.device)
        return [(empty, empty)] * config.num_hidden_layers

    def decode_batch(self, prefixes: list, row_groups: list[int], prefix_lens: list[int],
                     prompts: list[list[int]], constraint=None) -> tuple[list[str], int]:
        """Greedy texts (decoded, not yet cut) of full prompts, row ``r`` starting with the
        ``prefix_lens[r]`` tokens whose keys and values are ``prefixes[row_groups[r]]``, and how
        many tokens were generated. Rows of one group must be adjacent. ``constraint``: a
        :class:`~nl2sql_lib.constrained.SchemaConstrainedLogitsProcessor` with one vocabulary
        per row, applied to every step's logits as ``model.generate`` applies it."""
        import torch

        from .shared_prefix import SharedPrefixBatch, shared_prefix_attention_on

        device = self.model.device
        own = [p[n:] for p, n in zip(prompts, prefix_lens)]
        rows = len(own)
        width = max(len(t) for t in own)
        input_ids = torch.full((rows, width), self.pad, dtype=torch.long)
        real = torch.zeros((rows, width), dtype=torch.bool)
        for r, tokens in enumerate(own):
            input_ids[r, width - len(tokens) :] = torch.tensor(tokens)
            real[r, width - len(tokens) :] = True
        starts = torch.tensor(prefix_lens, dtype=torch.long)[:, None]
        positions = (starts + real.long().cumsum(1) - 1).clamp(min=0).to(device)
        tails = self._tails(prompts).to(device)
        state = SharedPrefixBatch(prefixes, row_groups, capacity=width + self.max_new_tokens)
        answers: list[list[int]] = [[] for _ in own]
        row_to_prompt = torch.arange(rows, device=device)  # batch row -> prompt index
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        # What the constraint's scanners are fed: one placeholder "prompt" column (the processor's
        # first call takes everything so far as the prompt: constrained.py, _catch_up), then each
        # step's tokens, the pad token for rows already finished - as model.generate pads them.
        # (Its step counts include a row's step after it finished unless the row was compacted
        # away first, so constraint_steps can differ slightly from the old path's.)
        generated = torch.full((rows, 1), self.pad, dtype=torch.long, device=device)
        with torch.inference_mode(), shared_prefix_attention_on(self.model):
            logits = self._forward(state, input_ids.to(device), real.to(device), positions)
            next_positions = positions[:, -1:] + 1
            for step in range(self.max_new_tokens):
                if constraint is not None:
                    logits = constraint(generated, logits.float())
                tokens = logits.argmax(-1)
                if constraint is not None:
                    generated = torch.cat([generated, torch.where(finished, self.pad, tokens)[:, None]], dim=1)
                for r, token, done_before in zip(row_to_prompt.tolist(), tokens.tolist(), finished.tolist()):
                    if not done_before:
                        answers[r].append(token)
                done = tokens == self.eos
                if self.stop is not None:
                    tails = torch.cat([tails[:, 1:], tokens[:, None]], dim=1)
                    done |= self.stop(tails, None)
                finished |= done
                if step + 1 == self.max_new_tokens or bool(finished.all()):
                    break
                if int(finished.sum()) >= max(1, self.COMPACT_WHEN_FINISHED * len(row_to_prompt)):
                    keep = (~finished).nonzero().squeeze(1)
                    state.keep_rows(keep)
                    row_to_prompt, tokens, tails = row_to_prompt[keep], tokens[keep], tails[keep]
                    next_positions, finished, generated = next_positions[keep], finished[keep], generated[keep]
                    if constraint is not None:
                        constraint.scanners = [constraint.scanners[r] for r in keep.tolist()]
                logits = self._forward(state, tokens[:, None], torch.ones_like(tokens[:, None], dtype=torch.bool),
                                       next_positions)
                next_positions = next_positions + 1
        texts = self.tokenizer.batch_decode(answers, skip_special_tokens=True)
        return texts, sum(len(a) for a in answers)

    def _forward(self, state, input_ids, real, positions):
        """The next-token logits of every row after ``input_ids`` (``real``: which are tokens,
        not padding) at ``positions``, attending through ``state``."""
        state.begin_step(real)
        out = self.model(input_ids=input_ids, position_ids=positions, use_cache=False, logits_to_keep=1,
                         shared_prefix=state)
        return out.logits[:, -1, :]

    def _tails(self, prompts: list[list[int]]):
        """Each prompt's last ``self.tail`` tokens (left-filled with the pad token, as the
        left-padded batch of ``model.generate`` shows a short prompt), for the stop check."""
        import torch

        tails = torch.full((len(prompts), self.tail), self.pad, dtype=torch.long)
        for r, tokens in enumerate(prompts):
            last = tokens[-self.tail :]
            tails[r, self.tail - len(last) :] = torch.tensor(last)
        return tails


# --------------------------------------------------------------------------------------------
# vLLM (GPU): same interface, imported only when asked for
# --------------------------------------------------------------------------------------------


def vllm_llm_kwargs(model_params: ModelParams, model_path: str | Path, *, adapter_rank: int | None = None,
                    seed: int = 0, gpu_memory_utilization: float = 0.85, max_model_len: int | None = None,
                    hardware: Hardware | None = None) -> dict[str, Any]:
    """Arguments of ``vllm.LLM``; an adapter is served through vLLM's LoRA support.

    ``dtype`` is explicit: bf16 from compute capability 8.0, fp16 below (vLLM refuses bf16 on a
    T4, also when its "auto" reads bf16 from the model's config). ``max_model_len``: sized from
    the prompts by the caller (:func:`engine_max_model_len`); ``model.max_seq_length`` when not
    given.
    """
    hw = hardware if hardware is not None else hw_rules.detect_hardware()
    dtype = hw_rules.choose_dtype(model_params.dtype, hw)
    hw_rules.log_decisions(dtype, log)
    kwargs: dict[str, Any] = {
        "model": str(model_path),
        "dtype": dtype.choice,
        "max_model_len": max_model_len if max_model_len is not None else model_params.max_seq_length,
        "gpu_memory_utilization": gpu_memory_utilization,
        "seed": seed,
    }
    if model_params.quantization == "4bit":
        kwargs["quantization"] = "bitsandbytes"
    if adapter_rank is not None:
        kwargs.update(enable_lora=True, max_lora_rank=max(8, adapter_rank))
    return kwargs


def model_max_positions(model_path: str | Path) -> int | None:
    """``max_position_embeddings`` from a model folder's config.json (or its text_config), or None."""
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    for section in (config, config.get("text_config") or {}):
        value = section.get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return None


def vllm_prompt_length(tokenizer: Any, prompt_text: str) -> int:
    """Tokens vLLM makes of a text prompt: ``LLM.generate`` tokenizes a string with the
    tokenizer's special tokens (``add_special_tokens=True``), so a tokenizer that adds a BOS
    adds it again in front of a chat template that already starts with one. Counted exactly as
    vLLM does, not as the transformers path (``add_special_tokens=False``) feeds the model."""
    return len(tokenizer(prompt_text, add_special_tokens=True)["input_ids"])


def longest_prompt_tokens(tokenizer: Any, messages_batch: Sequence[list[dict]]) -> int:
    """Tokens of the longest chat-templated prompt (assistant turn opened) as vLLM counts them
    (:func:`vllm_prompt_length`), 0 for none."""
    longest = 0
    for messages in messages_batch:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        longest = max(longest, vllm_prompt_length(tokenizer, text))
    return longest


def engine_max_model_len(tokenizer: Any, model_path: str | Path, context: "EngineContext | None",
                         model_params: ModelParams) -> int:
    """vLLM's ``max_model_len`` for the prompts an engine will get (see :class:`EngineContext`),
    capped at the model's ``max_position_embeddings``; ``model.max_seq_length`` without them."""
    limit = model_max_positions(model_path)
    if context is None or not context.prompts:
        wanted = model_params.max_seq_length
        capped = min(wanted, limit) if limit else wanted
        decision = hw_rules.Decision(
            "max_model_len", capped,
            f"model.max_seq_length {wanted} (the prompts were not given to size it)"
            + (f", capped at max_position_embeddings {limit}" if capped < wanted else ""))
    else:
        decision = hw_rules.vllm_max_model_len(
            longest_prompt_tokens(tokenizer, context.prompts), context.max_new_tokens,
            headroom_tokens=context.headroom_tokens, model_max_positions=limit)
    hw_rules.log_decisions(decision, log)
    return decision.choice


def vllm_sampling_kwargs(*, n: int, temperature: float, max_new_tokens: int, top_p: float = 1.0,
                         stop_strings: Sequence[str] | None = DEFAULT_STOP, seed: int | None = None) -> dict[str, Any]:
    """Arguments of ``vllm.SamplingParams``, matching the transformers path's behaviour."""
    greedy = temperature <= 0
    kwargs: dict[str, Any] = {
        "n": 1 if greedy else n,
        "temperature": 0.0 if greedy else temperature,
        "top_p": 1.0 if greedy else top_p,
        "max_tokens": max_new_tokens,
        "seed": seed,
    }
    if stop_strings:
        kwargs.update(stop=list(stop_strings), include_stop_str_in_output=True)
    return kwargs


class VLLMGenerator:
    """The :class:`Generator` interface over a vLLM engine (GPU machines).

    ``context``: the prompts it will get, which size vLLM's ``max_model_len`` (a prompt longer
    than that is refused by vLLM, stopping the whole batch). A prompt that still does not fit
    (one longer than foreseen) gets fewer new tokens, or an empty answer with a warning when
    it does not fit at all, instead of failing the batch.
    """

    def __init__(self, model_params: ModelParams, *, run_dir=None, stop_strings=DEFAULT_STOP, seed: int = 0,
                 context: EngineContext | None = None):
        from .models import GPUOnlyError, load_tokenizer, resolve_spec

        if importlib.util.find_spec("vllm") is None:
            raise GPUOnlyError(
                "use_vllm: true needs vLLM: pip install 'nl2sql_lib[gpu]' on a CUDA machine, or set "
                "use_vllm: false to generate with transformers"
            )
        hardware = hw_rules.detect_hardware()
        if not hardware.cuda:
            raise GPUOnlyError("use_vllm: true needs a CUDA GPU and none was found; set use_vllm: false here")
        from vllm import LLM

        resolved = resolve_spec(model_params.spec, run_dir)
        self.tokenizer = load_tokenizer(resolved, run_dir)
        self.stop_strings = list(stop_strings) if stop_strings else None
        self.seed = seed
        self.lora_request = None
        rank = None
        if resolved.adapter_path is not None:
            from vllm.lora.request import LoRARequest

            rank = json.loads((resolved.adapter_path / "adapter_config.json").read_text())["r"]
            self.lora_request = LoRARequest("adapter", 1, str(resolved.adapter_path))
        self.max_model_len = engine_max_model_len(self.tokenizer, resolved.path, context, model_params)
        self.llm = LLM(**vllm_llm_kwargs(model_params, resolved.path, adapter_rank=rank, seed=seed,
                                         max_model_len=self.max_model_len, hardware=hardware))
        self.last_stats: dict[str, float] = {}

    def generate(self, messages_batch, *, n=1, temperature=0.0, max_new_tokens=128, top_p=1.0, desc="",
                 schemas=None):
        from vllm import SamplingParams

        if schemas is not None and any(s is not None for s in schemas):
            raise NotImplementedError(
                "schema-constrained decoding runs on the transformers path only: set use_vllm: false"
            )
        prompts = [
            self.tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages_batch
        ]
        lengths = [vllm_prompt_length(self.tokenizer, p) for p in prompts]
        budgets = fitting_new_tokens(lengths, max_new_tokens, self.max_model_len)
        fits = [i for i, budget in enumerate(budgets) if budget > 0]
        if len(fits) < len(prompts):
            log.warning("%d of %d prompts are longer than vLLM's max_model_len=%d: answered with empty text",
                        len(prompts) - len(fits), len(prompts), self.max_model_len)
        params = [
            SamplingParams(**vllm_sampling_kwargs(
                n=n, temperature=temperature, max_new_tokens=budgets[i], top_p=top_p,
                stop_strings=self.stop_strings, seed=self.seed,
            ))
            for i in fits
        ]
        outputs = self.llm.generate([prompts[i] for i in fits], params, lora_request=self.lora_request) if fits else []
        results: list[list[str]] = [[""] * n for _ in prompts]
        for i, out in zip(fits, outputs):
            texts = [c.text.strip() for c in out.outputs]
            results[i] = texts * n if temperature <= 0 else texts
        return results


def fitting_new_tokens(prompt_lengths: Sequence[int], max_new_tokens: int, max_model_len: int) -> list[int]:
    """Per prompt, the new tokens that fit vLLM's context: ``max_new_tokens``, fewer for a long
    prompt, 0 for one that does not fit at all (vLLM would refuse it and stop the batch)."""
    return [max(0, min(max_new_tokens, max_model_len - length)) for length in prompt_lengths]


def make_generator(
    model_params: ModelParams,
    *,
    run_dir: str | Path | None = None,
    use_vllm: bool = False,
    batch_size: int = 8,
    stop_strings: Sequence[str] | None = DEFAULT_STOP,
    progress: bool = True,
    seed: int = 0,
    context: EngineContext | None = None,
):
    """Load the model of ``model_params`` and wrap it in a generator.

    Without vLLM the model loads onto this process's GPU (``cuda:{LOCAL_RANK}``) when there is
    one, else the CPU. ``context`` (vLLM only): the prompts the engine will get, which size its
    ``max_model_len``.
    """
    if use_vllm:
        return VLLMGenerator(model_params, run_dir=run_dir, stop_strings=stop_strings, seed=seed, context=context)
    from .models import load_model

    model, tokenizer = load_model(model_params, run_dir=run_dir, for_training=False)
    return Generator(model, tokenizer, batch_size=batch_size, stop_strings=stop_strings, progress=progress, seed=seed)
