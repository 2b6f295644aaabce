"""04_revision_tree without the notebook (same artifacts, same manifest):

    python -m nl2sql_lib.tree --params params/cpu/tree.yaml --run cpu [--set max_questions=16]

The trees file can be checked on its own with ``python -m nl2sql_lib.tree.verify``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..config import add_params_arguments, params_from_args
from ..runs import StageRun
from .stage import run_tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nl2sql_lib.tree", description="04_revision_tree without the notebook")
    add_params_arguments(parser, "params/cpu/tree.yaml")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cfg = params_from_args("tree", args)
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
