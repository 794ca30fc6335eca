"""The persistent XLA compilation cache, from `config.train.compilation_cache`.

    ""         off (the default)
    "workdir"  <workdir>/compilation_cache: a restart or resume of the same
               run skips compiling the train step and the eval programs
    any path   that directory, e.g. one shared by every run of a project on
               this host (executables are keyed by program, shapes, compiler
               version and flags, so runs that differ only in data share them)

Off by default because a cache holds executables that JAX loads and runs
without checking who wrote them: a shared directory must be trusted (JAX's
own warning), and an unbounded one grows with every shape ever compiled.
It must be set before the first compile it should serve; setting it later
in a process works too, since JAX reads the directory at first use.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

WORKDIR = "workdir"
SUBDIR = "compilation_cache"


def cache_directory(setting: str, workdir: str | os.PathLike) -> Path | None:
    """Where `setting` puts the cache for a run in `workdir` (None: off)."""
    if not setting:
        return None
    if setting == WORKDIR:
        return Path(workdir).absolute() / SUBDIR
    return Path(setting).expanduser().absolute()


def enable_compilation_cache(setting: str, workdir: str | os.PathLike) -> Path | None:
    """Point JAX's persistent cache at `setting`'s directory; returns it (None: off)."""
    path = cache_directory(setting, workdir)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"config.train.compilation_cache: cannot create {path} "
                         f"({e.strerror or e}); use a writable directory or '' (off)") from e
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache every program, however quick: the eval programs add up at start-up.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path
