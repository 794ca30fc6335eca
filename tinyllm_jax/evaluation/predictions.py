"""The per-example predictions file of an evaluated split."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import jax

from tinyllm_jax.atomic import write_jsonl_atomic


def write_predictions(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line, replaced atomically; written by process 0
    only, since every host holds the same rows."""
    if jax.process_index() != 0:
        return
    write_jsonl_atomic(path, rows)
