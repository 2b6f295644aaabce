"""Build and strip the numbered notebooks.

Every notebook starts the same way, so that papermill, JupyterLab, Colab and Kaggle all run it:
a markdown title, then

1. a code cell tagged ``parameters`` (papermill injects the YAML keys after it);
2. a cell that installs the project, only on Colab or Kaggle;
3. a cell that validates the parameters with the stage's typed model.

    write_notebook("notebooks/02_sft.ipynb", "sft", "Supervised fine-tuning", [
        ("md", "## Train"),
        ("code", "result = run_sft(cfg, stage)"),
    ])

``python -m nl2sql_lib.notebook_tools strip notebooks/*.ipynb`` removes outputs before a commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

PARAMETERS_CELL = '''# Parameters. papermill injects the keys of a parameter file after this cell
# (papermill notebooks/{name}.ipynb out.ipynb -f params/cpu/{stage}.yaml).
# In JupyterLab, point params_file at a profile's YAML to run with its values.
params_file = None
run = "lab"
install_from = "git+https://github.com/nl2sql-lab/nl2sql-lab.git"'''

# It runs before the project is installed, so its logic lives in the cell itself. pip wants a
# local folder as "<path>[gpu]" ("nl2sql_lib[gpu] @ <path>" fails: "No scheme supplied"), made
# absolute (a bare "nl2sql-lab[gpu]" would be looked up on PyPI), and a URL as
# "nl2sql_lib[gpu] @ <url>". Only underscored names: params_from_notebook would take a public
# one for a parameter.
INSTALL_CELL = '''# On Colab or Kaggle only: install the project (with the GPU extra) from `install_from`,
# a git URL or an existing folder (e.g. an uploaded clone).
import os, subprocess, sys
if "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
    _target = f"{os.path.abspath(install_from)}[gpu]" if os.path.exists(install_from) else f"nl2sql_lib[gpu] @ {install_from}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", _target], check=True)'''

CONFIG_CELL = '''from nl2sql_lib.config import params_from_notebook
from nl2sql_lib.runs import StageRun

cfg = params_from_notebook("{stage}", globals())   # unknown keys or wrong types stop here
stage = StageRun(cfg, "{stage}").start()
cfg'''


def write_notebook(path: str | Path, stage: str, title: str, cells: list[tuple[str, str]]) -> Path:
    """Write a notebook: title, the three standard cells, then ``cells`` as (kind, source)."""
    path = Path(path)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell(PARAMETERS_CELL.format(name=path.stem, stage=stage))
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {path.stem}: {title}"),
        params,
        nbformat.v4.new_code_cell(INSTALL_CELL),
        nbformat.v4.new_code_cell(CONFIG_CELL.format(stage=stage)),
    ]
    for kind, source in cells:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source.strip()))
        elif kind == "code":
            nb.cells.append(nbformat.v4.new_code_cell(source.strip()))
        else:
            raise ValueError(f"cell kind must be 'md' or 'code', got {kind!r}")
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"{path.stem.replace('_', '-')}-{index:02d}"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def strip_outputs(path: str | Path) -> bool:
    """Remove outputs and execution counts; returns True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
        if "papermill" in cell.metadata or "execution" in cell.metadata:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
            changed = True
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "strip":
        print("usage: python -m nl2sql_lib.notebook_tools strip NOTEBOOK...", file=sys.stderr)
        return 2
    for name in argv[1:]:
        if strip_outputs(name):
            print(f"stripped {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
