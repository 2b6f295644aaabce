"""Greedy generation speed of the embedded model: batch 1 against the batched path, fp32 and bf16.

    flock /tmp/nl2sql-heavy.lock .venv/bin/python tests/bench/bench_generation.py
    make bench BENCH=generation

Prompts are real 02_sft/06_eval prompts (bundled dev questions with their schema, rendered as
params/cpu/data.yaml says). Each setting generates ``MAX_NEW_TOKENS`` greedy tokens per question
without a stop string, so every setting does the same work; tokens/s counts the tokens generated
up to each answer's end token. Writes outputs/bench/generation.json.
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

MAX_NEW_TOKENS = 64
SERIAL_QUESTIONS = 8
BATCHED_QUESTIONS = 16
BATCH_SIZE = 8


def bench_prompts(n: int) -> list[list[dict]]:
    from nl2sql_lib.config import load_params
    from nl2sql_lib.data.bundled import build_bundled
    from nl2sql_lib.data.prompts import sql_messages
    from nl2sql_lib.data.schema import schema_text_for

    schema = load_params("data", PROJECT_ROOT / "params" / "cpu" / "data.yaml").schema_render
    bench = build_bundled(Path(tempfile.mkdtemp(prefix="nl2sql-bench-")), seed=0)
    dev = bench.dev[:: max(1, len(bench.dev) // n)][:n]  # spread over the dev databases
    return [sql_messages(ex, schema_text_for(ex, schema)) for ex in dev]


def run_setting(model, tokenizer, prompts, batch_size: int, dtype_name: str) -> dict:
    from nl2sql_lib.generate import Generator

    gen = Generator(model, tokenizer, batch_size=batch_size, stop_strings=None, progress=False)
    gen.generate(prompts[:1], max_new_tokens=4)  # warm-up
    gen.generate(prompts, max_new_tokens=MAX_NEW_TOKENS)
    stats = dict(gen.last_stats)
    return {"dtype": dtype_name, "batch_size": batch_size, **stats}


def main() -> dict:
    from nl2sql_lib.io import write_json

    import torch

    from nl2sql_lib.config import ModelParams
    from nl2sql_lib.models import load_model

    torch.manual_seed(0)
    prompts = bench_prompts(BATCHED_QUESTIONS)
    results = []
    for dtype_name in ("float32", "bfloat16"):
        start = time.perf_counter()
        model, tokenizer = load_model(ModelParams(spec="embedded:smollm2-135m-instruct", dtype=dtype_name))
        load_s = round(time.perf_counter() - start, 2)
        serial = run_setting(model, tokenizer, prompts[:SERIAL_QUESTIONS], 1, dtype_name)
        batched = run_setting(model, tokenizer, prompts, BATCH_SIZE, dtype_name)
        for row in (serial, batched):
            row["load_seconds"] = load_s
            results.append(row)
            print(json.dumps(row), flush=True)
        del model
    by = {(r["dtype"], r["batch_size"]): r["tokens_per_s"] for r in results}
    report = {
        "benchmark": "generation",
        "command": "flock /tmp/nl2sql-heavy.lock .venv/bin/python tests/bench/bench_generation.py",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "model": "embedded:smollm2-135m-instruct",
        "max_new_tokens": MAX_NEW_TOKENS,
        "results": results,
        "speedup_batched_vs_batch1": {
            d: round(by[(d, BATCH_SIZE)] / by[(d, 1)], 2) for d in ("float32", "bfloat16") if by.get((d, 1))
        },
    }
    out = PROJECT_ROOT / "outputs" / "bench" / "generation.json"
    write_json(out, report)  # atomic: a killed run never leaves half a file
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
