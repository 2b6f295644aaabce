"""The committed notebooks: thin, stripped of outputs, parameterized, and in step with their sources.

All six are generated from notebooks/src/NN_name.py by one generator (``make notebooks``);
editing a source without rebuilding would leave papermill running stale cells, so each one is
rebuilt here into a temporary folder and compared byte for byte.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nl2sql_lib.config import NOTEBOOK_OF_STAGE
from nl2sql_lib.notebook_tools import (
    NotebookSourceError,
    build_all,
    build_notebook,
    read_source,
    source_paths,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = PROJECT_ROOT / "notebooks"


def test_six_numbered_notebooks_exist():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert [n[:3] for n in names] == ["01_", "02_", "03_", "04_", "05_", "06_"], names


def test_every_stage_has_one_source_and_every_source_one_notebook():
    sources = [path.stem for path in source_paths()]
    assert sources == sorted(NOTEBOOK_OF_STAGE.values())
    assert sources == sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("source", source_paths(), ids=lambda p: p.stem)
def test_committed_notebook_matches_its_source(source, tmp_path):
    rebuilt = build_notebook(source, tmp_path)
    committed = NOTEBOOKS / rebuilt.name
    assert rebuilt.read_text() == committed.read_text(), (
        f"notebooks/{rebuilt.name} is stale: rebuild it with make notebooks "
        f"(python -m nl2sql_lib.notebook_tools build)")


def test_build_all_writes_every_notebook_from_its_source(tmp_path):
    written = build_all(out_dir=tmp_path)
    assert [p.name for p in written] == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def test_source_cells_become_notebook_cells_after_the_standard_ones(tmp_path):
    source = tmp_path / "02_sft.py"
    source.write_text(
        "# header comment\n# title: toy title\n# stage: sft\n\n"
        "# %% [markdown]\n# ## A heading\n#\n# text with `code`\n\n"
        "# %%\nx = 1\n\nif x:\n    print(\"a\\nb\")  # verbatim\n\n\n"
        "# %%\nx\n")
    parsed = read_source(source)
    assert (parsed.name, parsed.stage, parsed.title) == ("02_sft", "sft", "toy title")
    assert parsed.cells == [("md", "## A heading\n\ntext with `code`"),
                            ("code", "x = 1\n\nif x:\n    print(\"a\\nb\")  # verbatim"), ("code", "x")]
    notebook = json.loads(build_notebook(source, tmp_path / "out").read_text())
    cells = notebook["cells"]
    assert "".join(cells[0]["source"]) == "# 02_sft: toy title"
    assert "parameters" in cells[1]["metadata"]["tags"]
    assert [(c["cell_type"], "".join(c["source"])) for c in cells[4:]] == [
        ("markdown", parsed.cells[0][1]), ("code", parsed.cells[1][1]), ("code", "x")]


@pytest.mark.parametrize("text, message", [
    ("# title: t\n# %%\nx\n", "no stage"),
    ("# title: t\n# stage: eval\n# %%\nx\n", "stage 'eval' does not go with this notebook"),
    ("# title: t\n# stage: sft\nimport os\n# %%\nx\n", "only comments"),
    ("# title: t\n# stage: sft\n# %% [markdown]\nnot a comment\n", ":4: a markdown cell's lines start with '# '"),
    ("# title: t\n# stage: sft\n# %%\n\n# %%\nx\n", "cells [0] (counted from 0) are empty"),
    ("# title: t\n# stage: sft\n", "no cells"),
])
def test_a_malformed_source_is_named_with_its_problem(text, message, tmp_path):
    source = tmp_path / "02_sft.py"
    source.write_text(text)
    with pytest.raises(NotebookSourceError, match=re.escape(message)):
        read_source(source)


def test_make_notebooks_rebuilds_every_notebook_with_the_generator():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    phony = next(line for line in makefile.splitlines() if line.startswith(".PHONY:"))
    assert "notebooks" in phony.split()
    recipe = makefile.split("\nnotebooks:", 1)[1].split("\n\n", 1)[0]
    assert "-m nl2sql_lib.notebook_tools build" in recipe


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
# The Colab/Kaggle set-up cell. It runs before the project is installed, so it is plain code in
# the cell; these tests exec it with Colab or Kaggle faked, pip and nvidia-smi stubbed, and a
# local git repository (file:// URL) that `git clone` really clones, offline.
# --------------------------------------------------------------------------------------------

T4 = "Tesla T4, 15360, 7.5"
A100 = "NVIDIA A100-SXM4-80GB, 81920, 8.0"
V100_32GB = "Tesla V100-SXM2-32GB, 32768, 7.0"


def _install_cell(path: Path) -> str:
    code_cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    return "".join(code_cells[1]["source"])


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_notebook_has_the_install_cell_of_its_stage(path):
    from nl2sql_lib.notebook_tools import install_cell

    stage = {notebook: stage for stage, notebook in NOTEBOOK_OF_STAGE.items()}[path.stem]
    assert _install_cell(path) == install_cell(stage), (
        f"{path.name}: the second code cell must be notebook_tools.install_cell({stage!r})")


@pytest.fixture
def project_repo(tmp_path):
    """A git repository with a few of the project's files, committed; main and a branch."""
    import subprocess

    repo = tmp_path / "origin"
    for name, text in {
        "pyproject.toml": "[project]\nname = 'nl2sql_lib'\n",
        "params/sft.yaml": "profile: gpu\n",
        "params/t4/sft.yaml": "profile: t4\n",
        "nl2sql_lib/__init__.py": "",
    }.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "project"], check=True)
    subprocess.run([*git, "checkout", "-q", "-b", "v1"], check=True)
    (repo / "params" / "t4" / "sft.yaml").write_text("profile: t4\nbranch: v1\n")
    subprocess.run([*git, "commit", "-q", "-am", "on the branch"], check=True)
    subprocess.run([*git, "checkout", "-q", "main"], check=True)
    return repo


