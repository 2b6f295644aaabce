"""The rule for tests that need ../shared/spider-dev: skip on a user's clone, fail in CI."""

from __future__ import annotations

import pytest

from tests.conftest import require_spider_dev


def test_missing_spider_dev_skips_with_the_path_outside_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        require_spider_dev(tmp_path / "spider-dev")
    assert str(tmp_path / "spider-dev") in str(info.value)


def test_missing_spider_dev_fails_in_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as info:
        require_spider_dev(tmp_path / "spider-dev")
    assert str(tmp_path / "spider-dev") in str(info.value) and "not a skip" in str(info.value)


def test_a_folder_with_dev_json_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    (tmp_path / "dev.json").write_text("[]")
    assert require_spider_dev(tmp_path) == tmp_path
