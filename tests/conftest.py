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


@pytest.fixture(scope="session")
def spider_dev() -> Path:
    if (SPIDER_DEV / "dev.json").is_file():
        return SPIDER_DEV
    reason = f"the Spider dev set is not at {SPIDER_DEV}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI always has it, so this is a failure, not a skip")
    pytest.skip(reason)
