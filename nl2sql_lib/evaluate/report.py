"""eval/report.md and plots from metrics (and optionally per-question items).

    path = write_report(metrics, out_dir, items_by_system=None)

``metrics`` has the shape of eval/metrics.json::

    {"<dataset>": {"<system>/<strategy>": {"n", "ex", "ex_ci", "by_difficulty": {d: {"n", "ex", "ex_ci"}},
                                           "errors": {kind: count}, "comparisons": {...}, ...}}}

``ex_ci`` is EX's 95% interval ``[low, high]`` (Wilson, over questions); where a summary lacks
it (the evaluate CLI's), it is computed here from ``n`` and ``ex``. ``comparisons`` (optional)
maps another system/strategy scored on the same questions to a paired comparison against it
(:meth:`nl2sql_lib.evaluate.stats.PairedComparison.as_dict` plus a ``sentence``).

``items_by_system`` (optional) is ``{"<dataset>": {"<system>/<strategy>": [item, ...]}}`` with
the per-question records of :func:`nl2sql_lib.evaluate.metrics.score_items`; when a summary lacks
component scores they are averaged from these items.

The report has, per dataset: overall EX with its interval and n (and exact match / partial score
when known), the paired comparisons (difference, its interval, gained/lost questions, exact
McNemar p, in words), EX by difficulty, the error taxonomy of the misses, and the component
scores, each as a Markdown table with a matching PNG under ``plots/`` (matplotlib, Agg backend:
no display needed; EX bars and differences carry their 95% intervals as error bars).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.example import DIFFICULTIES
from ..io import atomic_write_text
from ..sql.parse import COMPONENTS
from .stats import ALPHA, wilson_interval

__all__ = ["write_report", "report_markdown", "ex_interval", "ex_with_interval", "comparison_sentence", "error_bars"]

REPORT_NAME = "report.md"
PLOTS_DIR = "plots"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}"


def ex_interval(summary: dict) -> tuple[float, float] | None:
    """EX's 95% interval: the summary's ``ex_ci``, else Wilson's from its ``n`` and ``ex``."""
    if summary.get("ex_ci"):
        low, high = summary["ex_ci"]
        return float(low), float(high)
    n = int(summary.get("n") or 0)
    # ex is k / n exactly, so k is recovered by rounding
    return wilson_interval(round(float(summary.get("ex") or 0.0) * n), n) if n else None


def _interval_text(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def ex_with_interval(summary: dict) -> str:
    """``40.0 [16.8, 68.7]``: EX and its 95% interval, in %."""
    return f"{_pct(summary.get('ex'))} {_interval_text(ex_interval(summary))}"


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _p_text(p: float) -> str:
    return f"{p:.3g}"


def comparison_sentence(before: str, after: str, c: dict) -> str:
    """The paired comparison of ``after`` against ``before`` in words, with its verdict at 0.05."""
    low, high = c["difference_ci"]
    if c["gained"] == c["lost"] == 0:
        return (f"{after} against {before}: the same verdict on all {c['n']} questions, "
                "no difference (p = 1).")
    figures = (f"{after} against {before} on the same {c['n']} questions: {_points(c['difference'])} points "
               f"(95% CI {_points(low)} to {_points(high)}), {c['gained']} gained and {c['lost']} lost; "
               f"exact McNemar p = {_p_text(c['p_value'])}")
    if c["p_value"] < ALPHA:
        direction = "better" if c["difference"] > 0 else "worse"
        return f"{figures}: significant at {ALPHA:.2g} ({after} is {direction})."
    return f"{figures}: within noise at {ALPHA:.2g}."


def _comparisons(entries: dict[str, dict]) -> list[tuple[str, str, dict]]:
    """(before, after, comparison) for every comparison the entries carry, in their order."""
    return [(before, after, c) for after, m in entries.items() for before, c in (m.get("comparisons") or {}).items()]


def _comparison_lines(entries: dict[str, dict]) -> list[str]:
    found = _comparisons(entries)
    if not found:
        return []
    lines = ["### Paired comparisons on the same questions", ""]
    lines += [
        "Each row compares two systems on the same questions, matched by question id: the "
        "difference in EX with its 95% paired-bootstrap interval (questions resampled), the "
        "questions the second one *gained* (b: it is right, the first is wrong) and *lost* (c), "
        f"and the exact McNemar p (binomial test of b in b + c at 0.5). The verdict at {ALPHA:.2g} "
        "rests on p; with few differing questions the bootstrap interval is approximate and can "
        "exclude 0 while p does not reach significance.",
        "",
    ]
    rows = [
        [after, before, str(c["n"]), f"{_points(c['difference'])} [{_points(c['difference_ci'][0])}, "
         f"{_points(c['difference_ci'][1])}]", str(c["gained"]), str(c["lost"]), _p_text(c["p_value"]),
         "significant" if c["p_value"] < ALPHA else "within noise"]
        for before, after, c in found
    ]
    lines += _table(["system/strategy", "against", "n", "difference (points) [95% CI]", "gained (b)",
                     "lost (c)", "McNemar p", f"at {ALPHA:.2g}"], rows)
    lines += [f"- {c.get('sentence') or comparison_sentence(before, after, c)}" for before, after, c in found]
    significant = [f"{after} vs {before}" for before, after, c in found if c["p_value"] < ALPHA]
    lines += ["", (f"Significant at {ALPHA:.2g}: {', '.join(significant)}; every other difference is within noise."
                   if significant else f"No difference here is significant at {ALPHA:.2g}: all are within noise."), ""]
    return lines


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
        ["system/strategy", "n", "EX %", "EX 95% CI", "exact match %", "partial score %"],
        [[k, str(entries[k].get("n", 0)), _pct(entries[k].get("ex")), _interval_text(ex_interval(entries[k])),
          _pct(entries[k].get("exact_match")), _pct(entries[k].get("partial"))] for k in keys],
    )
    lines += _comparison_lines(entries)
    lines += _revision_lines(entries)

    levels = _levels(entries)
    if levels:
        lines += ["### EX by difficulty (%, [95% CI], (n))", ""]
        rows = []
        for k in keys:
            by = entries[k].get("by_difficulty", {})
            rows.append([k] + [f"{ex_with_interval(by[d])} ({by[d]['n']})" if d in by else "-" for d in levels])
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


