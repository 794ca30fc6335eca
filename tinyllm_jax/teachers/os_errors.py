"""One line for an OS error, for the teacher commands' error boundary.

`error: <path>: <what>; <what to do>`: the file-system condition (a file
where a directory belongs, a full disk, a name too long) is the user's to
fix, so it is reported like bad input, never as a traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

_ADVICE = {
    errno.ENOSPC: "free space on that file system (or write elsewhere) and rerun; "
                  "everything written so far is kept",
    errno.EDQUOT: "free space within your quota (or write elsewhere) and rerun; "
                  "everything written so far is kept",
    errno.ENOTDIR: "a component of this path is a file, not a directory: choose another "
                   "path or move that file away",
    errno.EEXIST: "it exists and is not a directory: choose another path or move it away",
    errno.EISDIR: "a directory is where a file belongs: remove or rename it",
    errno.ENAMETOOLONG: "a name in this path is longer than the file system allows "
                        "(usually 255 bytes): choose a shorter path",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "permission denied: choose a location you can write to",
    errno.EPERM: "not permitted: choose a location you can write to",
    errno.ENOENT: "it does not exist: check the path",
    errno.ELOOP: "too many levels of symbolic links: fix the link",
    errno.EIO: "an input/output error: check the device and rerun",
}


def _file_in_the_way(path: str) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a directory."""
    for parent in Path(path).parents:
        if parent.exists() or parent.is_symlink():
            return None if parent.is_dir() else parent
    return None


def os_error_line(err: OSError) -> str:
    """`<path>: <what>; <what to do>` for an OSError (path omitted when unknown)."""
    what = (err.strerror or str(err)).rstrip(".")
    if what[1:2].islower():  # "No space left" -> "no space left", but "I/O error" stays
        what = what[:1].lower() + what[1:]
    advice = _ADVICE.get(err.errno, "check the path and rerun")
    if err.errno == errno.ENOTDIR and err.filename is not None:
        blocker = _file_in_the_way(os.fsdecode(err.filename))
        if blocker is not None:
            advice = (f"{blocker} is a file, not a directory: choose another path or move "
                      "that file away")
    paths = [os.fsdecode(p) for p in (err.filename, err.filename2) if p is not None]
    where = " -> ".join(paths)
    return f"{where}: {what}; {advice}" if where else f"{what}; {advice}"
