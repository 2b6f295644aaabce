#!/usr/bin/env python3
"""Are the keyword arguments the project builds for GPU-only libraries accepted by the pinned versions?

The GPU paths never run in CI (no GPU), and vLLM and Unsloth do not even import on a CPU, so a
renamed or removed keyword would first show on a user's GPU. This check needs neither:

1. builder_kwargs.py runs in the project's environment (--python, default .venv/bin/python) and
   writes every keyword dict the builders produce for the GPU profiles' parameter files:
   generate.vllm_llm_kwargs -> vllm.LLM, generate.vllm_sampling_kwargs -> vllm.SamplingParams,
   models.unsloth_from_pretrained_kwargs / unsloth_peft_kwargs -> unsloth.FastLanguageModel,
   models.bnb_config_kwargs -> transformers.BitsAndBytesConfig, train.grpo.grpo_config_kwargs ->
   trl.GRPOConfig. The keys are read at run time, never listed here.
2. The vllm and unsloth wheels that pyproject.toml's extras pin are downloaded once (pip download
   --no-deps, the same manylinux target as check_extras.py) into .cache/wheels/, and the sources
   are parsed with `ast`, not imported:
   - vllm.SamplingParams: the annotated fields of the msgspec Struct (vllm/sampling_params.py);
   - vllm.LLM: LLM.__init__'s parameters plus, since it passes **kwargs on to EngineArgs(...),
     the init fields of the EngineArgs dataclass (vllm/engine/arg_utils.py);
   - unsloth.FastLanguageModel.from_pretrained (unsloth/models/loader.py): its named parameters;
   - unsloth.FastLanguageModel.get_peft_model: a (model, *args, **kwargs) wrapper that passes them
     to FastLlamaModel.get_peft_model (unsloth/models/llama.py), whose named parameters count.
   A keyword that only a **kwargs catch-all would take, without a known forwarding, fails: Unsloth
   and transformers drop or merely warn about such keys.
   BitsAndBytesConfig and GRPOConfig import on a CPU; builder_kwargs.py reads them from the
   installed transformers / TRL.
3. TRL's own vllm.LLM(...) call (GRPO colocate mode, in the installed TRL) is checked against the
   same vLLM signature: TRL 1.15/1.16 with vLLM 0.31.

Any keyword a target does not accept fails the check (exit 1) and is named with the builder and
parameter file that produced it. The report goes to outputs/gpu_signatures/<label>.json.
Stdlib only: `python3 .ci/check_gpu_signatures.py [--python .venv-trl115/bin/python]`.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_extras import CheckError, canonical, pip_env, platform_tags  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WHEEL_CACHE = ROOT / ".cache" / "wheels"
DEFAULT_INDEX = "https://pypi.org/simple"


@dataclass(frozen=True)
class Target:
    dist: str  # the distribution whose wheel holds the source
    path: str  # file inside the wheel
    qualname: str  # Class, Class.method


# What each builder's keywords go to, in the wheels.
WHEEL_TARGETS = {
    "vllm.LLM": Target("vllm", "vllm/entrypoints/llm.py", "LLM.__init__"),
    "vllm.SamplingParams": Target("vllm", "vllm/sampling_params.py", "SamplingParams"),
    "unsloth.FastLanguageModel.from_pretrained": Target("unsloth", "unsloth/models/loader.py",
                                                        "FastLanguageModel.from_pretrained"),
    "unsloth.FastLanguageModel.get_peft_model": Target("unsloth", "unsloth/models/loader.py",
                                                       "FastLanguageModel.get_peft_model"),
}
# Calls that receive a function's **kwargs (callee as written in the source -> where it is): the
# keys those accept count as accepted by the caller. Any other **kwargs does not.
FORWARDS = {
    "EngineArgs": ("vllm/engine/arg_utils.py", "EngineArgs"),
    "FastLlamaModel.get_peft_model": ("unsloth/models/llama.py", "FastLlamaModel.get_peft_model"),
}


# --------------------------------------------------------------------------------------------
# Wheels
# --------------------------------------------------------------------------------------------


def pinned_requirement(dist: str) -> str:
    """The requirement on ``dist`` in pyproject.toml's optional dependencies ('vllm>=0.31,<0.32')."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for reqs in extras.values():
        for req in reqs:
            if canonical(re.match(r"[A-Za-z0-9._-]+", req).group(0)) == canonical(dist):
                return req.split(";")[0].strip()
    raise CheckError(f"pyproject.toml's extras do not name {dist}")


