"""Greedy generation of the embedded model on Spider dev prompts: the old path against the fast one.

    make bench BENCH=generation     # .venv/bin/python -m tests.bench.run_all generation

The old path is ``Generator(fast=False)`` with the Generator's default settings (batch 8,
``model.generate``, prompts sorted by length, left padding, stop at ``;``); the fast path is the
default ``Generator`` (each database's shared prompt prefix computed once, its keys and values
stored once and read by all of its rows - nl2sql_lib/shared_prefix.py -, finished rows leaving
the batch, 64 rows per pass at batch 8; nl2sql_lib/generate.py). Prompts: a seeded sample of
``QUESTIONS`` Spider dev questions (../shared/spider-dev) over ``DATABASES`` databases,
rendered exactly as 06_eval renders them for the cpu profile (params/cpu/data.yaml's schema
rendering, ``evaluate.systems.build_messages``); 96 new tokens at most, as params/cpu/eval.yaml.

Headline: fast, old, fast again, on the same prompts in one process (the machine is shared, so
the two are interleaved and the fast figure is the mean of its two runs). Every output of every
setting is compared with the old path's; each difference is explained by the old path's own
logits at the first token where the two answers part (a near-tie flipped by float rounding
shows as a gap of a fraction of a logit between the two tokens). Then the fast path's batch
size, one setting at a time, on the first ``LEVER_QUESTIONS`` prompts (all of them by default).
Writes outputs/bench/generation.json.

Sizes can be changed for a quick look: NL2SQL_BENCH_QUESTIONS, NL2SQL_BENCH_DATABASES,
NL2SQL_BENCH_LEVER_QUESTIONS (0 skips the lever table). NL2SQL_BENCH_THREADS: torch threads for
both paths (default 1; 0: torch's own, 2 here); NL2SQL_BENCH_OTHER_THREADS: also time the fast path
with this many threads in the lever table (unset: not timed). On a shared machine the thread
count matters more than anything else (2 threads crawl when other jobs hold the cores).
"""

from __future__ import annotations

import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

SPIDER_DEV = PROJECT_ROOT.parent / "shared" / "spider-dev"
# NL2SQL_BENCH_MODEL: another model spec, e.g. stage:sft (read from outputs/cpu, the cpu run)
MODEL = os.environ.get("NL2SQL_BENCH_MODEL", "embedded:smollm2-135m-instruct")
MAX_NEW_TOKENS = 96  # params/cpu/eval.yaml
OLD_BATCH = 8  # Generator's default batch_size
QUESTIONS = int(os.environ.get("NL2SQL_BENCH_QUESTIONS", 96))
DATABASES = int(os.environ.get("NL2SQL_BENCH_DATABASES", 6))
LEVER_QUESTIONS = int(os.environ.get("NL2SQL_BENCH_LEVER_QUESTIONS", QUESTIONS))
THREADS = int(os.environ.get("NL2SQL_BENCH_THREADS", 1))  # 0: torch's default (2 here)
OTHER_THREADS = int(os.environ.get("NL2SQL_BENCH_OTHER_THREADS", 0))  # 0: no such lever row
SEED = 0


