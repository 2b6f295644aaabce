"""The numbered notebooks: their sources, the one generator that writes them, output stripping.

Each notebook ``notebooks/NN_name.ipynb`` is generated from ``notebooks/src/NN_name.py``; edit
the source, then ``make notebooks`` (``python -m nl2sql_lib.notebook_tools build``) rewrites all
six the same way, and tests/test_notebooks.py fails while a committed notebook differs from what
its source gives. A source is a Python file of cells in the "percent" format (the one VS Code,
Spyder and jupytext read as cells)::

    # notebooks/src/02_sft.py: the source of notebooks/02_sft.ipynb ...   (header comments)
    # title: supervised fine-tuning (loss on the answer only)
    # stage: sft

    # %% [markdown]
    # Supervised fine-tuning teaches the model ...     (each line "# text", or "#" when blank)

    # %%
    from nl2sql_lib.train.sft import run_sft            (code, verbatim)

    metrics = run_sft(cfg, stage)

The header, before the first ``# %%``, names the notebook's ``title`` and its ``stage`` (a
parameter file's stage: data, sft, grpo, tree, reward_model, eval); its other comment lines are
for the reader. Blank lines around a cell are dropped. A code cell cannot hold a ``# %%`` line.

Every notebook starts the same way, so that papermill, JupyterLab, Colab and Kaggle all run it;
the generator writes these first cells itself (they are not in the sources): a markdown title
(``# NN_name: title``), then

1. a code cell tagged ``parameters`` (papermill injects the YAML keys after it);
2. a cell that, only on Colab or Kaggle, clones and installs the project, moves to its folder and
   picks the profile for the GPU (:data:`INSTALL_CELL`);
3. a cell that validates the parameters with the stage's typed model (:data:`CONFIG_CELL`).

The source's cells follow. Notebooks stay thin: markdown that explains, cells that call
``nl2sql_lib``, plots; the last cell records the manifest with the stage module's
``headline(metrics)``, the same figures its command line records.

``write_notebook(path, stage, title, cells)`` writes a notebook from (kind, source) pairs (tests
build toy notebooks with it); ``python -m nl2sql_lib.notebook_tools strip notebooks/*.ipynb``
removes outputs before a commit.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

PARAMETERS_CELL = '''# Parameters. papermill injects the keys of a parameter file after this cell
# (papermill notebooks/{name}.ipynb out.ipynb -f params/cpu/{stage}.yaml).
# In JupyterLab, point params_file at a profile's YAML to run with its values. On Colab/Kaggle,
# None picks params/t4/{stage}.yaml or params/{stage}.yaml for the GPU (next cell).
params_file = None
run = "lab"
install_from = "git+https://github.com/nl2sql-lab/nl2sql-lab.git"'''

# The Colab/Kaggle set-up. It runs before the project is installed, so its logic lives in the
# cell itself (standard library only). Its names start with "_": params_from_notebook would take
# a public one for a parameter. "{stage}" is replaced by the notebook's stage (install_cell).
# Tested in tests/test_notebooks.py with Colab/Kaggle, pip and nvidia-smi faked and a local git
# repository cloned for real.
INSTALL_CELL = """# Colab or Kaggle only (elsewhere this cell does nothing): get the project WITH its params/,
# install it with the gpu extra, work from its folder, and pick the profile for this GPU.
# install_from: a git URL, cloned once into /content/nl2sql-lab (Kaggle: /kaggle/working/
# nl2sql-lab; the environment variable NL2SQL_LAB_DIR names another folder), or an existing
# folder (an uploaded clone), used as is.
import os, sys

_stage = "{stage}"
# Packages whose __version__ names their installed release: one that differs from what is
# installed now was loaded from an older install (e.g. before a restart was skipped).
_RESTART_IF_CHANGED = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
                       "huggingface_hub", "numpy", "pandas", "pyarrow", "pydantic")


def _loaded_distributions():
    # {distribution: version} of every installed distribution whose modules this kernel imported
    import importlib.metadata

    owners = importlib.metadata.packages_distributions()  # top-level module -> distributions
    found = {}
    for top in {name.partition(".")[0] for name in list(sys.modules)}:
        for dist in owners.get(top, ()):
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
    return found


