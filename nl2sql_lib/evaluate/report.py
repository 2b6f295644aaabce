"""eval/report.md and plots from metrics (and optionally per-question items).

    path = write_report(metrics, out_dir, items_by_system=None)

``metrics`` has the shape of eval/metrics.json::

    {"<dataset>": {"<system>/<strategy>": {"n", "ex", "by_difficulty": {d: {"n", "ex"}},
                                           "errors": {kind: count}, ...}}}

``items_by_system`` (optional) is ``{"<dataset>": {"<system>/<strategy>": [item, ...]}}`` with
the per-question records of :func:`nl2sql_lib.evaluate.metrics.score_items`; when a summary lacks
component scores they are averaged from these items.

The report has, per dataset: overall EX (and exact match / partial score when known), EX by
difficulty, the error taxonomy of the misses, and the component scores, each as a Markdown table
with a matching PNG under ``plots/`` (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.example import DIFFICULTIES
from ..io import atomic_write_text
from ..sql.parse import COMPONENTS

__all__ = ["write_report", "report_markdown"]

REPORT_NAME = "report.md"
PLOTS_DIR = "plots"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _components_of(summary: dict, items: list[dict] | None) -> dict[str, float] | None:
    if summary.get("components"):
        return summary["components"]
    scored = [it for it in items or [] if "components" in it]
    if not scored:
        return None
    return {c: sum(it["components"][c] for it in scored) / len(scored) for c in COMPONENTS}


def _levels(entries: dict[str, dict]) -> list[str]:
    """Difficulty labels present, in the sources' order (simple..challenging, easy..extra)."""
    found = {d for m in entries.values() for d in m.get("by_difficulty", {})}
    known = [d for d in DIFFICULTIES if d in found]
    return known + sorted(found - set(known))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _dataset_sections(dataset: str, entries: dict[str, dict], items: dict[str, list[dict]]) -> list[str]:
    keys = list(entries)
    lines = [f"## {dataset}", ""]

    lines += ["### Overall", ""]
    lines += _table(
        ["system/strategy", "n", "EX %", "exact match %", "partial score %"],
        [[k, str(entries[k].get("n", 0)), _pct(entries[k].get("ex")), _pct(entries[k].get("exact_match")),
          _pct(entries[k].get("partial"))] for k in keys],
    )

    levels = _levels(entries)
    if levels:
        lines += ["### EX by difficulty (%, n in brackets)", ""]
        rows = []
        for k in keys:
            by = entries[k].get("by_difficulty", {})
            rows.append([k] + [f"{_pct(by[d]['ex'])} ({by[d]['n']})" if d in by else "-" for d in levels])
        lines += _table(["system/strategy"] + levels, rows)

    kinds = sorted({e for k in keys for e in entries[k].get("errors", {})})
    lines += ["### Error taxonomy of the misses (counts)", ""]
    if kinds:
        lines += _table(
            ["system/strategy"] + kinds,
            [[k] + [str(entries[k].get("errors", {}).get(e, 0)) for e in kinds] for k in keys],
        )
    else:
        lines += ["No misses.", ""]

    comps = {k: _components_of(entries[k], items.get(k)) for k in keys}
    comp_keys = [k for k in keys if comps[k]]
    if comp_keys:
        lines += ["### Component scores (mean F1 per clause, %)", ""]
        lines += _table(
            ["system/strategy"] + list(COMPONENTS),
            [[k] + [_pct(comps[k][c]) for c in COMPONENTS] for k in comp_keys],
        )
    return lines


def _plots(dataset: str, entries: dict[str, dict], items: dict[str, list[dict]], plot_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    keys = list(entries)
    made: list[tuple[str, str]] = []

    def save(fig, name: str, caption: str) -> None:
        fig.tight_layout()
        fig.savefig(plot_dir / name, dpi=110)
        plt.close(fig)
        made.append((caption, f"{PLOTS_DIR}/{name}"))

    width = max(4.5, 1.0 * len(keys) + 1.5)
    levels = _levels(entries)
    fig, ax = plt.subplots(figsize=(width, 3.4))
    groups = ["all"] + levels
    bar = 0.8 / len(groups)
    for j, group in enumerate(groups):
        values = [100 * (entries[k]["ex"] if group == "all"
                         else entries[k].get("by_difficulty", {}).get(group, {}).get("ex", 0.0)) for k in keys]
        ax.bar([i + j * bar for i in range(len(keys))], values, bar, label=group)
    ax.set_xticks([i + 0.4 - bar / 2 for i in range(len(keys))], keys, rotation=30, ha="right")
    ax.set_ylabel("EX (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{dataset}: EX overall and by difficulty", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save(fig, f"{_safe(dataset)}_ex.png", f"EX on {dataset}")

    kinds = sorted({e for k in keys for e in entries[k].get("errors", {})})
    if kinds:
        fig, ax = plt.subplots(figsize=(width, 3.4))
        bottom = [0] * len(keys)
        for kind in kinds:
            values = [entries[k].get("errors", {}).get(kind, 0) for k in keys]
            ax.bar(range(len(keys)), values, bottom=bottom, label=kind)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
        ax.set_ylabel("misses")
        ax.set_title(f"{dataset}: why predictions miss", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        save(fig, f"{_safe(dataset)}_errors.png", f"Error taxonomy on {dataset}")

    comps = {k: _components_of(entries[k], items.get(k)) for k in keys}
    comp_keys = [k for k in keys if comps[k]]
    if comp_keys:
        fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(COMPONENTS) * len(comp_keys) / 2 + 2), 3.4))
        bar = 0.8 / len(comp_keys)
        for j, k in enumerate(comp_keys):
            ax.bar([i + j * bar for i in range(len(COMPONENTS))], [100 * comps[k][c] for c in COMPONENTS], bar, label=k)
        ax.set_xticks([i + 0.4 - bar / 2 for i in range(len(COMPONENTS))], COMPONENTS, rotation=20)
        ax.set_ylabel("mean F1 (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{dataset}: component scores", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        save(fig, f"{_safe(dataset)}_components.png", f"Component scores on {dataset}")
    return [line for caption, path in made for line in (f"![{caption}]({path})", "")]


def report_markdown(metrics: dict[str, dict[str, dict]], items_by_system: dict | None = None,
                    plot_dir: Path | None = None) -> str:
    """The report's Markdown; draws the plots into ``plot_dir`` when given."""
    items_by_system = items_by_system or {}
    lines = ["# Evaluation report", ""]
    lines += [
        "EX is execution accuracy; exact match and the partial score compare sqlglot parses clause by "
        "clause (see nl2sql_lib/sql/parse.py). Misses are classified by the prediction's execution "
        "error, `wrong_result` (it ran, rows differ) or `gold_failed` (the gold query did not run).",
        "",
    ]
    if not metrics:
        lines += ["No metrics.", ""]
    for dataset, entries in metrics.items():
        items = items_by_system.get(dataset, {}) or {}
        lines += _dataset_sections(dataset, entries, items)
        if plot_dir is not None and entries:
            lines += _plots(dataset, entries, items, plot_dir)
    return "\n".join(lines).rstrip() + "\n"


def write_report(metrics: dict[str, dict[str, dict]], out_dir: str | Path, items_by_system: dict | None = None,
                 *, plots: bool = True) -> Path:
    """Write ``out_dir/report.md`` (and ``out_dir/plots/*.png`` when ``plots``); return the report path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = report_markdown(metrics, items_by_system, out_dir / PLOTS_DIR if plots else None)
    return atomic_write_text(out_dir / REPORT_NAME, text)
