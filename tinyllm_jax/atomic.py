"""Atomic file replacement: every whole-file write of the project goes through here.

A reader (a resumed run, `--mode=eval`, a person) must see either the old
file or the complete new one, never a torn one, even if the process is killed
or the machine loses power mid-write. So the bytes go to a hidden temporary
name in the same directory (a rename is only atomic within one file system),
are fsynced, renamed over the target, and the directory entry is fsynced too.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temporary_name(path: str | os.PathLike) -> Path:
    """Where the new content of `path` is written before the rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or a new file in `directory` survive a power loss."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; nothing to sync then
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_atomic(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """`with open_atomic(p) as f: f.write(...)` replaces `p` only if the block completes.

    An exception inside the block removes the temporary file and leaves `p`
    as it was. `mode` is "w" (UTF-8 text) or "wb".
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"open_atomic mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = temporary_name(path)
    encoding = "utf-8" if mode == "w" else None
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            # A failed write or fsync (a full disk) names no file: name it.
            raise type(e)(e.errno, e.strerror, os.fspath(path)) from e
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with open_atomic(path, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with open_atomic(path, "w") as f:
        f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=True))


def write_jsonl_atomic(path: str | os.PathLike, rows: Any) -> None:
    """One JSON object per line, keys sorted, replacing `path` as a whole."""
    with open_atomic(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
