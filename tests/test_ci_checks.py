"""The CI checks of the GPU set (.ci/check_gpu_signatures.py, .ci/check_extras.py) can fail.

They run in .ci/run against the real vLLM/Unsloth wheels and PyPI; here they run offline on
small stand-in wheels whose sources have the same shape as the real ones (LLM.__init__ passing
**kwargs to the EngineArgs dataclass, a msgspec SamplingParams, Unsloth's get_peft_model wrapper
passing *args/**kwargs to FastLlamaModel), so that a keyword the target does not take fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / ".ci"))

import check_extras  # noqa: E402
import check_gpu_signatures  # noqa: E402

VLLM_SOURCES = {
    "vllm/entrypoints/llm.py": """
        class LLM(Mixin):
            def __init__(self, model: str, *, dtype="auto", seed: int = 0, quantization=None, **kwargs):
                if "x" in kwargs:
                    other(**kwargs)  # not a known forwarding: does not count
                engine_args = EngineArgs(model=model, dtype=dtype, seed=seed, **kwargs)
    """,
    "vllm/engine/arg_utils.py": """
        @dataclass
        class EngineArgs:
            model: str = "m"
            max_model_len: int | None = None
            enable_lora: bool = False
            max_lora_rank: int = 16
            gpu_memory_utilization: float = 0.9
            internal: int = field(init=False, default=0)
            registry: ClassVar[dict] = {}
    """,
    "vllm/sampling_params.py": """
        class SamplingParams(PydanticMsgspecMixin, msgspec.Struct, omit_defaults=True):
            n: int = 1
            temperature: float = 1.0
            top_p: float = 1.0
            max_tokens: int | None = 16
            seed: int | None = None
            stop: str | list[str] | None = None
            include_stop_str_in_output: bool = False
    """,
}
UNSLOTH_SOURCES = {
    "unsloth/models/loader.py": """
        class FastLanguageModel(FastLlamaModel):
            @staticmethod
            @functools.wraps(FastLlamaModel.get_peft_model)
            def get_peft_model(model, *args, **kwargs):
                return FastLlamaModel.get_peft_model(model, *args, **kwargs)

            @staticmethod
            def from_pretrained(model_name="m", max_seq_length=2048, dtype=None, load_in_4bit=True,
                                load_in_8bit=False, full_finetuning=False, *args, **kwargs):
                return helper(**kwargs)
    """,
    "unsloth/models/llama.py": """
        class FastLlamaModel:
            @staticmethod
            def get_peft_model(model, r=16, target_modules=None, lora_alpha=16, lora_dropout=0.0, bias="none",
                               use_gradient_checkpointing="unsloth", random_state=3407, **kwargs):
                pass
    """,
}


def make_wheel(path: Path, sources: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in sources.items():
            zf.writestr(name, textwrap.dedent(text))
    return path


def probe(extra: dict[str, dict] | None = None) -> dict:
    """builder_kwargs.py-shaped output whose keywords all exist in the stand-in wheels."""
    calls = {
        "vllm.LLM": {"model": "/m", "dtype": "bfloat16", "seed": 0, "quantization": "bitsandbytes",
                     "max_model_len": 2048, "enable_lora": True, "max_lora_rank": 16},
        "vllm.SamplingParams": {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "seed": 0,
                                "stop": [";"], "include_stop_str_in_output": True},
        "unsloth.FastLanguageModel.from_pretrained": {"model_name": "/m", "max_seq_length": 2048, "dtype": None,
                                                      "load_in_4bit": True, "load_in_8bit": False,
                                                      "full_finetuning": False},
        "unsloth.FastLanguageModel.get_peft_model": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
                                                     "target_modules": ["q_proj"], "bias": "none",
                                                     "use_gradient_checkpointing": "unsloth", "random_state": 0},
        "transformers.BitsAndBytesConfig": {"load_in_4bit": True},
        "trl.GRPOConfig": {"use_vllm": True, "vllm_mode": "colocate"},
    }
    for target, kwargs in (extra or {}).items():
        calls[target] = {**calls[target], **kwargs}
    return {
        "versions": {"trl": "test"},
        "trl_dir": None,
        "calls": [{"target": t, "source": f"test builder for {t}", "kwargs": kw} for t, kw in calls.items()],
        "accepted": {
            "transformers.BitsAndBytesConfig": {"accepts": ["load_in_4bit", "load_in_8bit"], "from": "test"},
            "trl.GRPOConfig": {"accepts": ["use_vllm", "vllm_mode"], "from": "test"},
        },
    }


@pytest.fixture
def wheels(tmp_path):
    vllm = make_wheel(tmp_path / "vllm-0.31.0-cp38-abi3-manylinux_2_28_x86_64.whl", VLLM_SOURCES)
    unsloth = make_wheel(tmp_path / "unsloth-2026.10.9-py3-none-any.whl", UNSLOTH_SOURCES)
    return ["--wheel", f"vllm={vllm}", "--wheel", f"unsloth={unsloth}"]


def run_check(tmp_path, wheels, probe_data) -> tuple[int, str]:
    probe_file = tmp_path / "probe.json"
    probe_file.write_text(json.dumps(probe_data))
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / ".ci" / "check_gpu_signatures.py"), "--probe-json", str(probe_file),
         *wheels, "--out", str(tmp_path / "report.json")],
        capture_output=True, text=True, timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_signature_check_passes_on_accepted_keywords(tmp_path, wheels):
    # max_model_len, enable_lora, max_lora_rank reach vllm.LLM only through **kwargs -> EngineArgs
    rc, out = run_check(tmp_path, wheels, probe())
    assert rc == 0, out
    assert "every keyword is accepted" in out


@pytest.mark.parametrize("target, key", [
    ("vllm.SamplingParams", "max_new_tokens"),  # the transformers name, not vLLM's
    ("vllm.LLM", "internal"),  # an EngineArgs field with init=False
    ("vllm.LLM", "x"),  # only a **kwargs that goes elsewhere would take it
    ("unsloth.FastLanguageModel.from_pretrained", "attn_implementation"),  # swallowed by **kwargs only
    ("unsloth.FastLanguageModel.get_peft_model", "use_rslora_typo"),
    ("transformers.BitsAndBytesConfig", "bnb_4bit_quant"),
    ("trl.GRPOConfig", "vllm_gpu_memory"),
])
def test_signature_check_fails_on_an_unknown_keyword(tmp_path, wheels, target, key):
    rc, out = run_check(tmp_path, wheels, probe({target: {key: 1}}))
    assert rc == 1, out
    assert "FAILED" in out and repr([key]) in out and f"test builder for {target}" in out


def test_signature_check_fails_when_a_target_gets_no_call(tmp_path, wheels):
    data = probe()
    data["calls"] = [c for c in data["calls"] if c["target"] != "vllm.SamplingParams"]
    rc, out = run_check(tmp_path, wheels, data)
    assert rc == 1 and "vllm.SamplingParams: no builder call" in out


def test_signature_check_reads_trls_own_llm_call(tmp_path, wheels):
    trl = tmp_path / "trl" / "generation"
    trl.mkdir(parents=True)
    (trl / "vllm_generation.py").write_text("llm = LLM(model='m', max_model_len=10, sleep_mode_level=2)\n")
    data = probe()
    data["trl_dir"] = str(tmp_path / "trl")
    rc, out = run_check(tmp_path, wheels, data)
    assert rc == 1 and "sleep_mode_level" in out and "TRL trl/generation/vllm_generation.py:1" in out


def test_builder_probe_reaches_every_target(tmp_path):
    """builder_kwargs.py runs on this environment and produces keywords for each target."""
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, str(PROJECT_ROOT / ".ci" / "builder_kwargs.py"), str(out)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    targets = {call["target"] for call in data["calls"] if call["kwargs"]}
    assert targets == {"vllm.LLM", "vllm.SamplingParams", "unsloth.FastLanguageModel.from_pretrained",
                       "unsloth.FastLanguageModel.get_peft_model", "transformers.BitsAndBytesConfig", "trl.GRPOConfig"}
    assert set(data["accepted"]) == {"transformers.BitsAndBytesConfig", "trl.GRPOConfig"}
    assert (Path(data["trl_dir"]) / "__init__.py").is_file()


# --- check_extras: the parts that need no network --------------------------------------------


def test_platform_tags_reach_down_to_manylinux2014():
    # pip takes --platform literally: without the older tags matplotlib (manylinux2014 wheels only)
    # has no candidate for a manylinux_2_28 target
    tags = check_extras.platform_tags("2.35")
    assert tags[0] == "manylinux_2_35_x86_64"
    assert {"manylinux_2_31_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_36_x86_64" not in tags


def test_wheel_glibc_takes_the_oldest_tag_of_a_wheel():
    assert check_extras.wheel_glibc("m-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl") == (2, 17)
    assert check_extras.wheel_glibc("llguidance-1.7.6-cp39-abi3-manylinux_2_31_x86_64.whl") == (2, 31)
    assert check_extras.wheel_glibc("trl-1.16.0-py3-none-any.whl") is None


def test_extras_check_refuses_an_extra_the_wheel_does_not_declare(tmp_path, capsys):
    # pip itself only warns "does not provide the extra" and resolves without it
    wheel = tmp_path / "nl2sql_lib-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("nl2sql_lib-0.1.0.dist-info/METADATA",
                    "Name: nl2sql_lib\nProvides-Extra: gpu\nRequires-Dist: vllm<0.32,>=0.31; extra == \"gpu\"\n")
    rc = check_extras.main(["--wheel", str(wheel), "--pip-python", sys.executable, "--extras", "gpu,unsloth",
                            "--out", str(tmp_path / "out")])
    assert rc == 2 and "declares no extra ['unsloth']" in capsys.readouterr().err
    provides, requires = check_extras.wheel_metadata(wheel)
    assert provides == {"gpu"} and requires == {"gpu": {"vllm"}}
    result = {"extra": "gpu", "versions": {"torch": "2.13.0"}}
    assert check_extras.check_extra_contents(result, requires) == [
        "[gpu] requires vllm but the resolution has none of it"]
