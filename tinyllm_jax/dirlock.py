"""One writer per directory: a lock file naming its holder.

    with DirectoryLock(workdir, what="training workdir"):
        ...write into workdir...

The lock is `<directory>/.lock`, a small JSON file (host, pid, start time,
command) that appears complete or not at all: it is written to a private
temporary name and hard-linked into place, and a link fails when the name
exists (on a file system without hard links, O_CREAT|O_EXCL is used). A
second process finding it raises `LockedError` naming the holder. It is
removed on release (normal end, error, SIGTERM or SIGINT handled by the
caller); a process killed outright leaves it, and the next one takes such a
*stale* lock over with a warning. Stale means:

- same host: the recorded process is gone (its pid does not exist, or the
  pid now belongs to a process started at another time, as after a
  container restart, or the machine rebooted since);
- another host (a shared file system): the holder refreshes the file's
  modification time every HEARTBEAT_S seconds, so a lock not refreshed for
  STALE_AFTER_S seconds is stale (the holder died with its host or was
  killed). A live lock of another host is never taken: the error says to
  delete the file if that run is known to be gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
# A lock seen while its writer is between creating and filling it (only with
# the O_EXCL fallback) is re-read for this long before it counts as damaged.
_UNREADABLE_GRACE_S = 2.0


class LockedError(ValueError):
    """The directory is held by another live process (ValueError: the entry
    points print it as `error: ...` and exit 2)."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' when unknown):
    tells a live holder from an unrelated process that reuses its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else ""


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lock, as recorded in the lock file."""

    host: str
    pid: int
    started: float
    command: str = ""
    boot_id: str = ""
    process_start: str = ""

    @classmethod
    def this_process(cls) -> Holder:
        return cls(host=socket.gethostname(), pid=os.getpid(), started=time.time(),
                   command=shlex.join(getattr(sys, "orig_argv", sys.argv)), boot_id=_boot_id(),
                   process_start=_process_start(os.getpid()))

    @classmethod
    def from_json(cls, text: str) -> Holder:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return cls(host=str(value["host"]), pid=int(value["pid"]),
                   started=float(value["started"]), command=str(value.get("command", "")),
                   boot_id=str(value.get("boot_id", "")),
                   process_start=str(value.get("process_start", "")))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True) + "\n"

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        text = f"host {self.host}, pid {self.pid}, since {since}"
        return f"{text}, command: {self.command}" if self.command else text

    def gone_reason(self, heartbeat_age_s: float) -> str | None:
        """Why this holder no longer runs, or None when it may still."""
        if self.host != socket.gethostname():
            if heartbeat_age_s > STALE_AFTER_S:
                return (f"its host has not refreshed the lock for {heartbeat_age_s:.0f}s "
                        f"(a live run refreshes it every {HEARTBEAT_S:.0f}s)")
            return None
        if self.boot_id and self.boot_id != _boot_id():
            return "this machine rebooted since"
        if not _pid_exists(self.pid):
            return f"process {self.pid} no longer exists"
        if self.process_start and self.process_start != _process_start(self.pid):
            return f"pid {self.pid} now belongs to another process"
        return None


class DirectoryLock:
    """The lock of one directory; `acquire` raises LockedError when held."""

    def __init__(self, directory: str | os.PathLike, what: str = "directory") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self._inode: int | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # --- taking and giving back -----------------------------------------------------

    def acquire(self) -> None:
        me = Holder.this_process()
        for _ in range(10):  # each retry follows another process's move
            if self._create(me):
                self._start_heartbeat()
                return
            seen = self._read_existing()
            if seen is None:
                continue  # gone meanwhile: try to create it again
            holder, inode, age = seen
            reason = holder.gone_reason(age) if holder is not None else (
                "the lock file is unreadable")
            if reason is None:
                raise LockedError(
                    f"{self.what} {self.directory} is in use by another run "
                    f"({holder.describe()}); "
                    f"lock file {self.path}. Wait for that run to end, or use another "
                    f"directory; if it is known to be gone, delete {self.path}.")
            if self._move_aside(inode):
                log.warning("%s: taking over the stale lock of %s: %s", self.path,
                            holder.describe() if holder else "an unknown process", reason)
        raise LockedError(f"{self.path}: could not take the lock; other processes keep "
                          "replacing it. Make sure only one run uses this directory.")

    def release(self) -> None:
        """Remove the lock if it is still this process's (idempotent)."""
        self._stop.set()
        if self._inode is None:
            return
        inode, self._inode = self._inode, None
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == inode:
                os.unlink(self.path)

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._inode is not None

    # --- the steps -------------------------------------------------------------

    def _create(self, me: Holder) -> bool:
        """Put a complete lock file in place; False when the name is taken."""
        tmp = self.directory / f"{LOCK_NAME}.{me.host}.{me.pid}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(me.to_json())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FUSE file systems)
            return self._create_exclusive(me)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._inode = os.stat(self.path).st_ino
        return True

    def _create_exclusive(self, me: Holder) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, me.to_json().encode())
            os.fsync(fd)
            self._inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        return True

    def _read_existing(self) -> tuple[Holder | None, int, float] | None:
        """(holder or None if unreadable, inode, seconds since the last
        heartbeat) of the lock on disk; None when it vanished."""
        deadline = time.monotonic() + _UNREADABLE_GRACE_S
        while True:
            try:
                st = os.stat(self.path)
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
            age = time.time() - st.st_mtime
            try:
                return Holder.from_json(text), st.st_ino, age
            except (ValueError, KeyError, TypeError):
                if time.monotonic() > deadline:
                    return None if not self.path.exists() else (None, st.st_ino, age)
                time.sleep(0.1)

    def _move_aside(self, inode: int) -> bool:
        """Remove the stale lock with this inode. A concurrent starter may
        have replaced it already; such a fresh lock is put back."""
        aside = self.directory / f"{LOCK_NAME}.stale.{os.getpid()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        if os.stat(aside).st_ino != inode:
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
            aside.unlink()
            return False
        aside.unlink()
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        inode = self._inode

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                with contextlib.suppress(OSError):
                    if os.stat(self.path).st_ino == inode:
                        os.utime(self.path)

        self._heartbeat = threading.Thread(target=beat, name=f"lock:{self.path}", daemon=True)
        self._heartbeat.start()


def holder_of(directory: str | os.PathLike) -> Holder | None:
    """The live holder of `directory`'s lock, or None (no lock, or a stale one)."""
    path = Path(directory) / LOCK_NAME
    try:
        st = os.stat(path)
        holder = Holder.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if holder.gone_reason(time.time() - st.st_mtime) else holder