def _revision_lines(entries: dict[str, dict]) -> list[str]:
    """The revision round of each ``+revise`` system: answers revised, and those now right."""
    revising = [k for k in entries if entries[k].get("revision")]
    if not revising:
        return []
    lines = ["### Revision on error", "",
             "Answers that failed to run (or held no SQL) were shown to the model with the error and "
             "replaced by its revision; a revised answer was wrong before, so revision cannot lose "
             "a question.", ""]
    rows = []
    for k in revising:
        r = entries[k]["revision"]
        rows.append([k, str(r["revised"]), str(r["repaired"]), _pct(r["repair_rate"])])
    return lines + _table(["system/strategy", "revised", "repaired", "repair rate %"], rows)


def error_bars(values: list[float], intervals: list[tuple[float, float] | None]) -> list[list[float]]:
    """matplotlib's yerr (distances below and above each bar, in %) from 95% intervals."""
    below = [0.0 if ci is None else max(0.0, v - 100 * ci[0]) for v, ci in zip(values, intervals)]
    above = [0.0 if ci is None else max(0.0, 100 * ci[1] - v) for v, ci in zip(values, intervals)]
    return [below, above]


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
        summaries = [entries[k] if group == "all" else entries[k].get("by_difficulty", {}).get(group, {})
                     for k in keys]
        values = [100 * summary.get("ex", 0.0) for summary in summaries]
        ax.bar([i + j * bar for i in range(len(keys))], values, bar, label=group,
               yerr=error_bars(values, [ex_interval(summary) for summary in summaries]),
               error_kw={"elinewidth": 0.8, "capsize": 2})
    ax.set_xticks([i + 0.4 - bar / 2 for i in range(len(keys))], keys, rotation=30, ha="right")
    ax.set_ylabel("EX (%), 95% CI")
    ax.set_ylim(0, 100)
    ax.set_title(f"{dataset}: EX overall and by difficulty", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save(fig, f"{_safe(dataset)}_ex.png", f"EX on {dataset}")

    found = _comparisons(entries)
    if found:
        fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(found) + 1.4))
        for row, (before, after, c) in enumerate(reversed(found)):
            diff, (low, high) = 100 * c["difference"], c["difference_ci"]
            ax.errorbar([diff], [row], xerr=[[diff - 100 * low], [100 * high - diff]], fmt="o", capsize=3,
                        color="tab:red" if c["p_value"] < ALPHA else "tab:gray")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(found)), [f"{after} vs {before}" for before, after, _ in reversed(found)], fontsize=7)
        ax.set_xlabel("difference in EX (points), 95% paired-bootstrap CI")
        ax.set_title(f"{dataset}: paired differences (red: McNemar p < {ALPHA:.2g})", fontsize=10)
        save(fig, f"{_safe(dataset)}_comparisons.png", f"Paired differences on {dataset}")

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
        "Every EX comes with n (questions scored) and its 95% confidence interval over questions "
        "(Wilson score interval), in brackets.",
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
