"""The committed notebooks: thin, stripped of outputs, parameterized, and in step with their generators.

Five notebooks are generated from the ``NOTEBOOK_CELLS`` of their stage module; editing the module
without rebuilding the notebook would leave papermill running stale cells, so each one is rebuilt
here into a temporary folder and compared byte for byte.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = PROJECT_ROOT / "notebooks"

GENERATED = {
    "01_data.ipynb": ("nl2sql_lib.data.build", "write_data_notebook"),
    "02_sft.ipynb": ("nl2sql_lib.train.sft", "write_sft_notebook"),
    "04_revision_tree.ipynb": ("nl2sql_lib.tree.stage", "write_tree_notebook"),
    "05_reward_model.ipynb": ("nl2sql_lib.train.reward_model", "write_reward_model_notebook"),
    "06_eval.ipynb": ("nl2sql_lib.evaluate.stage", "write_eval_notebook"),
}


def test_six_numbered_notebooks_exist():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert [n[:3] for n in names] == ["01_", "02_", "03_", "04_", "05_", "06_"], names


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_notebook_matches_its_generator(name, tmp_path):
    module_name, writer_name = GENERATED[name]
    writer = getattr(importlib.import_module(module_name), writer_name)
    rebuilt = writer(tmp_path / name)
    committed = NOTEBOOKS / name
    assert rebuilt.read_text() == committed.read_text(), (
        f"notebooks/{name} is stale: rebuild it with python -c "
        f"'from {module_name} import {writer_name}; {writer_name}()'"
    )


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_notebook_is_stripped_and_parameterized(path):
    notebook = json.loads(path.read_text())
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code_cells, f"{path.name} has no code"
    with_outputs = [i for i, c in enumerate(code_cells) if c.get("outputs") or c.get("execution_count")]
    assert not with_outputs, f"{path.name}: code cells {with_outputs} keep outputs (run make strip-notebooks)"
    tagged = [i for i, c in enumerate(code_cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged == [0], f"{path.name}: the first code cell, and only it, must be tagged 'parameters' ({tagged})"


# --------------------------------------------------------------------------------------------
# The Colab/Kaggle install cell. It runs before the project is installed, so it is plain code in
# the cell; these tests exec it with Colab or Kaggle faked and subprocess stubbed.
# --------------------------------------------------------------------------------------------


def _install_cell(path: Path) -> str:
    code_cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    return "".join(code_cells[1]["source"])


def _run_install_cell(source: str, install_from: str, monkeypatch) -> tuple[list, dict]:
    import subprocess

    commands = []

    def fake(cmd, *args, **kwargs):
        commands.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake)
    monkeypatch.setattr(subprocess, "check_call", fake)
    namespace = {"install_from": install_from}
    exec(source, namespace)
    return commands, namespace


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_notebook_has_the_same_install_cell(path):
    from nl2sql_lib.notebook_tools import INSTALL_CELL

    assert _install_cell(path) == INSTALL_CELL, f"{path.name}: the second code cell must be INSTALL_CELL"


@pytest.mark.parametrize("where", ["colab", "kaggle"])
def test_install_cell_installs_a_local_folder_and_a_git_url_on_colab_and_kaggle(where, tmp_path, monkeypatch):
    import sys

    from nl2sql_lib.notebook_tools import INSTALL_CELL

    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if where == "colab":
        monkeypatch.setitem(sys.modules, "google.colab", object())
    else:
        monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")

    # a local folder (an uploaded clone): pip takes "<path>[gpu]"; "name[gpu] @ <path>" fails
    # with "No scheme supplied"
    commands, namespace = _run_install_cell(INSTALL_CELL, str(tmp_path), monkeypatch)
    assert commands == [[sys.executable, "-m", "pip", "install", "-q", f"{tmp_path}[gpu]"]]
    # a relative folder ("nl2sql-lab", a clone beside the notebook) is made absolute: pip would
    # look a bare "nl2sql-lab[gpu]" up on PyPI
    (tmp_path / "nl2sql-lab").mkdir()
    monkeypatch.chdir(tmp_path)
    commands, _ = _run_install_cell(INSTALL_CELL, "nl2sql-lab", monkeypatch)
    assert commands == [[sys.executable, "-m", "pip", "install", "-q", f"{tmp_path / 'nl2sql-lab'}[gpu]"]]
    url = "git+https://github.com/nl2sql-lab/nl2sql-lab.git"
    commands, _ = _run_install_cell(INSTALL_CELL, url, monkeypatch)
    assert commands == [[sys.executable, "-m", "pip", "install", "-q", f"nl2sql_lib[gpu] @ {url}"]]
    # the cell leaves no public names besides modules: params_from_notebook would take them
    # for parameters
    import types

    public = {k for k, v in namespace.items()
              if not k.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == {"install_from"}, public


def test_install_cell_does_nothing_outside_colab_and_kaggle(tmp_path, monkeypatch):
    import sys

    from nl2sql_lib.notebook_tools import INSTALL_CELL

    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for install_from in (str(tmp_path), "git+https://github.com/nl2sql-lab/nl2sql-lab.git"):
        commands, _ = _run_install_cell(INSTALL_CELL, install_from, monkeypatch)
        assert commands == []
