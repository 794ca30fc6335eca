"""The directory lock (tinyllm_jax/dirlock.py): one holder, named in the
refusal; stale locks (dead pid, reused pid, reboot, silent other host) taken
over with a warning; live ones never; a race of many starters has one winner."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinyllm_jax import dirlock
from tinyllm_jax.dirlock import LOCK_NAME, DirectoryLock, Holder, LockedError, holder_of


def _write_lock(directory: Path, **fields) -> Path:
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
              "command": "python -m tinyllm_jax.main --workdir=x", **fields}
    path = directory / LOCK_NAME
    path.write_text(json.dumps(holder))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_file_names_the_holder_and_is_removed_on_release(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path) as lock:
        held = Holder.from_json((tmp_path / LOCK_NAME).read_text())
        assert (held.host, held.pid) == (socket.gethostname(), os.getpid())
        assert held.process_start and held.boot_id is not None and "pytest" in held.command
        assert lock.held
    assert not (tmp_path / LOCK_NAME).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary files left


def test_second_holder_is_refused_with_host_pid_and_start(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path):
        before = (tmp_path / LOCK_NAME).read_bytes()
        with pytest.raises(LockedError) as info:
            DirectoryLock(tmp_path).acquire()
        text = str(info.value)
        assert f"host {socket.gethostname()}, pid {os.getpid()}, since " in text
        assert str(tmp_path / LOCK_NAME) in text and "delete" in text
        assert (tmp_path / LOCK_NAME).read_bytes() == before


def test_a_refused_lock_does_not_remove_the_holders_file(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path):
        other = DirectoryLock(tmp_path)
        with pytest.raises(LockedError):
            other.acquire()
        other.release()
        assert (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("stale", ["dead pid", "reused pid", "rebooted", "silent other host",
                                   "unreadable"])
def test_stale_lock_is_taken_over_with_a_warning(
    tmp_path: Path, stale: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / LOCK_NAME
    if stale == "dead pid":
        _write_lock(tmp_path, pid=_dead_pid())
    elif stale == "reused pid":  # pid 1 is alive, but started long before this record says
        _write_lock(tmp_path, pid=1, process_start="999999999")
    elif stale == "rebooted":
        _write_lock(tmp_path, pid=1, boot_id="not-this-boot")
    elif stale == "silent other host":
        _write_lock(tmp_path, host="another-host")
        old = time.time() - dirlock.STALE_AFTER_S - 60
        os.utime(path, (old, old))
    else:
        path.write_text('{"host": "vm", "pid"')  # a torn write of some other tool
    with caplog.at_level(logging.WARNING, logger="tinyllm_jax.dirlock"), DirectoryLock(tmp_path):
        assert Holder.from_json(path.read_text()).pid == os.getpid()
    assert "taking over the stale lock" in caplog.text


@pytest.mark.parametrize("live", ["other host, fresh heartbeat", "same host, live pid"])
def test_live_lock_of_another_process_is_never_taken(tmp_path: Path, live: str) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if live.startswith("other"):
            path = _write_lock(tmp_path, host="another-host", pid=sleeper.pid + 100000)
        else:
            path = _write_lock(tmp_path, pid=sleeper.pid)
        before = path.read_bytes()
        with pytest.raises(LockedError, match=r"is in use by another run \(host "):
            DirectoryLock(tmp_path).acquire()
        assert path.read_bytes() == before
        assert holder_of(tmp_path) is not None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_holder_of_ignores_stale_and_missing_locks(tmp_path: Path) -> None:
    assert holder_of(tmp_path) is None
    _write_lock(tmp_path, pid=_dead_pid())
    assert holder_of(tmp_path) is None


def test_heartbeat_refreshes_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dirlock, "HEARTBEAT_S", 0.05)
    with DirectoryLock(tmp_path):
        path = tmp_path / LOCK_NAME
        old = time.time() - 1000
        os.utime(path, (old, old))
        deadline = time.monotonic() + 5
        while path.stat().st_mtime < old + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_mtime > time.time() - 10


def _race(directory: str, start: float, results: multiprocessing.Queue) -> None:
    while time.time() < start:
        time.sleep(0.001)
    lock = DirectoryLock(directory)
    try:
        lock.acquire()
    except LockedError:
        results.put("refused")
        return
    results.put("won")
    time.sleep(1.0)  # hold it while the others try
    lock.release()


@pytest.mark.parametrize("with_stale_lock", [False, True])
def test_many_simultaneous_starters_have_exactly_one_winner(
    tmp_path: Path, with_stale_lock: bool
) -> None:
    if with_stale_lock:
        _write_lock(tmp_path, pid=_dead_pid())
    # spawn, not fork: forking a process that has JAX's threads running can
    # deadlock the child. Spawned children start slowly, so the common start
    # time is set well ahead.
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start = time.time() + 8.0
    procs = [ctx.Process(target=_race, args=(str(tmp_path), start, results)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["refused"] * 5 + ["won"]
    assert not (tmp_path / LOCK_NAME).exists()
