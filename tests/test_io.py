"""Atomic writes: the result looks like a plain write, and a failed write keeps the old file."""

from __future__ import annotations

import os
import stat

import pytest

from nl2sql_lib import io


def test_write_json_gives_the_permissions_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text("{}\n")
    written = io.write_json(tmp_path / "atomic.json", {"a": 1})
    assert stat.S_IMODE(os.stat(written).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    assert io.read_json(written) == {"a": 1}


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = io.write_json(tmp_path / "metrics.json", {"ex": 0.5})

    def crash(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", crash)  # the crash hits after the temporary is written
    with pytest.raises(OSError, match="disk full"):
        io.write_json(target, {"ex": 0.9})
    assert io.read_json(target) == {"ex": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