def download_wheel(dist: str, index_url: str) -> Path:
    """The newest wheel of ``dist`` that pyproject.toml allows, kept in .cache/wheels/ (pip does
    not download a file that is already there)."""
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    requirement = pinned_requirement(dist)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
           "--implementation", "cp", "--index-url", index_url, "-d", str(WHEEL_CACHE), requirement]
    for tag in platform_tags("2.35"):
        cmd += ["--platform", tag]
    proc = subprocess.run(cmd, env=pip_env(), capture_output=True, text=True, timeout=1800)
    # pip names the file: "Saved <path>" or "File was already downloaded <path>".
    found = re.findall(r"(?:Saved|File was already downloaded) (\S+\.whl)", proc.stdout)
    if proc.returncode != 0 or not found:
        raise CheckError(f"pip download {requirement} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return Path(found[-1])


# --------------------------------------------------------------------------------------------
# Signatures from source
# --------------------------------------------------------------------------------------------


def find_node(tree: ast.Module, qualname: str) -> ast.AST:
    """The class or function ``qualname`` (Class.method) defined in a module."""
    scope: list[ast.stmt] = tree.body
    node = None
    for part in qualname.split("."):
        node = next((n for n in scope if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                     and n.name == part), None)
        if node is None:
            raise CheckError(f"{qualname}: {part} not found")
        scope = node.body
    return node


def class_fields(node: ast.ClassDef) -> set[str]:
    """Init fields of a dataclass / msgspec Struct: annotated class attributes, without ClassVar
    and without dataclasses.field(init=False)."""
    fields = set()
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if "ClassVar" in ast.unparse(stmt.annotation):
            continue
        value = stmt.value
        if (isinstance(value, ast.Call) and ast.unparse(value.func).endswith("field")
                and any(k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
                        for k in value.keywords)):
            continue
        fields.add(stmt.target.id)
    return fields


def function_params(node: ast.FunctionDef) -> tuple[set[str], str | None]:
    """(names a caller may pass by keyword, the name of **kwargs or None)."""
    args = node.args
    names = {a.arg for a in args.args + args.kwonlyargs} - {"self", "cls"}
    return names, args.kwarg.arg if args.kwarg else None


def accepted_keywords(wheel: zipfile.ZipFile, path: str, qualname: str, seen: frozenset = frozenset()) -> set[str]:
    """The keywords ``qualname`` in ``path`` accepts, following **kwargs into FORWARDS."""
    tree = ast.parse(wheel.read(path).decode())
    node = find_node(tree, qualname)
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is None:
            return class_fields(node)
        node = init
    names, kwarg = function_params(node)
    if kwarg is None:
        return names
    for call in ast.walk(node):
        if not isinstance(call, ast.Call):
            continue
        passes_kwargs = any(k.arg is None and isinstance(k.value, ast.Name) and k.value.id == kwarg
                            for k in call.keywords)
        callee = ast.unparse(call.func)
        if passes_kwargs and callee in FORWARDS and callee not in seen:
            names |= accepted_keywords(wheel, *FORWARDS[callee], seen=seen | {callee})
    return names


def trl_llm_calls(trl_dir: Path) -> list[dict]:
    """Every vllm.LLM(...) call with keyword arguments in TRL's source (not its experimental part)."""
    found = []
    for path in sorted(trl_dir.rglob("*.py")):
        if "experimental" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if "LLM(" not in text:
            continue
        for call in ast.walk(ast.parse(text)):
            if isinstance(call, ast.Call) and ast.unparse(call.func) in ("LLM", "vllm.LLM"):
                keys = [k.arg for k in call.keywords if k.arg is not None]
                if keys:
                    found.append({"target": "vllm.LLM", "kwargs": dict.fromkeys(keys),
                                  "source": f"TRL {path.relative_to(trl_dir.parent)}:{call.lineno}"})
    return found


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def run_probe(python: str) -> dict:
    """builder_kwargs.py's output, run with the project's environment."""
    out = ROOT / "outputs" / "gpu_signatures" / f"builder_kwargs-{Path(python).parent.parent.name.lstrip('.')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([python, str(ROOT / ".ci" / "builder_kwargs.py"), str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise CheckError(f"builder_kwargs.py failed with {python}:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def check(probe: dict, accepted: dict[str, dict]) -> tuple[list[str], dict[str, dict]]:
    """(problems, per target: keys used and where the accepted set came from)."""
    problems, summary = [], {}
    for call in probe["calls"]:
        target = call["target"]
        if target not in accepted:
            problems.append(f"{target}: no signature known for it (from {call['source']})")
            continue
        entry = summary.setdefault(target, {"from": accepted[target]["from"], "keys": set(), "calls": 0})
        entry["keys"] |= set(call["kwargs"])
        entry["calls"] += 1
        unknown = sorted(set(call["kwargs"]) - set(accepted[target]["accepts"]))
        if unknown:
            problems.append(f"{target} ({accepted[target]['from']}) does not accept {unknown}: "
                            f"produced by {call['source']}")
    for target in accepted:  # a target no builder reached means the probe lost a builder
        if target not in summary:
            problems.append(f"{target}: no builder call produced keywords for it")
    return problems, {t: {**e, "keys": sorted(e["keys"])} for t, e in summary.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="the project's environment, which runs the builders")
    parser.add_argument("--probe-json", type=Path, help="builder_kwargs.py output to check instead of running it")
    parser.add_argument("--wheel", action="append", default=[], metavar="DIST=PATH",
                        help="use this wheel for vllm or unsloth instead of downloading it")
    parser.add_argument("--index-url", default=DEFAULT_INDEX)
    parser.add_argument("--out", type=Path, help="report file (default outputs/gpu_signatures/<env>.json)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        probe = json.loads(args.probe_json.read_text()) if args.probe_json else run_probe(args.python)
        wheels = dict(item.split("=", 1) for item in args.wheel)
        accepted: dict[str, dict] = dict(probe["accepted"])
        for dist in sorted({t.dist for t in WHEEL_TARGETS.values()}):
            path = Path(wheels[dist]) if dist in wheels else download_wheel(dist, args.index_url)
            with zipfile.ZipFile(path) as wheel:
                for name, target in WHEEL_TARGETS.items():
                    if target.dist == dist:
                        accepted[name] = {"accepts": sorted(accepted_keywords(wheel, target.path, target.qualname)),
                                          "from": f"{path.name}: {target.path} {target.qualname}"}
        calls = list(probe["calls"])
        if probe.get("trl_dir"):
            trl_calls = trl_llm_calls(Path(probe["trl_dir"]))
            if not trl_calls:  # TRL moved its engine: say so rather than check nothing
                raise CheckError(f"no vllm.LLM(...) call with keywords found under {probe['trl_dir']}")
            calls += trl_calls
    except CheckError as exc:
        print(f"check-gpu-signatures: {exc}", file=sys.stderr)
        return 2

    problems, summary = check({**probe, "calls": calls}, accepted)
    label = Path(args.python).parent.parent.name.lstrip(".") if not args.probe_json else args.probe_json.stem
    report = args.out or ROOT / "outputs" / "gpu_signatures" / f"{label}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"versions": probe.get("versions"), "targets": summary, "problems": problems,
                                  "seconds": round(time.monotonic() - started, 1)}, indent=2) + "\n")
    print(f"check-gpu-signatures ({label}: {', '.join(f'{k} {v}' for k, v in (probe.get('versions') or {}).items())})")
    for target, entry in summary.items():
        print(f"  {target}: {len(entry['keys'])} keywords from {entry['calls']} calls, checked against {entry['from']}")
    if problems:
        print("\n".join(["check-gpu-signatures: FAILED"] + [f"  - {p}" for p in problems]), file=sys.stderr)
        return 1
    print(f"check-gpu-signatures: every keyword is accepted ({time.monotonic() - started:.1f} s; report {report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
