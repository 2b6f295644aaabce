"""Benchmark: the evaluator command against the official evaluators, and the judge in-process.

    .venv/bin/python -m tests.bench.run_all evaluator      # or: make bench BENCH=evaluator

The workload: every Spider dev question whose database exists (972) with 8 candidates each, the
gold itself and seven perturbations of it (dropped ORDER BY or a wrapped LIMIT 1, swapped columns,
a changed literal, broken syntax, an added DISTINCT, a reordered outer result, an unknown
column), so the work mixes right, wrong and failing SQL: 7,776 candidates.

**End to end** (issue 15): each evaluator runs as its user runs it, a separate process timed from
its start to its exit with its output written. The official evaluators come from
../shared/peers/ (unmodified; never imported into the project) and run in their own virtual
environment, made once under .cache/peers-venv with func_timeout, sqlparse, nltk and tqdm:

- BIRD's ``evaluation.py --num_cpus 2`` against ``python -m nl2sql_lib.evaluate --no-components
  --workers 2`` (execution accuracy alone, same number of processes);
- Spider test-suite's ``evaluation.py --etype all`` (execution + exact match) against the
  command's default (execution accuracy, exact match and component scores), under
  ``--semantics bird`` (the default) and ``--semantics spider``.

Each runs ``ROUNDS`` times, interleaved, and the median counts; a system whose first run lasts
more than ``ONE_RUN_AFTER_S`` runs once. Beside the wall time each run's CPU seconds (its own and
its workers') are recorded: when other jobs hold the cores, wall-time ratios move with how the
scheduler shares them (BIRD's script starts a thread per query, which fares well there), while
the CPU seconds say how much work each program does. Verdicts are checked question by question: the official
programs print only totals, so each is run once more through a small recording script (in the
peers' environment) that runs the official code unchanged and writes every verdict it returns;
its totals must equal those the timed run printed. Ours under ``--semantics bird`` must give
BIRD's verdict on every candidate and ours under ``--semantics spider`` test-suite's execution
verdict; our exact match is a different definition from test-suite's (sqlglot clauses with
values, against Spider's parser without values), so its agreement is reported as a rate.

**In-process** (issue 3): :class:`nl2sql_lib.sql.judge.Judge` against a plain serial evaluator
that opens a connection and runs gold and candidate for every candidate (BIRD's rule):

- ``naive serial``: the baseline;
- ``ours, 1 process``: the judge (gold once per question, connections reused, every guard of
  the safe executor on), once with its small cache of prediction results switched off (Spider
  dev asks many questions twice with the same SQL, which that cache exploits) and once as it
  ships;
- ``ours, 2 processes``: work split by database over a pool of 2 processes (``pool_after=0``);
- ``ours, --workers 2``: the command line's scoring path, which starts in one process and uses
  the pool only when, after a second, at least as much work is estimated to remain.

Each in-process figure is the median of 3 runs, and their verdicts must all agree. Writes
outputs/bench/evaluator.json and prints both tables.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import sqlglot
from sqlglot import exp

PROJECT = Path(__file__).resolve().parents[2]
SPIDER = PROJECT.parent / "shared" / "spider-dev"
PEERS = PROJECT.parent / "shared" / "peers"
PEERS_VENV = PROJECT / ".cache" / "peers-venv"
PEERS_PACKAGES = ("func_timeout", "sqlparse", "nltk", "tqdm")
OUT = PROJECT / "outputs" / "bench" / "evaluator.json"
N_CANDIDATES = 8
WORKERS = 2
ROUNDS = int(os.environ.get("NL2SQL_BENCH_ROUNDS", "3"))
ONE_RUN_AFTER_S = 30.0
TARGET_RATIO = 2.0


def _strip(sql: str) -> str:
    return sql.strip().rstrip(";").strip()


def _variant(gold: str, kind: str) -> str | None:
    try:
        tree = sqlglot.parse_one(gold, read="sqlite")
    except sqlglot.errors.SqlglotError:
        return None
    if not isinstance(tree, exp.Select):
        return None
    if kind == "drop_order" and tree.args.get("order") is not None:
        tree.set("order", None)
    elif kind == "swap" and len(tree.expressions) >= 2:
        items = list(tree.expressions)
        items[0], items[1] = items[1], items[0]
        tree.set("expressions", items)
    elif kind == "literal" and tree.args.get("where") is not None:
        literal = next(iter(tree.args["where"].find_all(exp.Literal)), None)
        if literal is None:
            return None
        literal.replace(exp.Literal.number(float(literal.this) + 1) if literal.is_number
                        else exp.Literal.string(literal.this + "zz"))
    elif kind == "distinct" and tree.args.get("distinct") is None:
        tree.set("distinct", exp.Distinct())
    else:
        return None
    return tree.sql(dialect="sqlite")


# What candidate k of each question is (see candidates_for), for the verdict breakdowns.
CANDIDATE_KINDS = ("gold", "ORDER BY dropped / LIMIT 1", "columns swapped / count(*)", "literal changed / LIMIT 2",
                   "broken syntax", "DISTINCT added", "outer result reordered", "unknown column")


def candidates_for(gold: str) -> list[str]:
    g = _strip(gold)
    return [
        g,
        _variant(g, "drop_order") or f"SELECT * FROM ({g}) LIMIT 1",
        _variant(g, "swap") or f"SELECT count(*) FROM ({g})",
        _variant(g, "literal") or f"SELECT * FROM ({g}) LIMIT 2",
        "SELEC" + g[6:] if g.upper().startswith("SELECT") else g + " WHERE",
        _variant(g, "distinct") or f"SELECT DISTINCT * FROM ({g})",
        f"SELECT * FROM ({g}) ORDER BY 1 DESC",
        f"SELECT no_such_column FROM ({g})",
    ]


def load_items() -> list[tuple[str, str, list[str]]]:
    """(db_path, gold, candidates) for every Spider dev question whose database exists."""
    items = []
    for ex in json.loads((SPIDER / "dev.json").read_text()):
        db = SPIDER / "database" / ex["db_id"] / f"{ex['db_id']}.sqlite"
        if db.is_file():
            items.append((str(db), ex["query"], candidates_for(ex["query"])))
    return items


def naive_serial(items) -> list[bool]:
    """The baseline: a new connection and a gold execution for every candidate."""
    verdicts = []
    for db, gold, cands in items:
        for pred in cands:
            conn = sqlite3.connect(db)
            try:
                gold_rows = conn.execute(gold).fetchall()
                try:
                    pred_rows = conn.execute(pred).fetchall()
                    verdicts.append(set(pred_rows) == set(gold_rows))
                except sqlite3.Error:
                    verdicts.append(False)
            finally:
                conn.close()
    return verdicts


def ours_serial(items, pred_cache_size: int = 4096) -> tuple[list[bool], int]:
    from nl2sql_lib.sql.judge import Judge

    judge = Judge(semantics="bird", pred_cache_size=pred_cache_size)
    verdicts = [judge.judge(db, gold, pred).correct for db, gold, cands in items for pred in cands]
    return verdicts, judge.gold_executions


def ours_parallel(items, workers: int = 2, pool_after: float | None = 0) -> list[bool]:
    from nl2sql_lib.data.example import Example
    from nl2sql_lib.evaluate.cli import score_parallel

    examples, preds = [], []
    for q, (db, gold, cands) in enumerate(items):
        for pred in cands:
            examples.append(Example(str(q), Path(db).stem, db, "", gold))
            preds.append(pred)
    items_out = score_parallel(examples, preds, {"semantics": "bird"}, workers=workers, components=False,
                               pool_after=pool_after)
    return [it["correct"] for it in items_out]


# ---------------------------------------------------------------------------------------------
# End to end: the command line against the official evaluators, each as its own process
# ---------------------------------------------------------------------------------------------


def _one_line(sql: str) -> str:
    """The SQL on one line (every evaluator here reads one query per line)."""
    return " ".join(sql.split())


def write_workload(items, folder: Path) -> dict[str, Path]:
    """The workload in each evaluator's input format; returns the paths.

    Question i of the files is candidate i: its gold line repeats the question's gold SQL.
    """
    gold_lines, pred_lines, bird_pred, difficulty = [], [], {}, []
    for db, gold, cands in items:
        db_id = Path(db).stem
        for pred in cands:
            index = len(pred_lines)
            gold_lines.append(f"{_one_line(gold)}\t{db_id}")
            pred_lines.append(_one_line(pred))
            bird_pred[str(index)] = f"{_one_line(pred)}\t----- bird -----\t{db_id}"
            # BIRD's script divides by each difficulty bucket's size: fill all three.
            difficulty.append({"difficulty": ("simple", "moderate", "challenging")[index % 3]})
    bird = folder / "bird"
    bird.mkdir(parents=True)
    paths = {"gold": folder / "gold.sql", "pred": folder / "pred.sql", "bird_dir": bird,
             "bird_difficulty": folder / "bird_difficulty.json"}
    paths["gold"].write_text("\n".join(gold_lines) + "\n")
    paths["pred"].write_text("\n".join(pred_lines) + "\n")
    (bird / "dev_gold.sql").write_text("\n".join(gold_lines) + "\n")
    (bird / "predict_dev.json").write_text(json.dumps(bird_pred))
    paths["bird_difficulty"].write_text(json.dumps(difficulty))
    return paths


def ensure_peers_venv() -> tuple[Path | None, str]:
    """(python of the official evaluators' own environment, or None; what happened)."""
    python = PEERS_VENV / "bin" / "python"
    check = [str(python), "-c", "import " + ", ".join(PEERS_PACKAGES)]
    if python.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, f"reused {PEERS_VENV.relative_to(PROJECT)}"
    base = "python3"
    steps = [[base, "-m", "venv", str(PEERS_VENV)],
             [str(python), "-m", "pip", "install", "--quiet", *PEERS_PACKAGES]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            return None, (f"could not make the official evaluators' environment {PEERS_VENV}: "
                          f"{' '.join(step)} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, f"made {PEERS_VENV} but it cannot import {', '.join(PEERS_PACKAGES)}"
    return python, f"made {PEERS_VENV.relative_to(PROJECT)} ({', '.join(PEERS_PACKAGES)} from PyPI)"


def ours_command(paths: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nl2sql_lib.evaluate", "--gold", str(paths["gold"]), "--pred", str(paths["pred"]),
            "--db-root", str(SPIDER / "database"), "--workers", str(WORKERS), "--out", str(out / "metrics.json"),
            "--per-item", str(out / "items.jsonl"), *extra]


def bird_command(python: Path, paths: dict[str, Path]) -> list[str]:
    bird = str(paths["bird_dir"]) + "/"  # the script glues file names onto these paths
    return [str(python), "evaluation.py", "--predicted_sql_path", bird, "--ground_truth_path", bird,
            "--data_mode", "dev", "--db_root_path", str(SPIDER / "database") + "/", "--num_cpus", str(WORKERS),
            "--meta_time_out", "30.0", "--mode_gt", "gt", "--mode_predict", "gpt",
            "--diff_json_path", str(paths["bird_difficulty"])]


def suite_command(python: Path, paths: dict[str, Path]) -> list[str]:
    return [str(python), "evaluation.py", "--gold", str(paths["gold"]), "--pred", str(paths["pred"]),
            "--db", str(SPIDER / "database"), "--table", str(SPIDER / "tables.json"), "--etype", "all"]


def _peer_env() -> dict[str, str]:
    return {**os.environ, "NLTK_DATA": str(PEERS / "nltk_data")}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(command: list[str], cwd: Path, log: Path, env: dict | None = None) -> tuple[float, float]:
    """(wall seconds from the process's start to its exit, CPU seconds of it and its workers).

    stdout and stderr go to ``log``. The CPU time counts every process the command waited for
    (both programs' pools are), so it says how much work each does whatever the load.
    """
    with open(log, "w") as sink:
        cpu, start = _children_cpu(), time.perf_counter()
        done = subprocess.run(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, env=env)
        seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}; see {log}:\n{log.read_text()[-2000:]}")
    return seconds, cpu


# The recording scripts: each imports an official evaluator's module from its own folder (the
# working directory), in the peers' environment, runs its code unchanged and writes down the
# verdict of every candidate, which the programs themselves only sum up.

BIRD_RECORDER = """
import json, sys
import evaluation as bird  # BIRD's evaluation.py, unchanged
args = json.loads(sys.argv[1])
bird.exec_result = []  # what its __main__ block sets up; its pool callback appends here
preds, db_paths = bird.package_sqls(args["dir"], args["db_root"], mode="gpt", data_mode="dev")
golds, _ = bird.package_sqls(args["dir"], args["db_root"], mode="gt", data_mode="dev")
bird.run_sqls_parallel(list(zip(preds, golds)), db_places=db_paths, num_cpus=args["workers"], meta_time_out=30.0)
results = bird.sort_results(bird.exec_result)
json.dump([r["res"] for r in results], open(args["out"], "w"))
"""

SUITE_RECORDER = """
import json, sys
import evaluation as suite  # test-suite's evaluation.py, unchanged
args = json.loads(sys.argv[1])
verdicts = {"exec": [], "exact": []}
run_exec, run_exact = suite.eval_exec_match, suite.Evaluator.eval_exact_match
depth = [0]

def recording_exec(*a, **k):
    verdicts["exec"].append(int(run_exec(*a, **k)))
    return verdicts["exec"][-1]

def recording_exact(self, pred, label):  # nested set operations call it again: keep the outer call
    depth[0] += 1
    try:
        score = run_exact(self, pred, label)
    finally:
        depth[0] -= 1
    if depth[0] == 0:
        verdicts["exact"].append(int(score))
    return score

suite.eval_exec_match, suite.Evaluator.eval_exact_match = recording_exec, recording_exact
kmaps = suite.build_foreign_key_map_from_json(args["table"])  # as its __main__ block does
suite.evaluate(args["gold"], args["pred"], args["db"], "all", kmaps, False, False, False)
json.dump(verdicts, open(args["out"], "w"))
"""


def record_bird(python: Path, paths: dict[str, Path], out: Path) -> list[int]:
    args = {"dir": str(paths["bird_dir"]) + "/", "db_root": str(SPIDER / "database") + "/", "workers": WORKERS,
            "out": str(out)}
    subprocess.run([str(python), "-c", BIRD_RECORDER, json.dumps(args)], cwd=PEERS / "bird_dev", check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def record_suite(python: Path, paths: dict[str, Path], out: Path) -> dict[str, list[int]]:
    args = {"gold": str(paths["gold"]), "pred": str(paths["pred"]), "db": str(SPIDER / "database"),
            "table": str(SPIDER / "tables.json"), "out": str(out)}
    subprocess.run([str(python), "-c", SUITE_RECORDER, json.dumps(args)], cwd=PEERS / "spider_test_suite",
                   check=True, stdout=subprocess.DEVNULL, env=_peer_env())
    return json.loads(out.read_text())


def bird_printed_total(log: Path) -> float:
    """The total accuracy (percent, 2 decimals) BIRD's script printed."""
    line = next(l for l in log.read_text().splitlines() if l.startswith("accuracy"))
    return float(line.split()[-1])


def suite_printed_all(log: Path, row: str) -> float:
    """Test-suite's printed 'all' column (3 decimals) of the row 'execution' or 'exact match'."""
    line = next(l for l in log.read_text().splitlines() if l.startswith(row + " "))
    return float(line[len(row):].split()[4])  # easy medium hard extra all joint_all


def _items(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()]


def compare_verdicts(ours: list[bool], official: list[int], preds: list[str], golds: list[str]) -> dict:
    """Agreement counts, disagreements by candidate kind, and the first ones with their SQL."""
    if len(ours) != len(official):
        return {"compared": 0, "error": f"{len(ours)} verdicts of ours against {len(official)} official ones"}
    differ = [i for i, (a, b) in enumerate(zip(ours, official)) if bool(a) != bool(b)]
    by_kind: dict[str, int] = {}
    for i in differ:
        kind = CANDIDATE_KINDS[i % N_CANDIDATES]
        by_kind[kind] = by_kind.get(kind, 0) + 1
    return {
        "compared": len(ours), "agree": len(ours) - len(differ), "disagree": len(differ),
        "rate": round((len(ours) - len(differ)) / len(ours), 4) if ours else None,
        "ours_only": sum(1 for i in differ if ours[i]), "official_only": sum(1 for i in differ if official[i]),
        "disagree_by_candidate_kind": by_kind,
        "first_disagreements": [{"index": i, "candidate_kind": CANDIDATE_KINDS[i % N_CANDIDATES], "ours": bool(ours[i]),
                                 "official": bool(official[i]), "pred": preds[i], "gold": golds[i]}
                                for i in differ[:5]],
    }


SYSTEMS = ("BIRD evaluation.py --num_cpus 2", "ours --no-components --workers 2",
           "test-suite evaluation.py --etype all", "ours (default: bird, exact match, components) --workers 2",
           "ours --semantics spider (exact match, components) --workers 2")


def end_to_end(items) -> dict:
    """Time each system ROUNDS times, interleaved; check verdicts question by question."""
    python, venv_note = ensure_peers_venv()
    print(f"official evaluators' environment: {venv_note}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-evaluator-") as tmp:
        tmp = Path(tmp)
        paths = write_workload(items, tmp / "workload")
        folders = {name: tmp / f"system{k}" for k, name in enumerate(SYSTEMS)}
        for folder in folders.values():
            folder.mkdir()
        commands = {
            SYSTEMS[1]: (ours_command(paths, folders[SYSTEMS[1]], "--no-components"), PROJECT, None),
            SYSTEMS[3]: (ours_command(paths, folders[SYSTEMS[3]]), PROJECT, None),
            SYSTEMS[4]: (ours_command(paths, folders[SYSTEMS[4]], "--semantics", "spider"), PROJECT, None),
        }
        if python is not None:
            commands[SYSTEMS[0]] = (bird_command(python, paths), PEERS / "bird_dev", None)
            commands[SYSTEMS[2]] = (suite_command(python, paths), PEERS / "spider_test_suite", _peer_env())
        seconds: dict[str, list[float]] = {name: [] for name in SYSTEMS if name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in seconds}
        for round_ in range(ROUNDS):
            for name in seconds:
                if round_ > 0 and seconds[name][0] > ONE_RUN_AFTER_S:
                    continue
                command, cwd, env = commands[name]
                wall, used = run_timed(command, cwd, folders[name] / "log.txt", env)
                seconds[name].append(wall)
                cpu[name].append(used)
                print(f"  round {round_ + 1}: {name}: {wall:.2f} s ({used:.2f} CPU s)", flush=True)
        median = {name: statistics.median(s) for name, s in seconds.items()}
        median_cpu = {name: statistics.median(s) for name, s in cpu.items()}
        preds = paths["pred"].read_text().splitlines()
        golds = [line.rsplit("\t", 1)[0] for line in paths["gold"].read_text().splitlines()]
        bird_items, default_items, spider_items = (_items(folders[SYSTEMS[k]]) for k in (1, 3, 4))
        checks: dict = {
            "ours --no-components vs ours default (bird)": compare_verdicts(
                [it["correct"] for it in bird_items], [it["correct"] for it in default_items], preds, golds),
        }
        if python is not None:
            print("  recording the official verdicts one by one ...", flush=True)
            bird_official = record_bird(python, paths, tmp / "bird_verdicts.json")
            suite_official = record_suite(python, paths, tmp / "suite_verdicts.json")
            n = len(preds)
            checks["official totals reproduced by the recording runs"] = {
                "BIRD": round(100 * sum(bird_official) / n, 2) == bird_printed_total(folders[SYSTEMS[0]] / "log.txt"),
                "test-suite execution": round(sum(suite_official["exec"]) / n, 3)
                == suite_printed_all(folders[SYSTEMS[2]] / "log.txt", "execution"),
                "test-suite exact match": round(sum(suite_official["exact"]) / n, 3)
                == suite_printed_all(folders[SYSTEMS[2]] / "log.txt", "exact match"),
            }
            checks["ours --semantics bird vs BIRD"] = compare_verdicts(
                [it["correct"] for it in bird_items], bird_official, preds, golds)
            checks["ours --semantics spider vs test-suite execution"] = compare_verdicts(
                [it["correct"] for it in spider_items], suite_official["exec"], preds, golds)
            checks["ours exact match vs test-suite exact match (different definitions)"] = compare_verdicts(
                [it["exact_match"] for it in default_items], suite_official["exact"], preds, golds)
    ratios, cpu_ratios = {}, {}
    if python is not None:
        pairs = {"BIRD / ours --no-components": (0, 1), "test-suite --etype all / ours default": (2, 3),
                 "test-suite --etype all / ours --semantics spider": (2, 4)}
        ratios = {label: round(median[SYSTEMS[a]] / median[SYSTEMS[b]], 2) for label, (a, b) in pairs.items()}
        cpu_ratios = {label: round(median_cpu[SYSTEMS[a]] / median_cpu[SYSTEMS[b]], 2) for label, (a, b) in pairs.items()}
    return {
        "peers_environment": venv_note,
        "workers": WORKERS,
        "rounds": ROUNDS,
        "runs": {name: {"seconds": round(median[name], 2), "all_seconds": [round(x, 2) for x in s],
                        "cpu_seconds": round(median_cpu[name], 2), "all_cpu_seconds": [round(x, 2) for x in cpu[name]],
                        "command": " ".join(commands[name][0]), "cwd": str(commands[name][1])}
                 for name, s in seconds.items()},
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "target_ratio": TARGET_RATIO,
        "ex": {"ours bird": sum(it["correct"] for it in bird_items) / len(bird_items),
               "ours spider": sum(it["correct"] for it in spider_items) / len(spider_items),
               "ours exact match": sum(it["exact_match"] for it in default_items) / len(default_items)},
        "verdicts": checks,
    }


def print_end_to_end(result: dict) -> None:
    print(f"\nend to end, {result['rounds']} round(s), median seconds (process start to written output):")
    print(f"  {'system':<66}{'seconds':>8}{'CPU s':>8}   runs (seconds)")
    for name, run in result["runs"].items():
        print(f"  {name:<66}{run['seconds']:>8.2f}{run['cpu_seconds']:>8.2f}   {run['all_seconds']}")
    for name, ratio in result["ratios"].items():
        print(f"  {name:<66}{ratio:>7.2f}x  (target {result['target_ratio']:.0f}x; CPU seconds "
              f"{result['cpu_ratios'][name]:.2f}x)")
    for name, check in result["verdicts"].items():
        if "compared" not in check:
            print(f"  {name}: {check}")
            continue
        print(f"  verdicts, {name}: {check.get('agree')} of {check['compared']} agree"
              + (f" {check['error']}" if "error" in check else ""))
        if check.get("disagree"):
            print(f"    {check['disagree']} differ ({check['ours_only']} right only for ours, {check['official_only']} "
                  f"only for the official one); by candidate kind: {check['disagree_by_candidate_kind']}")


# ---------------------------------------------------------------------------------------------
# In-process: the judge against a naive serial evaluator (issue 3)
# ---------------------------------------------------------------------------------------------

REPEATS = 3


def _timed(fn, *args) -> tuple:
    """(result, median wall seconds, median CPU seconds of this process and its children).

    Each repeat starts cold for our evaluator (connection cache cleared, a fresh Judge), and the
    median of REPEATS runs is kept, since other jobs share this machine's two cores.
    """
    from nl2sql_lib.sql.execute import clear_connection_cache

    walls, cpus = [], []
    for _ in range(REPEATS):
        clear_connection_cache()
        before, start = os.times(), time.perf_counter()
        out = fn(*args)
        walls.append(time.perf_counter() - start)
        after = os.times()
        cpus.append(sum(after[:4]) - sum(before[:4]))
    return out, sorted(walls)[REPEATS // 2], sorted(cpus)[REPEATS // 2]


def in_process(items) -> dict:
    n = sum(len(c) for _, _, c in items)
    naive_serial(items[:100])  # warm the operating system's file cache for every run alike
    naive, t_naive, c_naive = _timed(naive_serial, items)
    (uncached, _), t_uncached, c_uncached = _timed(ours_serial, items, 0)
    (serial, gold_runs), t_serial, c_serial = _timed(ours_serial, items)
    parallel, t_parallel, c_parallel = _timed(ours_parallel, items, 2, 0)
    auto, t_auto, c_auto = _timed(ours_parallel, items, 2, None)
    cpu = [c_naive, c_uncached, c_serial, c_parallel, c_auto]
    return {
        "correct_candidates": sum(serial),
        "gold_executions_ours": gold_runs,
        "gold_executions_naive": n,
        "verdicts_agree": naive == uncached == serial == parallel == auto,
        "repeats": REPEATS,
        "runs": {
            name: {"seconds": round(t, 3), "candidates_per_s": round(n / t, 1), "cpu_seconds": round(c, 3)}
            for name, t, c in zip(
                ("naive serial", "ours, 1 process, no result cache", "ours, 1 process", "ours, 2 processes",
                 "ours, --workers 2 (pool only when worth it)"),
                (t_naive, t_uncached, t_serial, t_parallel, t_auto), cpu)
        },
        "speedup_vs_naive": {"1 process, no result cache": round(t_naive / t_uncached, 2),
                             "1 process": round(t_naive / t_serial, 2), "2 processes": round(t_naive / t_parallel, 2),
                             "--workers 2": round(t_naive / t_auto, 2)},
        "target_speedup": 5.0,
    }


def print_in_process(result: dict, n: int) -> None:
    t_naive = result["runs"]["naive serial"]["seconds"]
    print(f"\nin-process, median of {result['repeats']}; verdicts agree: {result['verdicts_agree']}")
    print(f"  {'evaluator':<44}{'seconds':>10}{'cand/s':>12}{'speed-up':>10}{'CPU s':>8}")
    for name, run in result["runs"].items():
        print(f"  {name:<44}{run['seconds']:>10.2f}{run['candidates_per_s']:>12.1f}{t_naive / run['seconds']:>9.1f}x"
              f"{run['cpu_seconds']:>8.2f}")
    print(f"  gold executions: ours {result['gold_executions_ours']}, naive {n}")


def main() -> dict:
    from nl2sql_lib.io import write_json

    if not (SPIDER / "dev.json").is_file():
        print(f"the Spider dev set is not at {SPIDER}; nothing to benchmark")
        sys.exit(2)
    items = load_items()
    n = sum(len(c) for _, _, c in items)
    load_start = os.getloadavg()[0]
    print(f"{len(items)} Spider dev questions x {N_CANDIDATES} candidates = {n} candidates; "
          f"load average (1 min) at the start {load_start:.2f} on {os.cpu_count()} CPUs", flush=True)
    e2e = end_to_end(items)
    print_end_to_end(e2e)
    inproc = in_process(items)
    print_in_process(inproc, n)
    result = {
        "benchmark": "evaluator",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "make bench BENCH=evaluator (.venv/bin/python -m tests.bench.run_all evaluator)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version},
        "questions": len(items),
        "candidates": n,
        "end_to_end": e2e,
        "in_process": inproc,
        "load_average_1min_at_start": round(load_start, 2),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    write_json(OUT, result)  # atomic: a killed run never leaves half a file
    print(f"load average (1 min): {result['load_average_1min_at_start']} at the start, "
          f"{result['load_average_1min_at_end']} at the end; written to {OUT.relative_to(PROJECT)}")
    return result


if __name__ == "__main__":
    main()
