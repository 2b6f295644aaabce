#!/usr/bin/env python3
"""Does each optional-dependency set resolve for a Linux x86_64 CUDA machine?

`pip install -e .[gpu]` is the GPU user's first step, and this project's machines have no GPU, so
CI asks pip for the whole set without installing it: for each extra (gpu, unsloth, gpu+unsloth,
dev) and each supported Python (3.11, 3.12), pip resolves the project's wheel against PyPI for a
manylinux x86_64 target (`pip install --dry-run --report`). A conflict (ResolutionImpossible), an
extra the wheel does not declare, or an extra whose packages are missing from the resolved set
fails the check. Each resolution is written to outputs/extras/<extra>-py<version>.json (pip's
installation report) with pip's log beside it, and the versions that matter are printed.

Why the pip command looks the way it does:
- pip's --platform takes tags literally: `--platform manylinux_2_28_x86_64` accepts only wheels
  tagged exactly manylinux_2_28, while a real glibc-2.28 machine also installs manylinux_2_17 /
  manylinux2014 wheels. matplotlib ships only manylinux2014 (= manylinux_2_17) wheels for
  x86_64, hence the lead's "No matching distribution found for matplotlib<3.12,>=3.8 (from
  versions: none)". So every glibc tag from the target down to manylinux1 is passed (pip accepts
  --platform many times).
- The target glibc is 2.35 (Ubuntu 22.04: Colab, Kaggle, most clusters). vLLM 0.31 needs
  llguidance 1.7, whose x86_64 wheels are manylinux_2_31 only, so a 2.28 target cannot resolve
  [gpu]; the report prints the newest glibc among the wheels chosen (a package can have older
  wheels for an older glibc: it is what this target gets, not a floor).
- --only-binary=:all: is required by pip together with --platform, and pip refuses --no-binary
  exceptions in that mode: a dependency with no wheel would have to be built into a wheel first
  and offered with --find-links. None is needed today (every package of every set has a wheel).
- The resolution ignores this machine's pip configuration (PIP_CONFIG_FILE=/dev/null and no
  PIP_* index settings): its find-links folder holds torch 2.13.0+cpu, which satisfies vLLM's
  torch==2.13.0 and would stand in for the CUDA build, its file:// indexes are partial mirrors,
  and its constraints file caps torch. What a GPU user gets comes from PyPI (--index-url).

Stdlib only: `python3 .ci/check_extras.py` (or `make check-extras`) needs no project venv.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXTRAS = ["gpu", "unsloth", "gpu,unsloth", "dev"]
DEFAULT_PYTHONS = ["3.11", "3.12"]
DEFAULT_GLIBC = "2.35"
DEFAULT_INDEX = os.environ.get("NL2SQL_CHECK_INDEX_URL", "https://pypi.org/simple")
# Printed for every set (when resolved); the report file has all of them.
KEY_PACKAGES = ["torch", "transformers", "trl", "vllm", "bitsandbytes", "unsloth", "unsloth-zoo",
                "xformers", "peft", "accelerate", "datasets", "torchvision", "triton"]
# pip settings from the environment that are kept: how to reach the index, not what it is.
KEEP_PIP_ENV = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY", "PIP_DEFAULT_TIMEOUT", "PIP_RETRIES",
                "PIP_TRUSTED_HOST", "PIP_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}


class CheckError(RuntimeError):
    """The check cannot run or found a problem; the message says which."""


def canonical(name: str) -> str:
    """PEP 503 name: Unsloth_Zoo -> unsloth-zoo."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_env() -> dict[str, str]:
    """The environment for pip: no configuration files, no PIP_* index or constraint settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k in KEEP_PIP_ENV}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip then reads no configuration file at all
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def platform_tags(glibc: str, arch: str = "x86_64") -> list[str]:
    """Every manylinux tag a machine with this glibc accepts, newest first (PEP 600 + aliases)."""
    major, minor = (int(part) for part in glibc.split("."))
    if major != 2 or minor < 17:
        raise CheckError(f"--glibc {glibc}: expected 2.17 or newer")
    tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 4, -1)]
    # The legacy names pip does not derive from manylinux_2_x: 2014 = 2.17, 2010 = 2.12, 1 = 2.5.
    return tags + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


_LEGACY_GLIBC = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def wheel_glibc(filename: str) -> tuple[int, int] | None:
    """The oldest glibc a wheel file runs on (from its platform tags); None for pure/other wheels."""
    if not filename.endswith(".whl"):
        return None
    platforms = filename[:-4].split("-")[-1].split(".")
    found = []
    for tag in platforms:
        match = re.match(r"manylinux_(\d+)_(\d+)_", tag)
        if match:
            found.append((int(match.group(1)), int(match.group(2))))
        elif tag.split("_")[0] in _LEGACY_GLIBC:
            found.append(_LEGACY_GLIBC[tag.split("_")[0]])
    return min(found) if found else None


def run_logged(cmd: list[str], log: Path) -> int:
    """Run pip with its output in ``log``; the exit status."""
    proc = subprocess.run(cmd, env=pip_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1800)
    log.write_text(proc.stdout)
    return proc.returncode


def run_checked(cmd: list[str]) -> None:
    """Run pip; its output becomes the error when it fails."""
    proc = subprocess.run(cmd, env=pip_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise CheckError(f"{' '.join(cmd[:5])} ... failed ({proc.returncode}):\n{proc.stdout[-3000:]}")


def resolver_python(work: Path, index_url: str) -> str:
    """A throwaway venv with a current pip: the resolver's result and speed then do not depend on
    the machine's pip (here pip 23.2.1 took 67 s and pip 26.3 30 s for [gpu,unsloth], both
    downloading every wheel: the index serves no separate metadata files)."""
    venv = work / "pip-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    run_checked([python, "-m", "pip", "install", "--quiet", "--index-url", index_url, "--upgrade", "pip>=25.1"])
    return python


def check_pip(python: str) -> str:
    """pip's version; --dry-run --report needs pip 22.2 or newer."""
    out = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, env=pip_env())
    match = re.match(r"pip (\d+)\.(\d+)", out.stdout)
    if out.returncode != 0 or not match:
        raise CheckError(f"{python} -m pip does not run: {out.stderr.strip() or out.stdout.strip()}")
    if (int(match.group(1)), int(match.group(2))) < (22, 2):
        raise CheckError(f"pip {match.group(1)}.{match.group(2)} is too old for --dry-run --report (22.2+)")
    return out.stdout.split()[1]


