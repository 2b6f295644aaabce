"""04_revision_tree without the notebook (same artifacts, same manifest):

    python -m nl2sql_lib.tree --params params/cpu/tree.yaml --run cpu [--set max_questions=16]

The trees file can be checked on its own with ``python -m nl2sql_lib.tree.verify``.
"""

from __future__ import annotations

import json
import time

from ..runs import start_stage_from_command_line
from .stage import headline, run_tree


def main(argv: list[str] | None = None) -> int:
    cfg, stage = start_stage_from_command_line(
        "tree", argv, description="04_revision_tree without the notebook", example="params/cpu/tree.yaml",
        # run as a package, argparse would call itself "__main__.py"; and this command line has
        # never configured logging: its output is the JSON summary below
        prog="python -m nl2sql_lib.tree", log_level=None)
    started = time.time()
    metrics = run_tree(cfg, stage)
    stage.finish(headline(metrics))
    summary = {k: metrics[k] for k in ("questions", "nodes", "pairs_train", "pairs_test", "repair_by_depth", "verification")}
    summary["wall_seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary, indent=1))
    return 0 if metrics["verification"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
