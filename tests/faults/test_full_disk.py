"""A disk that fills up during training, through `python -m tinyllm_jax.main`.

The full disk is RLIMIT_FSIZE (what `ulimit -f` or a quota does: a write
past the limit fails with EFBIG), set in the child only. The run resumes
from step 8, its next checkpoint write fails: exit 2 with one `error:` line
naming the file and what to do, no traceback from Orbax's or tensorboardX's
threads, the committed checkpoints and the metrics log untouched, no lock
left; with space again, the next run resumes from step 8 and completes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.faults import harness
from tinyllm_jax.dirlock import LOCK_NAME

# Above the lock, metrics and JSON files, below one checkpoint's array file.
LIMIT_BYTES = 300_000
LIMITED = ("import resource, runpy, sys; "
           f"resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT_BYTES}, {LIMIT_BYTES})); "
           "sys.argv = ['tinyllm_jax.main', *sys.argv[1:]]; "
           "runpy.run_module('tinyllm_jax.main', run_name='__main__')")


def test_full_disk_during_a_checkpoint_write_is_one_line_and_loses_nothing(
    compile_cache: Path, tmp_path: Path
) -> None:
    env = harness.subprocess_env(compile_cache)
    workdir = tmp_path / "wd"
    first = harness.launch(workdir, tmp_path / "first.log",
                           harness.train_args(workdir, steps=8), env)
    assert first.wait(timeout=300) == 0, first.tail()
    assert harness.complete_steps(workdir) == [4, 8]
    before = {name: harness.tree_of(workdir / "checkpoints" / name) for name in ("4", "8")}
    metrics_before = (workdir / "metrics.jsonl").read_bytes()

    args = harness.train_args(workdir, steps=16)
    full = harness.launch(workdir, tmp_path / "full.log",
                          [sys.executable, "-c", LIMITED, *args[3:]], env)
    assert full.wait(timeout=300) == 2, full.tail()
    text = full.log()
    assert "Traceback" not in text, text[-4000:]
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, errors
    assert "File too large" in errors[0] and "raise the limit" in errors[0]
    assert str(workdir / "checkpoints") in errors[0]
    assert full.resumed_step() == 8
    for name, files in before.items():
        assert harness.tree_of(workdir / "checkpoints" / name) == files
    assert (workdir / "metrics.jsonl").read_bytes().startswith(metrics_before)
    assert not (workdir / LOCK_NAME).exists()

    again = harness.launch(workdir, tmp_path / "again.log", args, env)
    assert again.wait(timeout=300) == 0, again.tail()
    assert again.resumed_step() == 8
    assert json.loads((workdir / "summary.json").read_text())["step"] == 16
