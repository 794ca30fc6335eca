"""SIGTERM to one host of two: both save the same step and exit 0, and the
resumed run ends bit-identical to one that was never interrupted.

Real processes: a 2-process loopback cluster (gloo collectives, one CPU
device each) running train_and_evaluate (tests/helpers/multihost_preempt.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "multihost_preempt.py"
STEPS = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(name: str, workdir: Path, out: Path, tmp: Path) -> list[tuple[subprocess.Popen, Path]]:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = []
    for pid in range(2):
        log = tmp / f"{name}_{pid}.log"
        cmd = [sys.executable, str(HELPER), f"--workdir={workdir}", f"--out={out}",
               f"--coordinator={coordinator}", f"--process_id={pid}", f"--steps={STEPS}"]
        with open(log, "w") as f:
            procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f,
                                           stderr=subprocess.STDOUT), log))
    return procs


def _wait(procs: list[tuple[subprocess.Popen, Path]], what: str) -> list[int]:
    try:
        return [p.wait(timeout=900) for p, _ in procs]
    except subprocess.TimeoutExpired:
        for p, _ in procs:
            p.kill()
        logs = "\n".join(f"--- {log.name}:\n{log.read_text()[-3000:]}" for _, log in procs)
        pytest.fail(f"{what} timed out\n{logs}")


def _train_steps_logged(workdir: Path) -> int:
    metrics = workdir / "metrics.jsonl"
    if not metrics.exists():
        return 0
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return sum(r.get("kind") == "train" for r in rows)


def _params(workdir: Path) -> dict[str, np.ndarray]:
    """The newest checkpoint's parameters, restored onto this process's one device."""
    import jax

    from tinyllm_jax import Student

    params = Student.from_workdir(workdir, which="latest").params
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(params)}


@pytest.mark.slow  # three 2-process training runs: ~1-2 min idle, several under load
def test_sigterm_to_one_host_stops_both_at_the_same_step(tmp_path):
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    outs = {n: tmp_path / f"out_{n}" for n in ("stopped", "resumed", "straight")}
    for d in outs.values():
        d.mkdir()
    # The uninterrupted reference runs alongside the interrupted one.
    reference = _start("straight", straight, outs["straight"], tmp_path)
    run = _start("stopped", stopped, outs["stopped"], tmp_path)
    deadline = time.time() + 900
    while _train_steps_logged(stopped) < 2:  # the loop is running: both hosts stepped
        assert time.time() < deadline and all(p.poll() is None for p, _ in run), \
            [log.read_text()[-2000:] for _, log in run]
        time.sleep(0.2)
    run[1][0].send_signal(signal.SIGTERM)  # process 1 only
    codes = _wait(run, "the signalled run")
    assert codes == [0, 0], [log.read_text()[-3000:] for _, log in run]
    summaries = [json.loads((outs["stopped"] / f"summary_{i}.json").read_text()) for i in (0, 1)]
    assert [s["status"] for s in summaries] == ["preempted", "preempted"]
    step = summaries[0]["step"]
    assert summaries[1]["step"] == step and 2 <= step < STEPS
    assert (stopped / "checkpoints" / str(step)).is_dir()
    assert "were asked to stop: saving step" in run[0][1].read_text()  # process 0 followed

    resumed = _start("resumed", stopped, outs["resumed"], tmp_path)
    assert _wait(resumed, "the resumed run") == [0, 0]
    assert _wait(reference, "the uninterrupted run") == [0, 0]
    for out in (outs["resumed"], outs["straight"]):
        assert json.loads((out / "summary_0.json").read_text()) == {"status": "completed",
                                                                    "step": STEPS}
    a, b = _params(straight), _params(stopped)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