class FakeMachine:
    """Colab or Kaggle around the cell: records pip, answers nvidia-smi, lets git really run."""

    def __init__(self, where: str, monkeypatch, tmp_path: Path, gpu: str | None = T4):
        import os
        import subprocess
        import sys

        self.gpu, self.commands, self.real_run = gpu, [], subprocess.run
        self.clone_dir = tmp_path / "content" / "nl2sql-lab"
        monkeypatch.setenv("NL2SQL_LAB_DIR", str(self.clone_dir))
        monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
        if where == "colab":
            monkeypatch.setitem(sys.modules, "google.colab", object())
        elif where == "kaggle":
            monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
        monkeypatch.setattr(subprocess, "run", self.run)
        monkeypatch.setattr(sys, "path", list(sys.path))  # the cell may prepend the project folder
        self.start_dir = tmp_path / "kernel-start"
        self.start_dir.mkdir()
        monkeypatch.chdir(self.start_dir)  # restored afterwards: the cell changes directory
        self.os = os

    def run(self, cmd, *args, **kwargs):
        import subprocess

        cmd = [str(part) for part in cmd]
        self.commands.append(cmd)
        if cmd[0] == "git":
            return self.real_run(cmd, *args, **kwargs)
        if cmd[0] == "nvidia-smi":
            if self.gpu is None:
                raise FileNotFoundError("nvidia-smi")
            return subprocess.CompletedProcess(cmd, 0, stdout=self.gpu + "\n", stderr="")
        return subprocess.CompletedProcess(cmd, 0)  # pip

    def pip_commands(self) -> list[list[str]]:
        return [c for c in self.commands if c[1:4] == ["-m", "pip", "install"]]

    def exec_cell(self, install_from: str, params_file: str | None = None, stage: str = "sft") -> dict:
        from nl2sql_lib.notebook_tools import install_cell

        self.commands.clear()
        namespace = {"install_from": install_from, "params_file": params_file, "run": "lab"}
        exec(install_cell(stage), namespace)
        return namespace


def _public_names(namespace: dict) -> set[str]:
    import types

    return {k for k, v in namespace.items() if not k.startswith("_")
            and not isinstance(v, (types.ModuleType, types.FunctionType)) and k != "__builtins__"}


