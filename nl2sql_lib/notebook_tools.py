"""Build and strip the numbered notebooks.

Every notebook starts the same way, so that papermill, JupyterLab, Colab and Kaggle all run it:
a markdown title, then

1. a code cell tagged ``parameters`` (papermill injects the YAML keys after it);
2. a cell that, only on Colab or Kaggle, clones and installs the project, moves to its folder and
   picks the profile for the GPU (:data:`INSTALL_CELL`);
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
