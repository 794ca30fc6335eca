"""config.train.compilation_cache: a restart loads the train step instead of compiling it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm_jax.compile_cache import cache_directory, enable_compilation_cache
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.spec import parse

REPO = Path(__file__).resolve().parents[1]


def test_settings_name_the_cache_directory(tmp_path):
    assert cache_directory("", tmp_path) is None
    assert cache_directory("workdir", tmp_path) == tmp_path.absolute() / "compilation_cache"
    assert cache_directory(str(tmp_path / "shared"), "ignored") == tmp_path / "shared"
    cfg = load_config_file(REPO / "configs" / "tiny.py")
    assert parse(cfg, reads_data=False).train.compilation_cache == ""  # off by default
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"config\.train\.compilation_cache: cannot create"):
        enable_compilation_cache(str(tmp_path / "file" / "cache"), tmp_path)


def _train(workdir: Path, cache: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-m", "tinyllm_jax.main", "--config=configs/tiny.py",
         f"--workdir={workdir}", "--config.train.steps=1", "--config.train.eval_every=0",
         "--config.train.final_eval_split=", f"--config.train.compilation_cache={cache}"],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"persistent compilation cache: {cache}" in proc.stdout
    return float(re.search(r"train step compiled in ([\d.]+)s", proc.stdout).group(1))


@pytest.mark.slow  # two training processes: ~60 s idle, minutes under load
def test_a_second_start_loads_the_step_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = _train(tmp_path / "run1", cache)
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first run left nothing in the cache"
    second = _train(tmp_path / "run2", cache)  # a fresh workdir: nothing to resume
    assert second < first, (first, second)
    # The second start reused the entries; it wrote no new train-step program.
    assert sorted(p.name for p in cache.iterdir()) == entries
