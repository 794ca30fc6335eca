"""What a finalised checkpoint step directory must hold, checked from its
metadata files and file sizes alone (never the arrays), so that a damaged
step is found before anything is read into memory.

A step holds the items `state` (Orbax's array store), `data` and `meta`
(JSON) and, since per-array checksums were added, `checksums` (JSON, see
`array_checksums`). A step written before that has no `checksums` item and
is accepted; one whose `_CHECKPOINT_METADATA` lists the item must have it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tinyllm_jax import array_checksums

ITEMS = ("state", "data", "meta")
CHECKSUMS = "checksums"


def json_problem(path: Path, what: str) -> str | None:
    """Why `path` is not a readable JSON object, or None when it is."""
    if not path.is_file():
        return f"{what} ({path.name}) is missing"
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return f"{what} ({path.name}) is unreadable: {e}"
    if not isinstance(value, dict):
        return f"{what} ({path.name}) holds a JSON {type(value).__name__}, not an object"
    return None


def step_problems(step_dir: str | os.PathLike) -> list[str]:
    """What is missing or damaged in one finalised step directory ([] = looks
    intact). Reads only metadata files and file sizes, never the arrays: a
    truncated array file is caught when the restore reads it."""
    step_dir = Path(step_dir)
    if not step_dir.is_dir():
        return ["the step directory is missing"]
    problems = []
    items = list(ITEMS)
    # Orbax writes this first into the temporary directory; a finalised step
    # without it lost files after it was written.
    if p := json_problem(step_dir / "_CHECKPOINT_METADATA", "checkpoint metadata"):
        problems.append(p)
    listed = not p and CHECKSUMS in (
        json.loads((step_dir / "_CHECKPOINT_METADATA").read_bytes()).get("item_handlers") or {})
    if listed or (step_dir / CHECKSUMS).is_dir():
        items.append(CHECKSUMS)
    for item in items:
        if not (step_dir / item).is_dir():
            problems.append(f"item {item!r} is missing")
    for item in ("data", "meta", CHECKSUMS):
        if item in items and (step_dir / item).is_dir() and (
            p := json_problem(step_dir / item / "metadata", f"item {item!r}")
        ):
            problems.append(p)
    if CHECKSUMS in items and not any(p.startswith(f"item {CHECKSUMS!r}") for p in problems):
        record = json.loads((step_dir / CHECKSUMS / "metadata").read_bytes())
        problems += [f"item {CHECKSUMS!r} ({CHECKSUMS}/metadata): {p}"
                     for p in array_checksums.record_problems(record)]
    state = step_dir / "state"
    if state.is_dir():
        if p := json_problem(state / "_METADATA", "state tree metadata"):
            problems.append(p)
        elif "tree_metadata" not in json.loads((state / "_METADATA").read_bytes()):
            problems.append("state tree metadata (_METADATA) has no tree_metadata")
        if not (state / "manifest.ocdbt").is_file():
            problems.append("state array index (manifest.ocdbt) is missing")
        # Array stores and their manifests are never empty when written; an
        # empty one is a truncated copy.
        for f in sorted(state.rglob("*")):
            if f.is_file() and f.stat().st_size == 0 and (
                f.name.startswith("manifest") or f.parent.name == "d"
            ):
                problems.append(f"{f.relative_to(step_dir)} is empty (truncated)")
    return problems