def spider_prompts(count: int, databases: int) -> tuple[list, list[list[dict]]]:
    """``count`` Spider dev questions, an equal seeded share from each of ``databases`` seeded
    databases, with their 06_eval (cpu profile) chat prompts."""
    from nl2sql_lib.config import SourceParams, load_params
    from nl2sql_lib.data.loaders import load_source
    from nl2sql_lib.evaluate.systems import build_messages, drop_missing_databases

    schema = load_params("data", PROJECT_ROOT / "params" / "cpu" / "data.yaml").schema_render
    splits = load_source(SourceParams(type="spider", path=str(SPIDER_DEV)),
                         Path(tempfile.mkdtemp(prefix="nl2sql-bench-")), seed=SEED)
    kept, _ = drop_missing_databases(splits.get("dev") or [])
    by_db: dict[str, list] = {}
    for ex in kept:
        by_db.setdefault(ex.db_id, []).append(ex)
    rng = random.Random(SEED)
    share = -(-count // databases)
    eligible = sorted(db for db, exs in by_db.items() if len(exs) >= share)
    chosen = rng.sample(eligible, min(databases, len(eligible)))
    examples = [ex for db in chosen for ex in rng.sample(by_db[db], share)][:count]
    rng.shuffle(examples)  # callers do not hand questions over grouped by database
    return examples, build_messages(examples, schema)


def answer_tokens(tokenizer, texts: list[str]) -> int:
    """Tokens of the answers as returned (one definition for both paths, for tokens/s)."""
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def timed(generator, prompts) -> tuple[list[str], dict]:
    start = time.perf_counter()
    texts = [c[0] for c in generator.generate(prompts, max_new_tokens=MAX_NEW_TOKENS)]
    seconds = time.perf_counter() - start
    tokens = answer_tokens(generator.tokenizer, texts)
    row = {"questions": len(prompts), "seconds": round(seconds, 2),
           "questions_per_s": round(len(prompts) / seconds, 3), "answer_tokens": tokens,
           "tokens_per_s": round(tokens / seconds, 2), "load_1min": round(os.getloadavg()[0], 2)}
    extra = {k: v for k, v in generator.last_stats.items() if k.startswith(("prefix", "prompt_tokens"))}
    return texts, {**row, **extra}


def explain_difference(model, tokenizer, prompt_text: str, old: str, new: str) -> dict:
    """Where two answers part, and the old path's logits there (batch 1, the model as loaded):
    the gap between the token the old path chose and the one the fast path chose."""
    import torch

    a = tokenizer(old, add_special_tokens=False)["input_ids"]
    b = tokenizer(new, add_special_tokens=False)["input_ids"]
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    context = tokenizer(prompt_text, add_special_tokens=False)["input_ids"] + a[:k]
    with torch.inference_mode():
        logits = model(torch.tensor([context]), logits_to_keep=1).logits[0, -1].float()
    info = {"first_differing_token": k, "old": old, "new": new}
    # one answer ending where the other goes on: the end token against the next token
    old_next = a[k] if k < len(a) else tokenizer.eos_token_id
    new_next = b[k] if k < len(b) else tokenizer.eos_token_id
    top = torch.topk(logits, 2)
    info.update(old_token=tokenizer.decode([old_next]), new_token=tokenizer.decode([new_next]),
                logit_gap_old_minus_new=round(float(logits[old_next] - logits[new_next]), 4),
                top2_gap=round(float(top.values[0] - top.values[1]), 4))
    return info


def differences(reference: list[str], texts: list[str]) -> int:
    return sum(x != y for x, y in zip(reference, texts))


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def main() -> dict:
    import torch

    from nl2sql_lib.config import ModelParams
    from nl2sql_lib.generate import Generator
    from nl2sql_lib.io import write_json
    from nl2sql_lib.models import load_model

    torch.manual_seed(SEED)
    if THREADS:
        torch.set_num_threads(THREADS)
    examples, prompts = spider_prompts(QUESTIONS, DATABASES)
    model, tokenizer = load_model(ModelParams(spec=MODEL), run_dir=PROJECT_ROOT / "outputs" / "cpu")
    threads = torch.get_num_threads()

    def gen(**kwargs) -> Generator:
        return Generator(model, tokenizer, progress=False, **{"batch_size": OLD_BATCH, **kwargs})

    Generator(model, tokenizer, progress=False).generate(prompts[:2], max_new_tokens=4)  # warm-up
    old_gen, fast_gen = gen(fast=False), gen()
    print(f"{len(prompts)} questions over {len({e.db_id for e in examples})} databases; "
          f"load {os.getloadavg()}", flush=True)
    fast_texts, fast_1 = timed(fast_gen, prompts)
    print("fast", fast_1, flush=True)
    old_texts, old_row = timed(old_gen, prompts)
    print("old ", old_row, flush=True)
    fast_texts_2, fast_2 = timed(fast_gen, prompts)
    print("fast", fast_2, flush=True)
    fast_qps = (fast_1["questions_per_s"] + fast_2["questions_per_s"]) / 2
    prompt_texts = old_gen.prompt_texts(prompts)
    explained = [
        {"question": examples[i].question, "db_id": examples[i].db_id,
         **explain_difference(model, tokenizer, prompt_texts[i], old_texts[i], fast_texts[i])}
        for i in range(len(prompts)) if old_texts[i] != fast_texts[i]
    ]
    headline = {
        "old": old_row, "fast_runs": [fast_1, fast_2],
        "speedup_questions_per_s": round(fast_qps / old_row["questions_per_s"], 2),
        "differing_outputs": differences(old_texts, fast_texts),
        "fast_runs_agree": fast_texts == fast_texts_2,
        "differences": explained,
    }
    print("speed-up", headline["speedup_questions_per_s"], "differing", headline["differing_outputs"], flush=True)

    levers = []
    if LEVER_QUESTIONS:
        subset, reference = prompts[:LEVER_QUESTIONS], old_texts[:LEVER_QUESTIONS]
        # the old path's row is the headline's when the lever table uses the same prompts
        settings = [] if LEVER_QUESTIONS == len(prompts) else [("old path (model.generate), batch 8", {"fast": False}, threads)]
        settings += [
            ("fast, 16 rows per batch", {"fast_batch_size": 16}, threads),
            ("fast, 32 rows", {"fast_batch_size": 32}, threads),
            ("fast, 64 rows (the default: 8 x batch_size)", {}, threads),
            ("fast, 128 rows", {"fast_batch_size": 128}, threads),
        ]
        if OTHER_THREADS:
            settings.append((f"fast, 64 rows, {OTHER_THREADS} thread(s)", {}, OTHER_THREADS))
        for name, kwargs, n_threads in settings:
            set_threads(n_threads)
            texts, row = timed(gen(**kwargs), subset)
            set_threads(threads)
            row = {"setting": name, "threads": n_threads, **row,
                   "differing_from_old_batch8": differences(reference, texts)}
            print(row, flush=True)
            levers.append(row)

    report = {
        "benchmark": "generation",
        "command": "make bench BENCH=generation  (.venv/bin/python -m tests.bench.run_all generation)",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                    "torch": torch.__version__, "threads": threads, "load_at_end": os.getloadavg()},
        "model": MODEL, "dtype": str(model.dtype), "max_new_tokens": MAX_NEW_TOKENS,
        "prompts": {"source": str(SPIDER_DEV), "questions": len(prompts),
                    "databases": sorted({e.db_id for e in examples}),
                    "rendering": "params/cpu/data.yaml schema_render, evaluate.systems.build_messages"},
        "headline": headline,
        "levers": levers,
    }
    suffix = "" if MODEL.startswith("embedded:") else "_" + MODEL.replace(":", "_").replace("/", "_")
    out = PROJECT_ROOT / "outputs" / "bench" / f"generation{suffix}.json"
    write_json(out, report)  # atomic: a killed run never leaves half a file
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
