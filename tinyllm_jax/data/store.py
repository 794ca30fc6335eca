"""The project's rationale store: append-only JSONL, one file per teacher and split.

Layout: `<store_dir>/<dataset>/<teacher>/<split>.jsonl`, one JSON object per
line with at least `id` (the question's id) and, for rationale files,
`rationale` (string or null) and `teacher_answer` (choice text, a letter, or
null). Teacher generation appends with `append_records` while it runs, so a
crash can leave at most one unterminated last line; `read_store` reports that
line instead of failing on it, and the next `append_records` repairs it before
writing, so a resumed run never glues a new record onto a torn one.
Records the teacher generator and the importer write also carry
`question_hash`, which joining checks (provenance.py). Only regular files are
read or appended to: a directory or device where a store file belongs is a
DataError naming it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.files import check_regular, file_kind, read_regular_bytes

try:  # POSIX only; without it two writers must simply not share a file.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

STORE_SUFFIX = ".jsonl"
STORE_FORMAT = "a rationale store file (JSON lines)"


def store_path(store_dir: str | os.PathLike[str], dataset: str, teacher: str, split: str) -> Path:
    """Where the store keeps `teacher`'s outputs for one split of `dataset`."""
    return Path(store_dir) / dataset / teacher / f"{split}{STORE_SUFFIX}"


def has_store_file(path: str | os.PathLike[str]) -> bool:
    """Whether a store file exists at `path`; something else there (a
    directory, a device) is a DataError, never "no store file"."""
    return check_regular(path, missing_ok=True, expected=STORE_FORMAT)


@dataclasses.dataclass(frozen=True)
class StoreRecord:
    """One parsed line; `line` is 1-based so errors can point at it."""

    line: int
    data: Mapping[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])


@dataclasses.dataclass(frozen=True)
class StoreFile:
    """A whole store file. `partial_tail` holds an unterminated last line that
    is not valid JSON (a write torn by a crash), else None; it is never in
    `records`."""

    path: Path
    records: tuple[StoreRecord, ...]
    partial_tail: str | None = None

    def ids(self) -> set[str]:
        return {r.id for r in self.records}


def _check_id(value: Any, *, path: Path, line: int | None, row: int | None) -> None:
    # bool is an int subclass; an id of `true` is a bug, not a number.
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise DataError(
            f"bad id {value!r}",
            path=path,
            line=line,
            row=row,
            field="id",
            expected="a non-empty string or an integer",
        )


def read_store(path: str | os.PathLike[str]) -> StoreFile:
    """Parse a store file; every line but an unterminated last one must be a
    JSON object with an `id`, otherwise DataError names the file and line."""
    path = Path(path)
    raw = read_regular_bytes(path, missing="rationale store file not found", expected=STORE_FORMAT)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(
            "not valid UTF-8", path=path, line=bad_line, expected="UTF-8 JSON lines"
        ) from None
    lines = text.split("\n")
    # A file ending in "\n" splits into [..., ""]; anything else in the last
    # slot is a line the writer never terminated.
    unterminated = lines[-1] if lines[-1].strip() else None
    records: list[StoreRecord] = []
    partial: str | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and unterminated is not None:
                partial = line
                continue
            raise DataError(
                f"malformed JSON: {e.msg} at column {e.colno}",
                path=path,
                line=number,
                expected="one JSON object per line",
            ) from None
        if not isinstance(data, dict):
            raise DataError(
                f"a JSON {type(data).__name__} where a record belongs",
                path=path,
                line=number,
                expected="one JSON object per line",
            )
        if "id" not in data:
            raise DataError(
                "record has no id", path=path, line=number, field="id", expected="an 'id' key"
            )
        _check_id(data["id"], path=path, line=number, row=None)
        records.append(StoreRecord(line=number, data=data))
    return StoreFile(path=path, records=tuple(records), partial_tail=partial)


def stored_ids(path: str | os.PathLike[str]) -> set[str]:
    """Ids already in a store file (empty when it does not exist yet), for
    resuming generation where it stopped."""
    path = Path(path)
    if not has_store_file(path):
        return set()
    return read_store(path).ids()


def _encode(records: Iterable[Mapping[str, Any]], path: Path) -> bytes:
    # Serialise everything before touching the file: one bad record must not
    # leave half a batch on disk.
    chunks = []
    for row, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DataError(
                f"a {type(record).__name__} where a record belongs",
                path=path,
                row=row,
                expected="a mapping with an 'id'",
            )
        if "id" not in record:
            raise DataError("record has no id", path=path, row=row, field="id")
        _check_id(record["id"], path=path, line=None, row=row)
        try:
            # json.dumps escapes newlines inside strings, so one record is
            # always exactly one line.
            chunks.append(json.dumps(dict(record), ensure_ascii=False, allow_nan=False) + "\n")
        except (TypeError, ValueError) as e:
            raise DataError(
                f"record is not JSON-serialisable: {e}", path=path, row=row
            ) from None
    return "".join(chunks).encode("utf-8")


def _repair_fd(fd: int) -> int:
    """Make the file end on a line boundary; returns the bytes removed."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    if os.pread(fd, 1, size - 1) == b"\n":
        return 0
    # Scan back for the last newline; tails are one record, so this is short.
    pos, block = size, 1 << 16
    cut = 0
    while pos > 0:
        start = max(0, pos - block)
        chunk = os.pread(fd, pos - start, start)
        found = chunk.rfind(b"\n")
        if found >= 0:
            cut = start + found + 1
            break
        pos = start
    tail = os.pread(fd, size - cut, cut)
    try:
        complete = isinstance(json.loads(tail.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        complete = False
    if complete:
        # A whole record that only lacks its newline (e.g. a hand-edited
        # file): keep it and terminate it.
        os.pwrite(fd, b"\n", size)
        return 0
    os.ftruncate(fd, cut)
    return size - cut


def repair_partial_tail(path: str | os.PathLike[str]) -> int:
    """Drop a torn last line left by a crash; returns the bytes removed."""
    fd = os.open(path, os.O_RDWR)
    try:
        removed = _repair_fd(fd)
        os.fsync(fd)
        return removed
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tail(fd: int, payload: bytes) -> None:
    _repair_fd(fd)
    offset = os.lseek(fd, 0, os.SEEK_END)
    view = memoryview(payload)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    os.fsync(fd)


def append_records(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> int:
    """Append records durably; returns how many were written.

    All lines go down in one write followed by fsync, after any torn tail from
    an earlier crash has been removed, so the file is always a sequence of
    whole lines plus at most one torn last line.
    """
    path = Path(path)
    payload = _encode(records, path)
    if not payload:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(f"is {file_kind(mode)}, not a regular file", path=path,
                            expected=STORE_FORMAT)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        _write_tail(fd, payload)
    except OSError as e:
        # pwrite and fsync errors carry no file name; the entry points print it.
        raise OSError(e.errno, e.strerror, os.fspath(path)) from e
    finally:
        os.close(fd)  # closing also releases the flock
    if created:
        # The new directory entry must survive a crash too.
        _fsync_dir(path.parent)
    return payload.count(b"\n")
