"""04_revision_tree without the notebook (same artifacts, same manifest):

    python -m nl2sql_lib.tree --params params/cpu/tree.yaml --run cpu [--set max_questions=16]

The trees file can be checked on its own with ``python -m nl2sql_lib.tree.verify``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import yaml

from ..config import parse_params, read_yaml
from ..runs import StageRun
from .stage import run_tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nl2sql_lib.tree", description="04_revision_tree without the notebook")
    parser.add_argument("--params", required=True, help="a tree parameter file, e.g. params/cpu/tree.yaml")
    parser.add_argument("--run", default=None, help="run name (outputs/<run>)")
    parser.add_argument("--output-root", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set max_questions=16 (value parsed as YAML)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    values = read_yaml(args.params)
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            parser.error(f"--set wants KEY=VALUE, got {item!r}")
        target = values
        *parents, last = key.strip().split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = yaml.safe_load(raw)
    values.update({k: v for k, v in {"run": args.run, "output_root": args.output_root}.items() if v})
    cfg = parse_params("tree", values, origin=args.params)
    stage = StageRun(cfg, "tree").start()
    started = time.time()
    metrics = run_tree(cfg, stage)
    stage.finish(metrics)
    summary = {k: metrics[k] for k in ("questions", "nodes", "pairs_train", "pairs_test", "repair_by_depth", "verification")}
    summary["wall_seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary, indent=1))
    return 0 if metrics["verification"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
