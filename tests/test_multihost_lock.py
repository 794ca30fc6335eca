"""The workdir lock on a two-process loopback cluster: only process 0 takes
it (the others must not fight over it), and when it is refused every process
stops with exit status 2 instead of waiting for process 0 in a collective."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.test_multihost import cpu_env, free_port

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "multihost_lock.py"


def _claim(workdir: Path, out: Path, logs: Path) -> list[tuple[int, str]]:
    out.mkdir(parents=True, exist_ok=True)
    coordinator = f"127.0.0.1:{free_port()}"
    procs = []
    for pid in range(2):
        log = logs / f"claim_{pid}.log"
        with open(log, "w") as f:
            procs.append((subprocess.Popen(
                [sys.executable, str(HELPER), f"--workdir={workdir}", f"--out={out}",
                 f"--coordinator={coordinator}", f"--process_id={pid}"],
                cwd=REPO, env=cpu_env(1), stdout=f, stderr=subprocess.STDOUT), log))
    results = []
    for proc, log in procs:
        try:
            code = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            for p, _ in procs:
                p.kill()
            raise AssertionError("a claiming process hung:\n" + "\n".join(
                log.read_text()[-2000:] for _, log in procs)) from None
        results.append((code, log.read_text()))
    return results


def test_only_process_0_locks_and_a_refusal_stops_every_process(tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    results = _claim(workdir, tmp_path / "out", tmp_path)
    assert [code for code, _ in results] == [0, 0], results
    claims = [json.loads((tmp_path / "out" / f"claim_{i}.json").read_text()) for i in range(2)]
    assert [c["holds_lock"] for c in claims] == [True, False]
    assert claims[0]["lock"] == claims[1]["lock"]  # one lock file, written by process 0
    assert claims[0]["lock"]["host"] == socket.gethostname()
    assert not (workdir / ".lock").exists()

    # A live holder (this test process): both processes refuse, none hangs.
    lock = workdir / ".lock"
    held = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
            "command": "pytest"}
    lock.write_text(json.dumps(held))
    results = _claim(workdir, tmp_path / "out2", tmp_path)
    assert [code for code, _ in results] == [2, 2], results
    assert f"is in use by another run (host {socket.gethostname()}, pid {os.getpid()}" in (
        results[0][1])
    assert "process 0 could not use it" in results[1][1]
    assert all("Traceback" not in text for _, text in results)
    assert json.loads(lock.read_text()) == held
