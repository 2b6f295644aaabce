"""How much of a CPU GRPO step does reward scoring cost? (target: under 5%)

A realistic GRPO batch: 8 questions of the bundled dev databases x 8 completions = 64, mixing
per question 2 right answers (one in a fenced block), 3 wrong but executable queries (other
questions' gold SQL on the same database), 1 failing query (a column that does not exist),
1 chatty non-answer and 1 slow query (a triple self-join of the question's largest table that
runs until stopped). Half the completions come as chat messages, half as plain strings.

The batch is scored by the reward functions of the cpu profile (params/cpu/grpo.yaml: weights,
``sql_timeout``, ``sql_batch_budget``) plus syntax and format, as TRL calls them (one after the
other, same batch). "cold" uses a new Judge and empty parse caches each round, so every gold
query runs and every query is parsed again, which is what GRPO sees when each step brings new
questions; "warm" reuses the Judge and the caches.

    make bench BENCH=rewards
    python -m tests.bench.bench_rewards --step-seconds 15.5 --rounds 5

Writes outputs/bench/rewards.json.
"""

from __future__ import annotations

import argparse
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nl2sql_lib.config import load_params
from nl2sql_lib.data.bundled import build_bundled
from nl2sql_lib.io import write_json
from nl2sql_lib.rewards import REWARD_NAMES, ExecutionScorer, build_rewards
from nl2sql_lib.sql.judge import Judge

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OUT = PROJECT_ROOT / "outputs" / "bench" / "rewards.json"
# docs/cpu-notes.md: GRPO, LoRA, 4 completions of 64 tokens per step, beta 0, SmolLM2-135M, 2 cores.
CPU_NOTES_STEP_SECONDS = 15.5


def largest_table(db_path: str) -> str:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        sizes = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        conn.close()
    return max(sizes, key=sizes.get)


def build_batch(benchmark, n_questions: int = 8, per_question: int = 8, seed: int = 0):
    """(completions, db_paths, golds, kinds) for n_questions x per_question completions."""
    rng = random.Random(seed)
    by_db: dict[str, list] = {}
    for ex in benchmark.dev:
        by_db.setdefault(ex.db_id, []).append(ex)
    questions = rng.sample(benchmark.dev, n_questions)
    completions, db_paths, golds, kinds = [], [], [], []
    for q in questions:
        others = [ex.sql for ex in by_db[q.db_id] if ex.sql != q.sql]
        table = largest_table(q.db_path)
        items = [
            ("right", q.sql + ";"),
            ("right", f"```sql\n{q.sql}\n```"),
            *[("wrong", sql) for sql in rng.sample(others, 3)],
            ("failing", f"SELECT no_such_column FROM {table}"),
            ("malformed", "To answer this I would look at the table and count the rows."),
            ("slow", f'SELECT count(*) FROM "{table}" AS a, "{table}" AS b, "{table}" AS c '
                     f"WHERE a.rowid + b.rowid + c.rowid < 0"),
        ][:per_question]
        for i, (kind, text) in enumerate(items):
            completions.append([{"role": "assistant", "content": text}] if i % 2 else text)
            db_paths.append(q.db_path)
            golds.append(q.sql)
            kinds.append(kind)
    return completions, db_paths, golds, kinds


def clear_caches() -> None:
    """Forget every parse and partial score, as for a batch of questions never seen before."""
    from nl2sql_lib import rewards
    from nl2sql_lib.sql import parse

    rewards._partial.cache_clear()
    parse._parse_cached.cache_clear()


