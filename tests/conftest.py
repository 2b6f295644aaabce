"""Shared fixtures.

Tests that need the real Spider dev set use the ``spider_dev`` fixture: on a user's clone without
``../shared/spider-dev`` they skip with the reason; in CI (``CI`` set) its absence is a failure.

A test that trains with TRL's SFT, GRPO or DPO trainer in this process carries
``@pytest.mark.policy_training``: `make test-trl115` leaves those out on a machine without Triton
(TRL 1.15 computes their loss with a Triton-only kernel). The guard below fails a test that
trains one of them without the mark, so a new training test cannot break that run unnoticed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# TRL trainers whose loss TRL 1.15 computes through its Triton-only fused LM head.
POLICY_TRAINERS = frozenset({"SFTTrainer", "GRPOTrainer", "DPOTrainer"})
_trained_policy: set[str] = set()  # node ids of the tests during which a policy trainer trained

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPIDER_DEV = PROJECT_ROOT.parent / "shared" / "spider-dev"


def require_spider_dev(path: Path = SPIDER_DEV) -> Path:
    """``path`` when it holds Spider dev; else skip (a user's clone) or fail (``CI`` set)."""
    if (path / "dev.json").is_file():
        return path
    reason = f"the Spider dev set is not at {path}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI always has it, so this is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def spider_dev() -> Path:
    return require_spider_dev()


class ModelLoaded(Exception):
    """Raised by the stub of :func:`stub_load_model` to stop a stage right after it loads its model."""


@pytest.fixture
def stub_load_model(monkeypatch) -> dict:
    """Replace ``nl2sql_lib.models.load_model`` by a stub that records its keyword arguments and
    raises :class:`ModelLoaded`: a stage run up to its model load shows what it asked for."""
    from nl2sql_lib import models

    seen: dict = {}

    def fake_load(*args, **kwargs):
        seen.clear()
        seen.update(kwargs)
        raise ModelLoaded

    monkeypatch.setattr(models, "load_model", fake_load)
    return seen


def _test_node_id() -> str:
    """The running test's node id, from the variable pytest sets during setup, call and teardown."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]


@pytest.fixture(scope="session", autouse=True)
def _record_policy_training():
    """Record which test trains a policy trainer (wraps ``transformers.Trainer.train``; a
    module-scoped fixture that trains counts for the first test that uses it)."""
    from transformers import Trainer

    original = Trainer.train

    def recorded_train(self, *args, **kwargs):
        # by the class's ancestry: subclasses (Unsloth patches the trainers) count too
        if POLICY_TRAINERS & {cls.__name__ for cls in type(self).__mro__}:
            _trained_policy.add(_test_node_id())
        return original(self, *args, **kwargs)

    Trainer.train = recorded_train
    yield
    Trainer.train = original


@pytest.fixture(autouse=True)
def _policy_training_is_marked(request):
    yield
    if request.node.nodeid in _trained_policy and request.node.get_closest_marker("policy_training") is None:
        pytest.fail(f"{request.node.nodeid} trains with TRL's SFT/GRPO/DPO trainer: mark it "
                    "@pytest.mark.policy_training (make test-trl115 leaves those out without Triton)")