@pytest.mark.parametrize("where", ["colab", "kaggle"])
def test_install_cell_clones_the_project_with_params_installs_it_and_moves_there(
        where, project_repo, tmp_path, monkeypatch, capsys):
    import os
    import sys

    machine = FakeMachine(where, monkeypatch, tmp_path)
    clone = machine.clone_dir
    namespace = machine.exec_cell(f"git+{project_repo.as_uri()}")

    assert (clone / "params" / "t4" / "sft.yaml").read_text() == "profile: t4\n"  # really cloned
    assert machine.commands[0][0] == "nvidia-smi"  # the GPU first: no long install on a CPU runtime
    assert machine.commands[1] == ["git", "clone", "--depth", "1", project_repo.as_uri(), str(clone)]
    assert machine.pip_commands() == [[sys.executable, "-m", "pip", "install", "-q", "-e", f"{clone}[gpu]"]]
    assert Path(os.getcwd()) == clone and str(clone) in sys.path
    assert namespace["params_file"] == "params/t4/sft.yaml" and Path(namespace["params_file"]).is_file()
    out = capsys.readouterr().out
    assert "Tesla T4" in out and "params/t4/sft.yaml" in out and "Restart" not in out
    # the cell leaves no public names but the parameters: params_from_notebook would take a new
    # one for a parameter (a typo)
    assert _public_names(namespace) == {"install_from", "params_file", "run"}

    # Run all again (e.g. after a restart): no second clone, no second pip install.
    os.chdir(machine.start_dir)
    namespace = machine.exec_cell(f"git+{project_repo.as_uri()}")
    assert machine.pip_commands() == [] and not [c for c in machine.commands if c[0] == "git"]
    assert Path(os.getcwd()) == clone and namespace["params_file"] == "params/t4/sft.yaml"
    assert "installed already" in capsys.readouterr().out


def test_install_cell_asks_for_a_restart_when_pip_changed_a_loaded_package(
        project_repo, tmp_path, monkeypatch, capsys):
    import importlib.metadata
    import os

    import numpy

    machine = FakeMachine("colab", monkeypatch, tmp_path)
    real_version = importlib.metadata.version

    def after_pip(name):  # pip installed another numpy than the one this kernel imported
        return "0.0.1" if name == "numpy" else real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", after_pip)
    with pytest.raises(RuntimeError, match=rf"restart needed.*numpy {numpy.__version__} -> 0\.0\.1"):
        machine.exec_cell(f"git+{project_repo.as_uri()}")
    assert "Runtime > Restart session, then run all cells again" in capsys.readouterr().out
    assert Path(os.getcwd()) == machine.start_dir  # stopped before moving or picking a profile

    # After the restart the kernel loads what pip installed: the versions agree, nothing is
    # installed again, and the cell goes on.
    monkeypatch.setattr(importlib.metadata, "version", real_version)
    namespace = machine.exec_cell(f"git+{project_repo.as_uri()}")
    assert machine.pip_commands() == []
    assert namespace["params_file"] == "params/t4/sft.yaml"


@pytest.mark.parametrize("gpu, expected", [
    (T4, "params/t4/eval.yaml"),          # 15 GB, compute capability 7.5
    (V100_32GB, "params/t4/eval.yaml"),   # enough memory, but no bf16 (7.0)
    (A100, "params/eval.yaml"),
])
def test_install_cell_picks_the_profile_for_the_gpu(gpu, expected, project_repo, tmp_path, monkeypatch, capsys):
    machine = FakeMachine("kaggle", monkeypatch, tmp_path, gpu=gpu)
    namespace = machine.exec_cell(f"git+{project_repo.as_uri()}", stage="eval")
    assert namespace["params_file"] == expected
    assert gpu.split(",")[0] in capsys.readouterr().out  # says which card it saw


