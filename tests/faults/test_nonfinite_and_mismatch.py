"""Through `python -m tinyllm_jax.main`, on copies of the reference workdir:
non-finite steps under both policies, and a workdir of another configuration.

The NaN comes from a learning rate of 1e30 after resuming at step 24: step
25 is still finite but throws the parameters to ~1e30, so step 26's loss is
not. (The optimizer is not part of the run meta, so with the saved config.json
removed the resume is allowed.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from tests.faults import harness
from tinyllm_jax.metrics import read_jsonl

HUGE_LR = "--config.optimizer.lr=1e30"


def _copy(reference: Path, tmp_path: Path) -> Path:
    """The reference workdir without its saved config.json: these tests drive
    what lies behind that first check (a resume with another lr; the
    checkpoint's own run description and array layout), as for a workdir
    written before config.json existed. tests/test_run_config.py covers the
    saved-config refusal itself."""
    workdir = tmp_path / "wd"
    shutil.copytree(reference, workdir)
    (workdir / "config.json").unlink()
    return workdir


def _run(workdir: Path, log: Path, compile_cache: Path, *extra: str,
         steps: int = harness.TOTAL_STEPS) -> tuple[int, str]:
    run = harness.launch(workdir, log, harness.train_args(workdir, *extra, steps=steps),
                         harness.subprocess_env(compile_cache))
    return run.wait(timeout=300), run.log()


def test_nonfinite_stop_names_the_step_and_last_good_checkpoint(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    workdir = _copy(reference, tmp_path)
    before = harness.tree_of(workdir / "checkpoints")
    rc, log = _run(workdir, tmp_path / "run.log", compile_cache, HUGE_LR,
                   "--config.train.nonfinite=stop", steps=32)
    assert rc == 2, log[-3000:]
    assert "Traceback" not in log
    m = re.search(r"error: NonFiniteError: non-finite loss or gradients by step (\d+) "
                  r"\((\d+) update\(s\) skipped", log)
    assert m, log[-3000:]
    # Detected at the first log step after it happened (log_every=2), not later.
    assert int(m.group(1)) == 26 and int(m.group(2)) >= 1
    assert f"Last good checkpoint: {workdir / 'checkpoints' / '24'}." in log
    # Nothing was saved after the bad step; the good checkpoints are as they were.
    assert harness.tree_of(workdir / "checkpoints") == before


def test_nonfinite_skip_counts_and_keeps_parameters_finite(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    workdir = _copy(reference, tmp_path)
    rc, log = _run(workdir, tmp_path / "run.log", compile_cache, HUGE_LR,
                   "--config.train.nonfinite=skip", steps=28)
    assert rc == 0, log[-3000:]
    train = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["kind"] == "train"]
    last = max(train, key=lambda r: r["step"])
    # Steps 26, 27 and 28 see the parameters step 25 blew up: all skipped.
    assert last["step"] == 28 and last["nonfinite_total"] == 3
    state = harness.load_state(workdir / "checkpoints" / "28")
    assert int(state["/nonfinite"]) == 3 and int(state["/step"]) == 28
    for name, value in state.items():
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), name
    assert json.loads((workdir / "summary.json").read_text())["status"] == "completed"


def test_workdir_of_another_configuration_exits_2_listing_differences(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    """Another model size, teacher set and vocabulary at once: every
    difference is listed, and the checkpoints are left as they were."""
    workdir = _copy(reference, tmp_path)
    before = harness.tree_of(workdir / "checkpoints")
    args = harness.train_args(workdir, "--config.model.d_ff=96", "--config.model.vocab_size=640")
    args[args.index("--config=configs/tiny.py")] = "--config=configs/tiny.py:teachers=algebra"
    run = harness.launch(workdir, tmp_path / "run.log", args, harness.subprocess_env(compile_cache))
    assert run.wait(timeout=300) == 2, run.tail()
    log = run.log()
    assert "Traceback" not in log
    assert f"error: CheckpointMismatchError: {workdir / 'checkpoints' / '24'} was written by a " \
           "different configuration; refusing to restore it" in log
    for line in ("model.d_ff: checkpoint has 128, config has 96",
                 "model.vocab_size: checkpoint has 512, config has 640",
                 "teachers: checkpoint has ['algebra', 'verbal'], config has ['algebra']"):
        assert line in log, line
    assert harness.tree_of(workdir / "checkpoints") == before


def test_workdir_with_another_optimizer_is_refused(
    reference: Path, compile_cache: Path, tmp_path: Path
) -> None:
    """Same model, other optimizer state: the arrays that do not fit are listed
    (the run meta alone would let this through to an Orbax traceback)."""
    workdir = _copy(reference, tmp_path)
    rc, log = _run(workdir, tmp_path / "run.log", compile_cache,
                   "--config.optimizer.name=adafactor")
    assert rc == 2, log[-3000:]
    assert "Traceback" not in log
    assert "error: CheckpointMismatchError:" in log
    assert re.search(r"state opt_state/\S+: in the checkpoint, not in this configuration", log)