def score_once(cfg, batch, judge: Judge, *, cold: bool = False) -> tuple[float, dict, ExecutionScorer]:
    completions, db_paths, golds, kinds = batch
    if cold:
        clear_caches()
    weights = cfg.rewards.model_dump()
    weights.update({"syntax": max(weights["syntax"], 0.1), "format": max(weights["format"], 0.1)})
    scorer = ExecutionScorer(judge, timeout=cfg.sql_timeout, batch_budget=cfg.sql_batch_budget)
    funcs, _ = build_rewards(weights, scorer=scorer, reasoning=cfg.format == "reasoning")
    n = len(completions)
    scores, per_function = {}, {}
    start = time.perf_counter()
    for f in funcs:  # as TRL calls them: one after the other on the same batch
        t0 = time.perf_counter()
        scores[f.__name__] = f(prompts=[None] * n, completions=completions, db_path=db_paths, sql=golds,
                               db_id=["x"] * n, trainer_state=None)
        per_function[f.__name__] = time.perf_counter() - t0
    scorer.per_function_seconds = per_function
    return time.perf_counter() - start, scores, scorer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=float, default=CPU_NOTES_STEP_SECONDS,
                        help="CPU GRPO step time to compare with (default: docs/cpu-notes.md's 15.5 s)")
    parser.add_argument("--step-source", default="docs/cpu-notes.md: GRPO, LoRA, 4 x 64-token completions, beta 0")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--params", default=str(PROJECT_ROOT / "params" / "cpu" / "grpo.yaml"))
    # parse_known_args: under `make bench BENCH=rewards` sys.argv holds run_all's filter word.
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    cfg = load_params("grpo", args.params)
    with tempfile.TemporaryDirectory(prefix="bench-rewards-") as tmp:
        benchmark = build_bundled(Path(tmp), seed=0)
        batch = build_batch(benchmark)
        kinds = batch[3]
        score_once(cfg, batch, Judge(semantics=cfg.semantics))  # open connections, import paths
        cold, warm, per_function = [], [], {}
        for _ in range(args.rounds):
            seconds, scores, scorer = score_once(cfg, batch, Judge(semantics=cfg.semantics), cold=True)
            cold.append(seconds)
            for name, value in scorer.per_function_seconds.items():
                per_function.setdefault(name, []).append(value)
        judge = Judge(semantics=cfg.semantics)
        score_once(cfg, batch, judge)
        for _ in range(args.rounds):
            warm.append(score_once(cfg, batch, judge)[0])

    by_kind = {}
    for kind in sorted(set(kinds)):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        by_kind[kind] = {name: round(statistics.mean(values[i] or 0.0 for i in idx), 3)
                         for name, values in scores.items()}
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    completions_per_cpu_step = 4
    result = {
        "benchmark": "rewards",
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": f"python -m tests.bench.bench_rewards --step-seconds {args.step_seconds} --rounds {args.rounds}",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "batch": {"completions": len(kinds), "questions": 8, "kinds": {k: kinds.count(k) for k in sorted(set(kinds))}},
        "rewards": [n for n in REWARD_NAMES if n in scores],
        "params": {"file": args.params, "sql_timeout": cfg.sql_timeout, "sql_batch_budget": cfg.sql_batch_budget},
        "rounds": args.rounds,
        "seconds_cold": {"median": round(cold_s, 4), "all": [round(x, 4) for x in cold]},
        "seconds_warm": {"median": round(warm_s, 4), "all": [round(x, 4) for x in warm]},
        "ms_per_completion_cold": round(1000 * cold_s / len(kinds), 2),
        "seconds_per_function_cold": {k: round(statistics.median(v), 4) for k, v in per_function.items()},
        "step_seconds": args.step_seconds,
        "step_source": args.step_source,
        "share_of_step_64_completions": round(cold_s / args.step_seconds, 4),
        "share_of_step_cpu_batch": round(cold_s / len(kinds) * completions_per_cpu_step / args.step_seconds, 5),
        "target_share": 0.05,
        "meets_target": cold_s / args.step_seconds < 0.05,
        "last_batch": {"sqlite_seconds": round(scorer.last_stats.seconds, 4),
                       "executed_queries": scorer.last_stats.executed_queries,
                       "timeouts": scorer.last_stats.timeouts,
                       "budget_exhausted": scorer.last_stats.budget_exhausted},
        "mean_reward_by_kind": by_kind,
    }
    write_json(OUT, result)
    print(f"64 completions scored in {cold_s * 1000:.0f} ms (cold; warm {warm_s * 1000:.0f} ms) = "
          f"{100 * result['share_of_step_64_completions']:.2f}% of a {args.step_seconds} s CPU GRPO step "
          f"(target < 5%); the cpu profile's 4 completions: {100 * result['share_of_step_cpu_batch']:.3f}%")
    print(f"mean rewards by kind: {by_kind}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