def test_install_cell_keeps_a_chosen_params_file_and_needs_a_gpu_otherwise(project_repo, tmp_path, monkeypatch):
    machine = FakeMachine("colab", monkeypatch, tmp_path, gpu=None)
    namespace = machine.exec_cell(f"git+{project_repo.as_uri()}", params_file="params/smoke/sft.yaml")
    assert namespace["params_file"] == "params/smoke/sft.yaml"
    assert not [c for c in machine.commands if c[0] == "nvidia-smi"]
    with pytest.raises(RuntimeError, match="no GPU found.*T4 GPU"):
        machine.exec_cell(f"git+{project_repo.as_uri()}")


def test_install_cell_clones_a_branch_named_the_pip_way(project_repo, tmp_path, monkeypatch):
    machine = FakeMachine("colab", monkeypatch, tmp_path)
    machine.exec_cell(f"git+{project_repo.as_uri()}@v1")
    assert machine.commands[1] == ["git", "clone", "--depth", "1", "--branch", "v1", project_repo.as_uri(),
                                   str(machine.clone_dir)]
    assert "branch: v1" in (machine.clone_dir / "params" / "t4" / "sft.yaml").read_text()


def test_install_cell_uses_an_existing_folder_as_is(project_repo, tmp_path, monkeypatch):
    import os
    import sys

    machine = FakeMachine("kaggle", monkeypatch, tmp_path)
    # a relative folder (an uploaded clone beside the notebook) is made absolute: pip would look
    # a bare "origin[gpu]" up on PyPI
    os.chdir(tmp_path)
    machine.exec_cell("origin")
    assert machine.pip_commands() == [[sys.executable, "-m", "pip", "install", "-q", "-e", f"{project_repo}[gpu]"]]
    assert not [c for c in machine.commands if c[0] == "git"] and not machine.clone_dir.exists()
    assert Path(os.getcwd()) == project_repo


def test_install_cell_does_nothing_outside_colab_and_kaggle(project_repo, tmp_path, monkeypatch):
    import os

    machine = FakeMachine("laptop", monkeypatch, tmp_path)
    for install_from in (str(project_repo), f"git+{project_repo.as_uri()}"):
        namespace = machine.exec_cell(install_from)
        assert machine.commands == [] and namespace["params_file"] is None
        assert Path(os.getcwd()) == machine.start_dir and not machine.clone_dir.exists()


def test_install_cell_asks_for_a_restart_when_pip_replaced_any_loaded_distribution(
        project_repo, tmp_path, monkeypatch, capsys):
    """Not only the listed packages: PyYAML (imported here as yaml, no version check of its own)."""
    import importlib.metadata

    import yaml  # noqa: F401  (loaded in this kernel)

    machine = FakeMachine("colab", monkeypatch, tmp_path)
    real_version, real_run = importlib.metadata.version, machine.run
    pip_ran = []

    def run(cmd, *args, **kwargs):
        if list(cmd[1:4]) == ["-m", "pip", "install"]:
            pip_ran.append(True)
        return real_run(cmd, *args, **kwargs)

    def version(name):  # pip installed another PyYAML than the one this kernel imported
        return "0.0.2" if pip_ran and name == "PyYAML" else real_version(name)

    import subprocess

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(RuntimeError, match=r"restart needed.*PyYAML .* -> 0\.0\.2"):
        machine.exec_cell(f"git+{project_repo.as_uri()}")
    assert pip_ran and "Runtime > Restart session" in capsys.readouterr().out


def test_install_cell_without_a_gpu_stops_before_cloning_or_installing(project_repo, tmp_path, monkeypatch):
    machine = FakeMachine("colab", monkeypatch, tmp_path, gpu=None)
    with pytest.raises(RuntimeError, match="no GPU found"):
        machine.exec_cell(f"git+{project_repo.as_uri()}")
    assert [c[0] for c in machine.commands] == ["nvidia-smi"] and not machine.clone_dir.exists()


def test_install_cell_names_install_from_when_the_clone_fails(tmp_path, monkeypatch):
    machine = FakeMachine("kaggle", monkeypatch, tmp_path)
    missing = (tmp_path / "no-such-repo").as_uri()
    with pytest.raises(RuntimeError, match="git clone of .*no-such-repo failed.*install_from"):
        machine.exec_cell(f"git+{missing}")
    assert machine.pip_commands() == []
