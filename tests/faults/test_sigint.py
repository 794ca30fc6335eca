"""Ctrl-C (SIGINT) through `python -m tinyllm_jax.main`, as a terminal sends it.

- in the training loop: the current step is saved, one line, exit 130; the
  next run resumes there and ends bitwise equal to the uninterrupted run;
- twice: the second stops at once (exit 130), without a traceback, and the
  lock is released; the next run resumes from the newest complete step;
- during start-up: stops at once, exit 130, no checkpoint is written;
- during --mode=eval: stops, exit 130, no prediction file is written or changed.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

from tests.faults import harness
from tinyllm_jax.dirlock import LOCK_NAME

# From the signal to the exit: one step plus one checkpoint write on the
# tiny config, with room for a machine shared with other jobs.
SAVE_BOUND_S = 30.0
AT_ONCE_S = 10.0


def _interrupt_when(run: harness.Run, ready, signals: int = 1) -> float:
    """SIGINT `run` once `ready()` holds (`signals` times, 20 ms apart);
    seconds from the last signal to the exit."""
    deadline = time.monotonic() + 300
    while not ready():
        assert run.proc.poll() is None, f"run ended before SIGINT:\n{run.tail()}"
        assert time.monotonic() < deadline, run.tail()
        time.sleep(harness.POLL_S)
    for i in range(signals):
        if i:
            time.sleep(0.02)
        run.proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    run.wait(timeout=120)
    return time.monotonic() - sent


def _assert_clean(run: harness.Run, message: str) -> None:
    text = run.log()
    assert run.proc.returncode == 130, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    assert message in text, text[-3000:]


def test_sigint_in_the_loop_saves_the_current_step_and_the_resume_matches_reference(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    env = harness.subprocess_env(compile_cache)
    workdir = tmp_path / "wd"
    run = harness.launch(workdir, tmp_path / "int.log", harness.train_args(workdir), env)
    seconds = _interrupt_when(run, lambda: run.last_logged_step() >= 6)
    _assert_clean(run, "interrupted: training stopped by Ctrl-C at step ")
    assert seconds < SAVE_BOUND_S, f"exit took {seconds:.1f}s after SIGINT"
    summary = json.loads((workdir / "summary.json").read_text())
    stopped = summary["step"]
    assert summary["status"] == "interrupted" and 6 <= stopped < harness.TOTAL_STEPS
    assert harness.newest_complete(workdir) == stopped
    assert f"{workdir}/checkpoints/{stopped}" in run.log()
    assert not harness.tmp_dirs(workdir) and not (workdir / LOCK_NAME).exists()

    final = harness.launch(workdir, tmp_path / "final.log", harness.train_args(workdir), env)
    assert final.wait(timeout=300) == 0, final.tail()
    assert final.resumed_step() == stopped
    assert harness.state_differences(reference / "checkpoints" / "24",
                                     workdir / "checkpoints" / "24") == []


def test_second_sigint_stops_at_once_with_130(compile_cache: Path, tmp_path: Path) -> None:
    env = harness.subprocess_env(compile_cache)
    workdir = tmp_path / "wd"
    run = harness.launch(workdir, tmp_path / "twice.log",
                         harness.train_args(workdir, steps=400), env)
    seconds = _interrupt_when(run, lambda: run.last_logged_step() >= 6, signals=2)
    _assert_clean(run, "interrupted: second Ctrl-C, stopped at once")
    assert seconds < AT_ONCE_S, f"exit took {seconds:.1f}s after the second SIGINT"
    assert not (workdir / LOCK_NAME).exists()
    # The abort may come before the first Ctrl-C's save (or any periodic one)
    # completed: then there is no checkpoint and the next run starts afresh.
    newest = harness.newest_complete(workdir)
    resumed = harness.launch(workdir, tmp_path / "resume.log",
                             harness.train_args(workdir, steps=(newest or 0) + 2), env)
    assert resumed.wait(timeout=300) == 0, resumed.tail()
    assert resumed.resumed_step() == newest


def test_sigint_during_startup_stops_at_once_and_writes_no_checkpoint(
    compile_cache: Path, tmp_path: Path
) -> None:
    env = harness.subprocess_env(compile_cache)
    workdir = tmp_path / "wd"
    run = harness.launch(workdir, tmp_path / "start.log", harness.train_args(workdir), env)
    seconds = _interrupt_when(run, lambda: "training data:" in run.log())
    _assert_clean(run, "interrupted: stopped by Ctrl-C outside the training loop")
    assert seconds < AT_ONCE_S
    assert harness.complete_steps(workdir) == [] and not harness.tmp_dirs(workdir)
    assert not (workdir / "metrics.jsonl").exists() and not (workdir / LOCK_NAME).exists()


def test_sigint_during_eval_stops_and_writes_nothing(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "wd"
    shutil.copytree(reference, workdir)
    before = harness.tree_of(workdir)
    # The saved config with a bigger valid split (32 batches: time to interrupt).
    args = [*harness.train_args(workdir)[:3], f"--config=configs/workdir/saved.py:{workdir}",
            f"--workdir={workdir}", "--mode=eval", "--split=valid",
            "--config.data.synthetic.valid_size=512"]
    run = harness.launch(workdir, tmp_path / "eval.log", args,
                         harness.subprocess_env(compile_cache))
    seconds = _interrupt_when(run, lambda: "evaluating valid" in run.log())
    _assert_clean(run, "interrupted: evaluation stopped by Ctrl-C; nothing was written")
    assert seconds < AT_ONCE_S
    assert harness.tree_of(workdir) == before  # no predictions_valid.jsonl, nothing changed
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith(".")) == []