def build_wheel(python: str, work: Path, index_url: str) -> Path:
    """The project's wheel, built from a copy of the metadata and package (the checkout is left as
    it is: setuptools would write build/ and *.egg-info into it)."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.py", "setup.cfg", "MANIFEST.in"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "nl2sql_lib", src / "nl2sql_lib", ignore=shutil.ignore_patterns("__pycache__"))
    dist = work / "dist"
    run_checked([python, "-m", "pip", "wheel", "--no-deps", "--quiet", "--index-url", index_url, "-w", str(dist),
                 str(src)])
    wheels = list(dist.glob("*.whl"))
    if len(wheels) != 1:
        raise CheckError(f"expected one wheel in {dist}, found {wheels}")
    return wheels[0]


def wheel_metadata(wheel: Path) -> tuple[set[str], dict[str, set[str]]]:
    """(extras the wheel declares, extra -> the package names it requires) from its METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(name).decode()
    provides: set[str] = set()
    requires: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("Provides-Extra:"):
            provides.add(line.split(":", 1)[1].strip())
        elif line.startswith("Requires-Dist:"):
            req = line.split(":", 1)[1].strip()
            extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", req)
            if extra:
                pkg = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req).group(0)
                requires.setdefault(extra.group(1), set()).add(canonical(pkg))
    return provides, requires


def resolve(python: str, wheel: Path, extra: str, py: str, tags: list[str], index_url: str,
            out_dir: Path, work: Path) -> dict:
    """One dry-run resolution; returns {'ok', 'seconds', 'versions', 'glibc', 'report', 'log'}."""
    stem = f"{extra.replace(',', '+')}-py{py}"
    report, log = out_dir / f"{stem}.json", out_dir / f"{stem}.log"
    report.unlink(missing_ok=True)
    cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--progress-bar", "off",
           "--report", str(report),
           "--target", str(work / f"target-{stem}"),  # --platform needs --target; nothing is written
           "--python-version", py, "--implementation", "cp", "--only-binary=:all:",
           "--index-url", index_url]
    for tag in tags:
        cmd += ["--platform", tag]
    cmd.append(f"{wheel}[{extra}]")
    start = time.monotonic()
    rc = run_logged(cmd, log)
    result = {"extra": extra, "python": py, "ok": rc == 0, "seconds": round(time.monotonic() - start, 1),
              "report": str(report.relative_to(ROOT)) if report.is_relative_to(ROOT) else str(report),
              "log": str(log.relative_to(ROOT)) if log.is_relative_to(ROOT) else str(log)}
    if rc != 0:
        result["error"] = pip_error(log.read_text())
        return result
    installs = json.loads(report.read_text())["install"]
    versions = {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}
    result["versions"] = versions
    # The newest glibc among the chosen wheels (what this target gets; not a floor: older wheels may exist).
    needs = []
    for item in installs:
        filename = item.get("download_info", {}).get("url", "").rsplit("/", 1)[-1]
        glibc = wheel_glibc(filename)
        if glibc:
            needs.append((glibc, canonical(item["metadata"]["name"])))
    if needs:
        (major, minor), pkg = max(needs)
        result["glibc"] = f"{major}.{minor} ({pkg})"
    return result


