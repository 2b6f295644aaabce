"""Small file helpers: JSON Lines with clear errors, and atomic writes.

Atomic writes (write to a temporary file, then rename) mean a crash never leaves a half-written
artifact where a later stage or a resumed run would trust it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class DataFileError(ValueError):
    """A data file is missing or malformed; the message names the file and the record."""


def _read_umask() -> int:
    current = os.umask(0)  # the only way to read it is to set it; done once, at import
    os.umask(current)
    return current


_UMASK = _read_umask()


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file as 0600; give the result the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        record = _failing_record(text, exc.pos)
        where = f" (in record {record} of the list)" if record is not None else ""
        raise DataFileError(
            f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}{where}: {exc.msg}"
        ) from None


def _failing_record(text: str, error_at: int) -> int | None:
    """For a top-level JSON list that does not parse at ``error_at``: the index of the element
    holding the error, or starting at it (a missing comma between two records names the second)."""
    decoder = json.JSONDecoder()
    position = len(text) - len(text.lstrip())
    if not text.startswith("[", position):
        return None
    position += 1
    index = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] == "]":
            return None
        if position >= error_at:
            return index
        try:
            _, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return index
        if position > error_at:
            return index
        index += 1


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-empty line; a bad line raises naming the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFileError(f"{path}: line {number} is not valid JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise DataFileError(f"{path}: line {number} is not a JSON object")
            yield record


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def write_jsonl(path: str | Path, records: Iterable[Any]) -> Path:
    lines = [json.dumps(_plain(r), ensure_ascii=False, default=str) for r in records]
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append one record and flush it to disk: used by shards that must survive a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(_plain(record), ensure_ascii=False, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _plain(record: Any) -> Any:
    if hasattr(record, "to_dict"):
        return record.to_dict()
    return record
