"""Schema-constrained decoding (issue #4): does it buy execution accuracy? Greedy, with and without.

    flock /tmp/nl2sql-heavy.lock nice -n 5 make bench BENCH=constrained
    flock /tmp/nl2sql-heavy.lock nice -n 5 .venv/bin/python -m tests.bench.bench_constrained

The model is the SFT model of the last cpu pipeline run (``stage:sft`` of outputs/cpu), with the
prompts 06_eval gives it (its trained schema rendering, :func:`build_messages`). Two sets:

- ``dev``: the bundled dev questions 06_eval scores (``params/cpu/eval.yaml``: the run's
  data/dev.jsonl, ``max_dev_examples`` of them sampled with its seed);
- ``spider_dev``: ``SPIDER_QUESTIONS`` Spider dev questions (read in place from ``spider_path``).

Each set is generated three times (``MODES``): unconstrained (``free``), constrained to the
question's database (:mod:`nl2sql_lib.constrained`, as the Generator does by default:
``constrained``), and constrained without searching beyond the top-k when no top-k token is
valid (``constrained_no_widen``). Each is scored by the same Judge as 06_eval: EX, the error
taxonomy, seconds per question, how often the constraint overrode the model, and which
questions it fixed or broke against ``free``. Writes outputs/bench/constrained.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

RUN = "cpu"
EVAL_PARAMS = PROJECT_ROOT / "params" / "cpu" / "eval.yaml"
SPIDER_QUESTIONS = 60
TOP_K = 48  # tokens the constraint checks per step
# mode -> (constrained, widen)
MODES = {"free": (False, True), "constrained": (True, True), "constrained_no_widen": (True, False)}
SCHEMA_ERRORS = ("no_such_table", "no_such_column")
OUT = PROJECT_ROOT / "outputs" / "bench" / "constrained.json"
COMMAND = "flock /tmp/nl2sql-heavy.lock nice -n 5 make bench BENCH=constrained"


def load_sets(cfg):
    """(name, examples, semantics) of the dev questions 06_eval uses and a Spider dev sample."""
    from nl2sql_lib.config import SourceParams
    from nl2sql_lib.data.example import read_examples
    from nl2sql_lib.data.loaders import load_source
    from nl2sql_lib.evaluate.systems import drop_missing_databases, subsample

    dev_path = cfg.run_dir / "data" / "dev.jsonl"
    if not dev_path.is_file():
        raise SystemExit(f"{dev_path} is missing: run the cpu pipeline (notebooks 01-02) first")
    dev, _ = drop_missing_databases(read_examples(dev_path))
    spider = load_source(SourceParams(type="spider", path=cfg.spider_path), tempfile.mkdtemp(), seed=cfg.seed)
    spider_dev, _ = drop_missing_databases(spider["dev"])
    return [
        ("dev", subsample(dev, cfg.max_dev_examples, cfg.seed), cfg.semantics),
        ("spider_dev", subsample(spider_dev, SPIDER_QUESTIONS, cfg.seed), cfg.spider_semantics),
    ]


def run_mode(generator, examples, messages, cfg, judge, constrained: bool) -> tuple[dict, list[dict]]:
    """Greedy predictions of one set, with or without the constraint, scored."""
    from nl2sql_lib.evaluate.stage import score
    from nl2sql_lib.sql.extract import extract_sql

    schemas = [ex.db_path for ex in examples] if constrained else None
    start = time.perf_counter()
    texts = generator.generate(messages, max_new_tokens=cfg.max_new_tokens, schemas=schemas)
    seconds = time.perf_counter() - start
    summary, items = score(examples, [extract_sql(t[0]) for t in texts], judge)
    stats = generator.last_stats
    row = {
        "n": summary["n"],
        "ex": round(summary["ex"], 4),
        "correct": sum(it["correct"] for it in items),
        "errors": summary["errors"],
        "schema_errors": sum(summary["errors"].get(k, 0) for k in SCHEMA_ERRORS),
        "executes": sum(1 for it in items if it["correct"] or it["error"] == "wrong_result"),
        "seconds": round(seconds, 1),
        "seconds_per_question": round(seconds / len(examples), 2),
        "new_tokens": stats["new_tokens"],
    }
    if constrained:  # steps where the model's first choice named something not in the schema
        row.update({k: v for k, v in stats.items() if k.startswith("constraint_")})
    return row, items


def compare(free_items: list[dict], constrained_items: list[dict]) -> dict:
    """Questions the constraint fixed, broke, or changed without changing the verdict."""
    fixed = broken = changed = 0
    examples = []
    for a, b in zip(free_items, constrained_items):
        if a["pred_sql"] == b["pred_sql"]:
            continue
        changed += 1
        fixed += (not a["correct"]) and b["correct"]
        broken += a["correct"] and (not b["correct"])
        if len(examples) < 12:
            examples.append({
                "db_id": a["db_id"], "free": a["pred_sql"], "free_error": a["error"],
                "constrained": b["pred_sql"], "constrained_error": b["error"],
            })
    return {"changed": changed, "fixed": fixed, "broken": broken, "examples": examples}


def main() -> dict:
    from nl2sql_lib.io import write_json

    import torch

    from nl2sql_lib.config import ModelParams, load_params
    from nl2sql_lib.evaluate.stage import make_judge
    from nl2sql_lib.evaluate.systems import build_messages, parse_system
    from nl2sql_lib.generate import Generator
    from nl2sql_lib.models import load_model

    os.chdir(PROJECT_ROOT)  # the run's paths (outputs/cpu/..., ../shared/spider-dev) are relative
    cfg = load_params("eval", EVAL_PARAMS, run=RUN)
    system = parse_system("sft", cfg)  # the SFT model with the prompts it was trained on
    if not (cfg.run_dir / "sft" / "manifest.json").is_file():
        raise SystemExit(f"{cfg.run_dir / 'sft'} has no finished model: run the cpu pipeline first")
    model, tokenizer = load_model(ModelParams(spec=system.spec), run_dir=cfg.run_dir)
    generator = Generator(model, tokenizer, batch_size=cfg.batch_size, progress=False, seed=cfg.seed,
                          constraint_top_k=TOP_K)
    sets = load_sets(cfg)
    generator.generate(build_messages(sets[0][1][:1], system.schema()), max_new_tokens=4)  # warm-up

    results = {}
    for name, examples, semantics in sets:
        messages = build_messages(examples, system.schema(), reasoning=system.reasoning)
        judge = make_judge(semantics, cfg)
        results[name] = {"semantics": semantics}
        items = {}
        for mode, (constrained, widen) in MODES.items():
            generator.constraint_widen = widen
            results[name][mode], items[mode] = run_mode(generator, examples, messages, cfg, judge, constrained)
            if constrained:
                results[name][f"effect_{mode}"] = compare(items["free"], items[mode])
            print(json.dumps({name: {mode: results[name][mode]}}), flush=True)

    report = {
        "benchmark": "constrained",
        "command": COMMAND,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "model": f"{system.spec} of run '{RUN}' ({cfg.run_dir / 'sft'})",
        "decoding": {"greedy": True, "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size,
                     "constraint_top_k": TOP_K, "stop_strings": generator.stop_strings},
        "results": results,
    }
    write_json(OUT, report)  # atomic: a killed run never leaves half a file
    print(f"wrote {OUT}")
    return report


if __name__ == "__main__":
    main()
