"""Statistics of a loaded dataset, and the plots the 01_data notebook shows.

    counters = token_counters("tiny:smollm2")        # SmolLM2's tokenizer, or a chars/3 estimate
    stats = dataset_stats({"train": [...], "dev": [...]}, schema_params, counters)
    fig = plot_difficulty_by_db(stats)

Prompt lengths are measured on the exact chat the training stages build
(:func:`~nl2sql_lib.data.prompts.sql_messages` with the rendered schema, through the
tokenizer's chat template), so the numbers say whether a profile's ``max_length`` fits.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from .example import Example
from .prompts import sql_answer, sql_messages
from .schema import MissingDatabase, approx_tokens, read_schema, render_schema

THRESHOLDS = (256, 384, 512, 1024)


@dataclass
class TokenCounters:
    """``text(str) -> int``, ``chat(messages) -> int`` and ``chats(list of messages) -> list``
    (batched: much faster for thousands of prompts); ``name`` says what measures them."""

    text: Callable[[str], int]
    chat: Callable[[list[dict]], int]
    name: str
    chats: Callable[[list[list[dict]]], list[int]] | None = None
    texts: Callable[[list[str]], list[int]] | None = None

    def many(self, conversations: list[list[dict]]) -> list[int]:
        if self.chats is not None:
            return self.chats(conversations)
        return [self.chat(m) for m in conversations]

    def many_texts(self, values: list[str]) -> list[int]:
        if self.texts is not None:
            return self.texts(values)
        return [self.text(v) for v in values]


def token_counters(tokenizer_spec: str | None = None, run_dir=None) -> TokenCounters:
    """Counters from a model spec's tokenizer (chat template included), else an estimate.

    Without a spec, or when the tokenizer cannot be loaded (offline, no cache), lengths are
    estimated at three characters per token plus a few tokens of chat markup per message; the
    ``name`` says which one was used, and the stats record it.
    """
    if tokenizer_spec:
        try:
            from ..models import load_tokenizer

            tokenizer = load_tokenizer(tokenizer_spec, run_dir)
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the estimate
            import warnings

            warnings.warn(f"tokenizer {tokenizer_spec!r} unavailable ({exc}); using chars/3 estimate")
        else:

            def text(value: str) -> int:
                return len(tokenizer(value, add_special_tokens=False)["input_ids"])

            def chat(messages: list[dict]) -> int:
                add = messages[-1]["role"] != "assistant"
                ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add)
                return len(ids["input_ids"] if hasattr(ids, "keys") else ids)

            def chats(conversations: list[list[dict]]) -> list[int]:
                # render with the chat template, then tokenize in one batch (Rust, parallel)
                strings = [
                    tokenizer.apply_chat_template(
                        m, tokenize=False, add_generation_prompt=m[-1]["role"] != "assistant"
                    )
                    for m in conversations
                ]
                if not strings:
                    return []
                ids = tokenizer(strings, add_special_tokens=False)["input_ids"]
                return [len(x) for x in ids]

            def texts(values: list[str]) -> list[int]:
                if not values:
                    return []
                return [len(x) for x in tokenizer(values, add_special_tokens=False)["input_ids"]]

            return TokenCounters(text, chat, f"{tokenizer_spec} tokenizer", chats, texts)
    return TokenCounters(
        approx_tokens, lambda messages: sum(approx_tokens(m["content"]) + 5 for m in messages),
        "chars/3 estimate",
    )


def _summary(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    summary = {
        "n": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }
    summary["over"] = {str(t): sum(v > t for v in ordered) for t in THRESHOLDS}
    return summary


def dataset_stats(
    splits: dict[str, list[Example]],
    schema_params,
    counters: TokenCounters | None = None,
    *,
    reports: dict[str, dict] | None = None,
) -> dict:
    """Counts, schema sizes and prompt lengths of ``splits`` (see the module docstring).

    ``reports``: the loaders' reports by source name (missing databases, skipped records).
    """
    counters = counters or token_counters(None)
    stats: dict = {
        "counts": {}, "by_source": {}, "by_difficulty": {}, "by_db": {}, "db_difficulty": {}, "databases": {},
    }
    for split, examples in splits.items():
        stats["counts"][split] = len(examples)
        stats["by_source"][split] = dict(Counter(e.source for e in examples))
        stats["by_difficulty"][split] = dict(Counter(e.difficulty for e in examples))
        stats["by_db"][split] = dict(Counter(e.db_id for e in examples).most_common())
        stats["databases"][split] = sorted({e.db_id for e in examples})
        per_db: dict[str, Counter] = {}
        for e in examples:
            per_db.setdefault(e.db_id, Counter())[e.difficulty] += 1
        stats["db_difficulty"][split] = {db: dict(c) for db, c in per_db.items()}
    stats["with_evidence"] = {s: sum(bool(e.evidence) for e in ex) for s, ex in splits.items()}
    stats["with_reasoning"] = {s: sum(bool(e.reasoning) for e in ex) for s, ex in splits.items()}
    stats["with_links"] = {
        s: sum(bool(e.schema_links and e.schema_links.get("tables")) for e in ex) for s, ex in splits.items()
    }
    train_dbs, dev_dbs = set(stats["databases"].get("train", [])), set(stats["databases"].get("dev", []))
    stats["db_overlap"] = sorted(train_dbs & dev_dbs)
    stats["missing_db"] = {
        s: [e.question_id for e in ex if e.extra.get("missing_db")] for s, ex in splits.items()
    }
    stats["schema"], texts = _schema_sizes(splits, schema_params, counters)
    stats["prompt_tokens"], stats["sequence_tokens"], lengths = _prompt_lengths(splits, texts, counters)
    stats["prompt_token_lengths"] = lengths
    stats["token_counter"] = counters.name
    stats["schema_render"] = schema_params.model_dump() if hasattr(schema_params, "model_dump") else dict(schema_params)
    if reports:
        stats["sources"] = {
            name: {k: v for k, v in report.items() if k in ("files", "skipped", "databases_created", "db_root")}
            | {"missing_db": len(report.get("missing_db", []))}
            for name, report in reports.items()
        }
    return stats


def _schema_sizes(splits, schema_params, counters) -> tuple[dict, dict]:
    """Per database: tables, columns, foreign keys, full and budgeted schema tokens."""
    sizes: dict[str, dict] = {}
    texts: dict[str, str] = {}
    for split, examples in splits.items():
        for example in examples:
            if example.db_path in texts or example.extra.get("missing_db"):
                continue
            try:
                schema = read_schema(
                    example.db_path, sample_values=schema_params.sample_values,
                    max_value_chars=schema_params.max_value_chars,
                )
            except MissingDatabase:
                continue
            options = dict(style=schema_params.style, include_descriptions=schema_params.include_descriptions)
            # rendered as the stages render it (schema_text_for's default budget counter), then
            # measured with the real tokenizer
            text = render_schema(schema, max_tokens=schema_params.max_tokens, **options)
            texts[example.db_path] = text
            sizes[example.db_id] = {
                "split": split,
                "tables": len(schema.tables),
                "columns": schema.n_columns,
                "foreign_keys": schema.n_foreign_keys,
                "schema_tokens_full": counters.text(render_schema(schema, **options)),
                "schema_tokens": counters.text(text),
            }
    return sizes, texts


def _prompt_lengths(splits, texts, counters) -> tuple[dict, dict, dict]:
    """Prompt tokens (chat template, generation prompt included) and full sequence tokens.

    A sequence is the prompt plus the answer plus the template's end-of-turn markup; the
    markup's length is measured once, so each prompt is tokenized only once.
    """
    probe = [{"role": "user", "content": "x"}]
    markup = (
        counters.chat(probe + [{"role": "assistant", "content": "SELECT 1;"}])
        - counters.chat(probe)
        - counters.text("SELECT 1;")
    )
    prompts: dict[str, dict] = {}
    sequences: dict[str, dict] = {}
    lengths: dict[str, list[int]] = {}
    for split, examples in splits.items():
        conversations, answers = [], []
        for example in examples:
            text = texts.get(example.db_path)
            if text is None:
                continue
            conversations.append(sql_messages(example, text))
            answers.append(sql_answer(example))
        prompt_lengths = counters.many(conversations)
        answer_lengths = counters.many_texts(answers)
        sequence_lengths = [p + a + markup for p, a in zip(prompt_lengths, answer_lengths)]
        prompts[split] = _summary(prompt_lengths)
        sequences[split] = _summary(sequence_lengths)
        lengths[split] = prompt_lengths
    return prompts, sequences, lengths


def headline(stats: dict) -> dict:
    """The few figures the manifest and the README quote."""
    counts = stats["counts"]
    return {
        "n_train": counts.get("train", 0),
        "n_dev": counts.get("dev", 0),
        "train_databases": len(stats["databases"].get("train", [])),
        "dev_databases": len(stats["databases"].get("dev", [])),
        "db_overlap": len(stats["db_overlap"]),
        "missing_db": sum(len(v) for v in stats["missing_db"].values()),
        "prompt_tokens_median": stats["prompt_tokens"].get("train", {}).get("median"),
        "prompt_tokens_p90": stats["prompt_tokens"].get("train", {}).get("p90"),
        "prompt_tokens_max": max((s.get("max", 0) for s in stats["prompt_tokens"].values()), default=0),
        "with_reasoning": sum(stats["with_reasoning"].values()),
    }


# --------------------------------------------------------------------------------------------
# Plots (matplotlib, imported lazily)
# --------------------------------------------------------------------------------------------


def _plt():
    # matplotlib picks a headless backend by itself when there is no display (Agg) and the
    # inline one in a notebook kernel
    import matplotlib.pyplot as plt

    return plt


_DIFFICULTY_ORDER = ("simple", "moderate", "challenging", "easy", "medium", "hard", "extra", "unknown")


def plot_difficulty_by_db(stats: dict, split: str | None = None):
    """Stacked bars: questions per database, coloured by difficulty (one panel per split)."""
    plt = _plt()
    splits = [split] if split else [s for s in stats["counts"] if stats["counts"][s]]
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4), squeeze=False)
    for ax, name in zip(axes[0], splits):
        dbs = list(stats["by_db"][name])[:25]
        levels = [d for d in _DIFFICULTY_ORDER if stats["by_difficulty"][name].get(d)]
        counts = {level: [0] * len(dbs) for level in levels}
        per_db = stats["db_difficulty"][name]
        bottom = [0] * len(dbs)
        for level in levels:
            counts[level] = [per_db.get(db, {}).get(level, 0) for db in dbs]
            ax.bar(dbs, counts[level], bottom=bottom, label=level)
            bottom = [b + c for b, c in zip(bottom, counts[level])]
        ax.set_title(f"{name}: {stats['counts'][name]} questions")
        ax.set_ylabel("questions")
        ax.set_ylim(top=max(bottom, default=1) * 1.3)  # room for the legend above the bars
        ax.tick_params(axis="x", rotation=60)
        ax.legend(fontsize=8, ncol=len(levels), loc="upper center")
    fig.tight_layout()
    return fig


def plot_schema_sizes(stats: dict):
    """Tables and columns per database, and the schema's tokens before/after the budget."""
    plt = _plt()
    sizes = stats["schema"]
    dbs = sorted(sizes, key=lambda d: (sizes[d]["split"], d))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.bar(dbs, [sizes[d]["columns"] for d in dbs], label="columns")
    left.bar(dbs, [sizes[d]["tables"] for d in dbs], label="tables")
    left.set_title("schema size per database")
    left.tick_params(axis="x", rotation=60)
    left.set_ylim(top=max((sizes[d]["columns"] for d in dbs), default=1) * 1.3)
    left.legend(ncol=2, loc="upper center")
    right.bar(dbs, [sizes[d]["schema_tokens_full"] for d in dbs], label="full rendering", alpha=0.5)
    right.bar(dbs, [sizes[d]["schema_tokens"] for d in dbs], label="within the budget")
    right.set_title(f"schema tokens ({stats['token_counter']})")
    right.tick_params(axis="x", rotation=60)
    right.set_ylim(top=max((sizes[d]["schema_tokens_full"] for d in dbs), default=1) * 1.3)
    right.legend(ncol=2, loc="upper center")
    fig.tight_layout()
    return fig


def plot_prompt_lengths(stats: dict, budget: int | None = 384):
    """Histogram of prompt token lengths per split, with the training budget marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, values in stats["prompt_token_lengths"].items():
        if values:
            ax.hist(values, bins=40, alpha=0.6, label=f"{split} (median {statistics.median(values):.0f})")
    if budget:
        ax.axvline(budget, color="black", linestyle="--", label=f"budget {budget}")
    ax.set_xlabel(f"prompt tokens ({stats['token_counter']})")
    ax.set_ylabel("questions")
    ax.legend()
    fig.tight_layout()
    return fig
