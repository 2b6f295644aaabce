"""What an executed notebook shows that a reader would have to read past: warnings.

A papermill-executed notebook keeps each cell's stderr as a ``stream`` output (JupyterLab and
nbconvert's HTML show it on red). Progress bars there are chatter; warnings (``TqdmWarning``,
``FutureWarning``, a library logger's ``[transformers] ...``, anything deprecated) and
tracebacks are what this module reports, cell by cell, so a test can fail listing them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# A line a reader stops at: a warning class or the word warning, deprecation, a library
# logger's "[transformers] ..." notice, or a traceback.
WARNING_LINE = re.compile(r"warn|deprecat|^\s*\[(transformers|datasets|trl|peft|accelerate)\]|traceback", re.I)


def notebook_warnings(path: str | Path) -> list[str]:
    """``"<notebook> cell <n>: <line>"`` for every warning line of its stderr and error outputs."""
    path = Path(path)
    notebook = json.loads(path.read_text())
    found = []
    for index, cell in enumerate(notebook.get("cells", [])):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":  # always worth reading
                found.append(f"{path.name} cell {index}: {output.get('ename')}: {output.get('evalue')}")
            for line in _stderr_lines(output):
                if WARNING_LINE.search(line):
                    found.append(f"{path.name} cell {index}: {line.strip()}")
    return found


def _stderr_lines(output: dict) -> list[str]:
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return []
    text = output.get("text", "")
    text = "".join(text) if isinstance(text, list) else text
    return text.replace("\r", "\n").splitlines()