def _project_folder(install_from, on_kaggle):
    import subprocess

    if os.path.isdir(install_from):
        return os.path.abspath(install_from)
    folder = os.environ.get("NL2SQL_LAB_DIR") or ("/kaggle/working/nl2sql-lab" if on_kaggle else "/content/nl2sql-lab")
    if os.path.isdir(folder):
        print(f"project: the clone in {folder} (delete that folder to clone again)")
        return folder
    url, branch = install_from.removeprefix("git+"), []
    head, _, last = url.rpartition("/")
    if "@" in last:  # pip's form for a branch or tag: ...nl2sql-lab.git@v1
        last, ref = last.split("@", 1)
        url, branch = f"{head}/{last}", ["--branch", ref]
    print(f"project: cloning {url} into {folder}")
    try:
        subprocess.run(["git", "clone", "--depth", "1", *branch, url, folder], check=True)
    except subprocess.CalledProcessError:
        raise RuntimeError(f"git clone of {url} failed (see above): check install_from in the first cell - "
                           "a git URL, optionally with @branch, or an existing folder") from None
    return folder


def _install(folder):
    import importlib, importlib.metadata, subprocess

    marker, target = os.path.join(folder, ".nl2sql-installed"), f"{folder}[gpu]"
    try:
        importlib.metadata.distribution("nl2sql_lib")
        with open(marker) as done:
            installed = done.read() == target
    except (importlib.metadata.PackageNotFoundError, OSError):
        installed = False
    before = {}
    if installed:
        print(f"install: {target} is installed already")
    else:
        before = _loaded_distributions()
        print(f"install: pip install -e {target} (a few minutes)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", target], check=True)
        with open(marker, "w") as out:
            out.write(target)
        importlib.invalidate_caches()
    changed = []
    for name, version in before.items():  # any package pip replaced while this kernel uses it
        try:
            now = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if now != version:
            changed.append(f"{name} {version} -> {now}")
    for name in _RESTART_IF_CHANGED:  # loaded from an older install than the one on disk
        loaded = getattr(sys.modules.get(name), "__version__", None)
        try:
            now = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if loaded is not None and loaded != now and not any(c.startswith(f"{name} ") for c in changed):
            changed.append(f"{name} {loaded} -> {now}")
    if changed:
        print("Runtime > Restart session, then run all cells again"
              " (Kaggle: Run > Restart & clear cell outputs, then Run All)")
        raise RuntimeError(f"restart needed: this kernel has loaded older versions of {', '.join(changed)}")


def _profile_for_this_gpu(stage):
    import subprocess

    query = ["nvidia-smi", "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"]
    try:
        first = subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
        name, memory_mib, capability = [part.strip() for part in first.split(",")]
        gib, capability = float(memory_mib) / 1024, float(capability)
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        raise RuntimeError("no GPU found: Runtime > Change runtime type > T4 GPU (Kaggle: Settings > "
                           f"Accelerator > GPU T4), or set params_file, e.g. params/smoke/{stage}.yaml") from None
    if gib < 16.5 or capability < 8.0:
        choice, why = f"params/t4/{stage}.yaml", "under 16.5 GiB or compute capability < 8.0: fp16, T4 sizes"
    else:
        choice, why = f"params/{stage}.yaml", "16.5 GiB or more and compute capability >= 8.0: bf16, A100/H100 sizes"
    print(f"profile: {choice} for {name} ({gib:.1f} GiB, compute capability {capability}): {why}")
    return choice


if "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
    # the GPU first: a runtime without one stops in a second, not after a long install
    _profile = _profile_for_this_gpu(_stage) if params_file is None else params_file
    _folder = _project_folder(install_from, on_kaggle="KAGGLE_KERNEL_RUN_TYPE" in os.environ)
    _install(_folder)
    os.chdir(_folder)  # params/ and outputs/ resolve here, as under make pipeline
    if _folder not in sys.path:
        sys.path.insert(0, _folder)  # importable before a restart (an editable install's hook loads at start)
    params_file = _profile
    print(f"working in {_folder}; params_file = {params_file!r}; outputs: {_folder}/outputs/{run}/")"""


def install_cell(stage: str) -> str:
    """The second code cell of the notebook of ``stage`` (INSTALL_CELL with its stage filled in)."""
    return INSTALL_CELL.replace("{stage}", stage)


CONFIG_CELL = '''from nl2sql_lib.config import params_from_notebook
from nl2sql_lib.memory_plan import check_stage
from nl2sql_lib.runs import StageRun

cfg = params_from_notebook("{stage}", globals())   # unknown keys or wrong types stop here
check_stage("{stage}", cfg)                        # on a GPU: the memory plan; stops if it cannot fit
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
        nbformat.v4.new_code_cell(install_cell(stage)),
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


# --------------------------------------------------------------------------------------------
# The sources (notebooks/src/NN_name.py) and the generator
# --------------------------------------------------------------------------------------------

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
SOURCES_DIR = NOTEBOOKS_DIR / "src"

_CELL_MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?\s*$")
_HEADER_KEY = re.compile(r"^# (?P<key>title|stage):\s*(?P<value>.+?)\s*$")


class NotebookSourceError(ValueError):
    """A notebook source that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class NotebookSource:
    """One parsed source: the notebook's name (``02_sft``), stage, title and its own cells."""

    name: str
    stage: str
    title: str
    cells: list[tuple[str, str]]  # ("md" | "code", source)


