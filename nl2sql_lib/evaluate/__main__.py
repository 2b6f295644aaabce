"""``python -m nl2sql_lib.evaluate``: see :mod:`nl2sql_lib.evaluate.cli`."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
