"""SIGKILL a command once its output file holds some lines: the crash half of
the teacher commands' resume tests."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def kill_after_lines(argv: list[str], env: dict, path: Path, *, lines: int = 3,
                     timeout_s: float = 240, poll_s: float = 0.01,
                     start_new_session: bool = False) -> int:
    """Run `argv` from the repository root and SIGKILL the process (not its
    group) once `path` holds `lines` newline-ended lines; fails the test if
    the command ends first. Returns the killed process's pid (its session's
    id with `start_new_session`)."""
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=start_new_session)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and path.read_bytes().count(b"\n") >= lines:
                break
            time.sleep(poll_s)
        assert proc.poll() is None, \
            f"generation ended before it could be killed: {proc.stderr.read()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid
