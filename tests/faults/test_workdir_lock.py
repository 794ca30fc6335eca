"""Two runs on one workdir, through `python -m tinyllm_jax.main`.

The second run is refused at start-up (exit 2, naming the holder; the first
is paused meanwhile so it cannot finish first) without touching the first
one's files: the first completes with the uninterrupted
result and one metrics line per log step. A run killed outright leaves its
lock; the next run takes it over with a warning and resumes.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

from tests.faults import harness
from tinyllm_jax.dirlock import LOCK_NAME
from tinyllm_jax.metrics import read_jsonl


def _wait_for(predicate, run: harness.Run, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert run.proc.poll() is None, f"run ended before {what}:\n{run.tail()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout}s:\n{run.tail()}"
        time.sleep(harness.POLL_S)


def test_second_run_on_a_busy_workdir_is_refused_and_the_first_completes(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    env = harness.subprocess_env(compile_cache)
    workdir = tmp_path / "wd"
    first = harness.launch(workdir, tmp_path / "first.log", harness.train_args(workdir), env)
    _wait_for(lambda: first.last_logged_step() >= 2, first, "a first logged step")
    lock = json.loads((workdir / LOCK_NAME).read_text())
    assert (lock["host"], lock["pid"]) == (socket.gethostname(), first.proc.pid)

    # Paused, so the first run cannot finish (and free the workdir) before the
    # second one asks, however fast the machine; a stopped process is alive.
    first.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        second = harness.launch(workdir, tmp_path / "second.log", harness.train_args(workdir),
                                env)
        assert second.wait(timeout=120) == 2, second.tail()
        refused_after = time.monotonic() - t0
    finally:
        first.proc.send_signal(signal.SIGCONT)
    text = second.log()
    assert "Traceback" not in text, text
    assert (f"is in use by another run (host {socket.gethostname()}, pid {first.proc.pid}, "
            "since ") in text
    assert "training data" not in text, "the refused run read data before refusing"
    assert first.wait(timeout=300) == 0, first.tail()
    assert refused_after < 60

    # One run's records only: each log step once, in order.
    steps = [r["step"] for r in read_jsonl(workdir / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == list(range(2, harness.TOTAL_STEPS + 1, 2))
    assert json.loads((workdir / "summary.json").read_text())["status"] == "completed"
    assert harness.complete_steps(workdir) == [20, 24]
    assert harness.state_differences(reference / "checkpoints" / "24",
                                     workdir / "checkpoints" / "24") == []
    assert not (workdir / LOCK_NAME).exists()


def test_lock_of_a_killed_run_is_taken_over_and_the_next_run_resumes(
    compile_cache: Path, tmp_path: Path
) -> None:
    env = harness.subprocess_env(compile_cache)
    workdir = tmp_path / "wd"
    killed = harness.launch(workdir, tmp_path / "killed.log", harness.train_args(workdir), env)
    _wait_for(lambda: harness.newest_complete(workdir) == 4, killed, "checkpoint 4")
    killed.proc.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == killed.proc.pid
    start = harness.newest_complete(workdir)

    nxt = harness.launch(workdir, tmp_path / "next.log", harness.train_args(workdir), env)
    assert nxt.wait(timeout=300) == 0, nxt.tail()
    text = nxt.log()
    assert "taking over the stale lock" in text and (
        f"process {killed.proc.pid} no longer exists") in text, text[-3000:]
    assert nxt.resumed_step() == start
    assert not (workdir / LOCK_NAME).exists()
