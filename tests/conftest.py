"""Shared fixtures.

Tests that need the real Spider dev set use the ``spider_dev`` fixture: on a user's clone without
``../shared/spider-dev`` they skip with the reason; in CI (``CI`` set) its absence is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