def pip_error(log_text: str) -> str:
    """The lines of pip's log that explain a failure (ResolutionImpossible and its causes)."""
    lines = log_text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("ERROR")
                  or "conflict is caused by" in line or "ResolutionImpossible" in line), max(0, len(lines) - 25))
    return "\n".join(lines[max(0, start - 2):][:60])


def check_extra_contents(result: dict, requires: dict[str, set[str]]) -> list[str]:
    """Problems with a resolved set: a package the extras name is not in it (an extra that
    resolved to nothing, a marker that excluded it on Linux)."""
    problems = []
    for extra in result["extra"].split(","):
        missing = sorted(requires.get(extra, set()) - set(result["versions"]))
        if missing:
            problems.append(f"[{extra}] requires {', '.join(missing)} but the resolution has none of it")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", nargs="+", default=DEFAULT_EXTRAS,
                        help="extras to resolve; 'gpu,unsloth' resolves both together")
    parser.add_argument("--python-versions", nargs="+", default=DEFAULT_PYTHONS)
    parser.add_argument("--glibc", default=DEFAULT_GLIBC, help="target glibc (default 2.35, Ubuntu 22.04)")
    parser.add_argument("--index-url", default=DEFAULT_INDEX,
                        help="package index (default PyPI, or $NL2SQL_CHECK_INDEX_URL)")
    parser.add_argument("--jobs", type=int, default=2, help="resolutions at once (pip is CPU-bound: one per core)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "extras")
    parser.add_argument("--wheel", type=Path, help="resolve this wheel instead of building the project's")
    parser.add_argument("--pip-python", help="a Python whose pip resolves (default: a fresh venv with current pip)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        tags = platform_tags(args.glibc)
        with tempfile.TemporaryDirectory(prefix="check-extras-") as tmp:
            work = Path(tmp)
            python = args.pip_python or resolver_python(work, args.index_url)
            pip_version = check_pip(python)
            wheel = args.wheel.resolve() if args.wheel else build_wheel(python, work, args.index_url)
            provides, requires = wheel_metadata(wheel)
            unknown = sorted({e for combo in args.extras for e in combo.split(",")} - provides)
            if unknown:  # pip only warns "does not provide the extra" and resolves without it
                raise CheckError(f"{wheel.name} declares no extra {unknown} (it has {sorted(provides)})")
            print(f"pip {pip_version}; {wheel.name}; index {args.index_url}; "
                  f"target cp{{{','.join(args.python_versions)}}} manylinux glibc {args.glibc} x86_64", flush=True)
            jobs = [(extra, py) for extra in args.extras for py in args.python_versions]
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                results = list(pool.map(
                    lambda job: resolve(python, wheel, job[0], job[1], tags, args.index_url, out_dir, work), jobs))
    except (CheckError, subprocess.TimeoutExpired) as exc:
        print(f"check-extras: {exc}", file=sys.stderr)
        return 2

    failed = False
    for result in results:
        if result["ok"]:
            result["problems"] = check_extra_contents(result, requires)
            failed |= bool(result["problems"])
        else:
            failed = True
    summary = {"pip": pip_version, "index_url": args.index_url, "glibc_target": args.glibc,
               "seconds": round(time.monotonic() - started, 1), "results": results}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_table(results)
    print(f"check-extras: {len(results)} resolutions in {summary['seconds']} s; reports in {out_dir}")
    if failed:
        for result in results:
            if not result["ok"]:
                print(f"\n[{result['extra']}] Python {result['python']} does not resolve:\n{result['error']}",
                      file=sys.stderr)
            for problem in result.get("problems", []):
                print(f"\n[{result['extra']}] Python {result['python']}: {problem}", file=sys.stderr)
        print("\ncheck-extras: FAILED", file=sys.stderr)
        return 1
    print("check-extras: every set resolves")
    return 0


def print_table(results: list[dict]) -> None:
    """One line per resolution: the key packages' versions (absent ones left out)."""
    for r in results:
        head = f"[{r['extra']}] py{r['python']} ({r['seconds']:.0f} s):"
        if not r["ok"]:
            print(f"{head} CONFLICT, see {r['log']}")
            continue
        versions = ", ".join(f"{p} {r['versions'][p]}" for p in KEY_PACKAGES if p in r["versions"])
        print(f"{head} {versions}; {len(r['versions'])} packages; newest glibc tag chosen {r.get('glibc', '-')}")


if __name__ == "__main__":
    sys.exit(main())