def _markdown_line(line: str, where: str) -> str:
    if line == "#" or line.startswith("# "):
        return line[2:]
    if not line.strip():
        return ""
    raise NotebookSourceError(f"{where}: a markdown cell's lines start with '# ' (or are '#'), got {line!r}")


def read_source(path: str | Path) -> NotebookSource:
    """Parse ``notebooks/src/NN_name.py`` (format: this module's docstring)."""
    from .config import NOTEBOOK_OF_STAGE

    path = Path(path)
    header: dict[str, str] = {}
    cells: list[tuple[str, list[str]]] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        where = f"{path}:{number}"
        marker = _CELL_MARKER.match(line)
        if marker:
            cells.append(("md" if marker.group("markdown") else "code", []))
        elif not cells:  # the header
            key = _HEADER_KEY.match(line)
            if key:
                header[key.group("key")] = key.group("value")
            elif line.strip() and not line.startswith("#"):
                raise NotebookSourceError(f"{where}: before the first '# %%' only comments may stand, got {line!r}")
        else:
            kind, lines = cells[-1]
            lines.append(_markdown_line(line, where) if kind == "md" else line)
    missing = [key for key in ("title", "stage") if key not in header]
    if missing:
        raise NotebookSourceError(f"{path}: the header names no {' or '.join(missing)} "
                                  "(lines '# title: ...' and '# stage: ...' before the first '# %%')")
    stage = header["stage"]
    if NOTEBOOK_OF_STAGE.get(stage) != path.stem:
        raise NotebookSourceError(f"{path}: stage {stage!r} does not go with this notebook "
                                  f"(stages and their notebooks: {NOTEBOOK_OF_STAGE})")
    if not cells:
        raise NotebookSourceError(f"{path}: no cells (each starts with a '# %%' or '# %% [markdown]' line)")
    empty = [i for i, (_, lines) in enumerate(cells) if not "\n".join(lines).strip()]
    if empty:
        raise NotebookSourceError(f"{path}: cells {empty} (counted from 0) are empty")
    return NotebookSource(path.stem, stage, header["title"], [(kind, "\n".join(lines).strip()) for kind, lines in cells])


def source_paths(sources_dir: str | Path = SOURCES_DIR) -> list[Path]:
    """The notebook sources, in order (``NN_name.py``)."""
    return sorted(Path(sources_dir).glob("[0-9][0-9]_*.py"))


def build_notebook(source: str | Path, out_dir: str | Path = NOTEBOOKS_DIR) -> Path:
    """Write ``out_dir/NN_name.ipynb`` from its source: the standard first cells, then the source's."""
    parsed = read_source(source)
    return write_notebook(Path(out_dir) / f"{parsed.name}.ipynb", parsed.stage, parsed.title, parsed.cells)


def build_all(sources_dir: str | Path = SOURCES_DIR, out_dir: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    """Rewrite every numbered notebook from its source (``make notebooks``)."""
    paths = source_paths(sources_dir)
    if not paths:
        raise NotebookSourceError(f"no notebook sources (NN_name.py) in {sources_dir}")
    return [build_notebook(path, out_dir) for path in paths]


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


USAGE = """usage: python -m nl2sql_lib.notebook_tools build [SOURCE...]
       python -m nl2sql_lib.notebook_tools strip NOTEBOOK...
build: write notebooks/NN_name.ipynb from notebooks/src/NN_name.py (every source when none is named)
strip: remove the outputs and execution counts of executed notebooks"""


def main(argv: list[str]) -> int:
    command, names = (argv[0], argv[1:]) if argv else (None, [])
    if command == "build":
        for path in [build_notebook(name) for name in names] if names else build_all():
            print(f"wrote {path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path}")
        return 0
    if command == "strip" and names:
        for name in names:
            if strip_outputs(name):
                print(f"stripped {name}")
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
