"""The lock a writer holds on one store file: `<split>.jsonl.lock` beside it.

Teacher generation and the importer take it before reading what is there, so
two runs on one store file can neither interleave their appends nor both
generate the ids that are still missing. The lock is per store file, not per
teacher directory: two runs on different splits of one teacher are fine.

The lock is an flock on the lock file, which the kernel drops when the
holder dies however it dies, and the file holds the holder's host, pid,
start time and command line so a refused run can name it. Released, the file
is emptied (never deleted: deleting a lock file races with a run that has it
open). A file still naming a holder when the flock is free was left by a run
that was killed: it is taken over with a warning. Where the file system has
no flock (some network file systems), the holder's pid is checked instead on
the same host; a holder on another host is then trusted until its lock file is
deleted by hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tinyllm_jax.data.files import file_kind
from tinyllm_jax.teachers.config import TeacherError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: only the pid check
    fcntl = None

LOCK_SUFFIX = ".lock"
# flock errors meaning "this file system cannot lock", not "someone holds it".
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def lock_path(path: str | os.PathLike[str]) -> Path:
    """The lock file of the store file `path`."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


@dataclasses.dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: str = "?"
    command: str = "?"

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (started {self.started}: {self.command})"


def _me() -> Holder:
    return Holder(socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%d %H:%M:%S"),
                  " ".join(sys.argv)[:300] or "python")


def _read_holder(fd: int) -> Holder | str | None:
    """The holder named in the file; None when it is empty (free); the raw
    text when it names none (a damaged or foreign file)."""
    size = os.fstat(fd).st_size
    text = os.pread(fd, min(size, 1 << 16), 0).decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        data = json.loads(text)
        return Holder(str(data["host"]), int(data["pid"]), str(data.get("started", "?")),
                      str(data.get("command", "?")))
    except (ValueError, KeyError, TypeError):
        return text[:200]


def _describe(holder: Holder | str | None) -> str:
    if isinstance(holder, Holder):
        return holder.describe()
    return "an unknown run" if holder is None else f"a run that wrote {holder!r}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_holder(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(dataclasses.asdict(holder)) + "\n").encode("utf-8"), 0)
    os.fsync(fd)


def _held(store: Path, lock: Path, holder: Holder | str | None, extra: str = "") -> TeacherError:
    return TeacherError(
        f"{store}: another run is writing this store file: {_describe(holder)} holds {lock}"
        f"{extra}; wait for it to finish or stop it, then rerun"
    )


def _acquire(fd: int, store: Path, lock: Path) -> Holder | str | None:
    """Take the lock; returns what the file named before (a stale holder)."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _held(store, lock, _read_holder(fd)) from None
        except OSError as e:
            if e.errno not in _NO_FLOCK:
                raise
        else:
            return _read_holder(fd)
    holder = _read_holder(fd)
    if isinstance(holder, Holder) and holder.pid != os.getpid():
        if holder.host != socket.gethostname():
            raise _held(store, lock, holder, f" (this file system cannot lock, so it cannot be "
                        f"checked from here; if that run is gone, delete {lock})")
        if _alive(holder.pid):
            raise _held(store, lock, holder)
    return holder


@contextlib.contextmanager
def store_lock(
    path: str | os.PathLike[str], *, warn: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the lock of store file `path` for the block; a held lock is a
    TeacherError naming the holder, a stale one is taken over with a warning."""
    path = Path(path)
    lock = lock_path(path)
    warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OSError(e.errno, e.strerror, os.fspath(e.filename or lock)) from e
    try:
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise TeacherError(f"{lock}: is {file_kind(mode)} where the lock file of {path} "
                                   "belongs; remove it and rerun")
            stale = _acquire(fd, path, lock)
            if stale is not None:
                warn(f"warning: {lock}: taking over the lock left by {_describe(stale)}, which "
                     "ended without releasing it; its complete lines are kept")
            _write_holder(fd, _me())
        except OSError as e:
            raise OSError(e.errno, e.strerror, os.fspath(lock)) from e
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released: the file names no holder
    finally:
        os.close(fd)  # closing also drops the flock
