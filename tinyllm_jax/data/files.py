"""Reading an input file only when it is a regular file.

A question file, teacher chunk or store file that is a character device
(a symlink to /dev/zero or /dev/full), a named pipe or a directory would
otherwise read forever, block forever, or fail with a bare IsADirectoryError.
So every reader of the data layer checks the kind of file first and says
what it found.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tinyllm_jax.data.errors import DataError


def file_kind(mode: int) -> str:
    """'a directory', 'a character device', ... for a stat mode."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(path: str | os.PathLike[str], *, missing_ok: bool = False,
                  expected: str = "a regular file") -> bool:
    """True when `path` is a regular file (a symlink to one counts); False when it
    does not exist and `missing_ok`; otherwise a DataError saying what it is."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        # NotADirectoryError: a component of the path is a file, so nothing
        # is there either (a writer then gets that error with its path).
        if missing_ok:
            return False
        raise DataError("file not found", path=path, expected=expected) from None
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path=path, expected=expected) from None
    if not stat.S_ISREG(mode):
        raise DataError(f"is {file_kind(mode)}, not a regular file", path=path, expected=expected)
    return True


def read_regular_bytes(path: str | os.PathLike[str], *, missing: str = "file not found",
                       expected: str = "a regular file") -> bytes:
    """The bytes of a regular file, else a DataError naming the path: `missing`
    when it does not exist, what it is when it is no regular file."""
    path = Path(path)
    if not check_regular(path, missing_ok=True, expected=expected):
        raise DataError(missing, path=path, expected=expected)
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path=path, expected=expected) from None
