"""Shared by the fault tests: one uninterrupted reference run of the tiny
config (24 steps, checkpoints every 4) and a compile cache for the runs that
are killed, so each of them starts in seconds instead of recompiling."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import harness


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jax_compile_cache")


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, compile_cache: Path) -> Path:
    """Workdir of an uninterrupted run; checkpoints 20 and 24 are kept."""
    root = tmp_path_factory.mktemp("reference")
    workdir = root / "wd"
    run = harness.launch(workdir, root / "run.log", harness.train_args(workdir),
                         harness.subprocess_env(compile_cache))
    rc = run.wait(timeout=600)
    assert rc == 0, run.tail()
    assert harness.complete_steps(workdir) == [20, 24], run.tail()
    return workdir
