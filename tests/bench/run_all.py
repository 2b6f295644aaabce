"""Run every benchmark script (tests/bench/bench_*.py) in turn; each writes outputs/bench/<name>.json.

    make bench                  # all of them
    make bench BENCH=evaluator  # those whose name contains 'evaluator'
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    wanted = argv[0] if argv else ""
    scripts = sorted(p for p in HERE.glob("bench_*.py") if wanted in p.stem)
    if not scripts:
        print(f"no benchmark matches {wanted!r}; have: {[p.stem for p in HERE.glob('bench_*.py')]}")
        return 2
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        start = time.perf_counter()
        runpy.run_path(str(script), run_name="__main__")
        print(f"=== {script.stem} took {time.perf_counter() - start:.1f} s ===", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
