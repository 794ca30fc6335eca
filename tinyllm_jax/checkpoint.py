"""Orbax checkpoints of the train state, the data-iterator position and a
description of the run (model shape, teachers, tokenizer), so a resume or
`--mode=eval` can refuse a workdir made by a different configuration instead
of restoring half of it.

Kept: the last `keep` checkpoints plus the best by validation accuracy.
Saves are asynchronous; `wait()` blocks until the last one is on disk.

Integrity: a step directory that Orbax finalised can still be damaged later
(a truncated copy, a deleted file, a disk error) or half-removed by a crash
while Orbax deleted an old step. `restore_intact` walks the steps from the
newest down, checks each one's files (cheap: metadata only) and then reads
it; a damaged step is named in a warning and the next older one is tried.
Training moves damaged steps newer than the one it resumes from to
`<workdir>/checkpoints_damaged/` (never deletes them), because it is about to
write those step numbers again. With no intact step at all the error lists
every problem and nothing on disk is changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from tinyllm_jax.atomic import write_json_atomic
from tinyllm_jax.models.t5_config import RUNTIME_MODEL_FIELDS, T5Config
from tinyllm_jax.orbax_echoes import collect_failed_reads, orbax_read_echo_filters

log = logging.getLogger(__name__)

BEST_FILE = "best.json"
ITEMS = ("state", "data", "meta")
DAMAGED_DIR = "checkpoints_damaged"


class CheckpointMismatchError(ValueError):
    """The workdir's checkpoint was made by a different configuration."""


class CheckpointCorruptError(ValueError):
    """Checkpoints exist but none of them is intact (ValueError: main.py turns
    it into `error: ...` and exit status 2)."""


class Restored(NamedTuple):
    step: int
    state: Any
    data: dict[str, Any]
    meta: dict[str, Any]
    damaged: list[tuple[int, str]]  # newer steps that were skipped, with the reason


def _json_problem(path: Path, what: str) -> str | None:
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
    # Orbax writes this first into the temporary directory; a finalised step
    # without it lost files after it was written.
    if p := _json_problem(step_dir / "_CHECKPOINT_METADATA", "checkpoint metadata"):
        problems.append(p)
    for item in ITEMS:
        if not (step_dir / item).is_dir():
            problems.append(f"item {item!r} is missing")
    for item in ("data", "meta"):
        if (step_dir / item).is_dir() and (
            p := _json_problem(step_dir / item / "metadata", f"item {item!r}")
        ):
            problems.append(p)
    state = step_dir / "state"
    if state.is_dir():
        if p := _json_problem(state / "_METADATA", "state tree metadata"):
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


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"params/encoder/...": shape} for every array leaf of a pytree."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = []
        for k in path:
            for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
                if hasattr(k, attr):
                    names.append(str(getattr(k, attr)))
                    break
        out["/".join(names)] = tuple(getattr(leaf, "shape", ()))
    return out


def _saved_leaves(state_dir: Path) -> dict[str, tuple[int, ...]]:
    """Array paths and global shapes of a saved state. Reads metadata only;
    `_METADATA`'s write_shape is a per-process shard, not the global shape."""
    handler = ocp.PyTreeCheckpointHandler()
    try:
        metadata = handler.metadata(epath.Path(state_dir))
    finally:
        handler.close()
    return _leaf_shapes(getattr(metadata, "tree", metadata))


def tree_differences(saved: dict[str, tuple[int, ...]], current: dict[str, tuple[int, ...]],
                     limit: int = 12) -> list[str]:
    """Arrays that a restore into `current` would not find, or find reshaped."""
    diffs = []
    for path in sorted(set(saved) | set(current)):
        if path not in current:
            diffs.append(f"state {path}: in the checkpoint, not in this configuration's state")
        elif path not in saved:
            diffs.append(f"state {path}: in this configuration's state, not in the checkpoint")
        elif saved[path] != current[path]:
            diffs.append(f"state {path}: checkpoint shape {saved[path]}, config shape {current[path]}")
    if len(diffs) > limit:
        diffs = [*diffs[:limit], f"... and {len(diffs) - limit} more"]
    return diffs


def run_meta(
    model: T5Config, *, teachers: tuple[str, ...], tokenizer: str, dataset: str, vocab: int
) -> dict[str, Any]:
    fields = dataclasses.asdict(model)
    for k in RUNTIME_MODEL_FIELDS:
        fields.pop(k)
    return {
        "model": fields, "teachers": list(teachers), "tokenizer": tokenizer,
        "dataset": dataset, "tokenizer_vocab_size": vocab,
    }


def meta_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{d}" for d in meta_differences(a, b)]
        elif a != b and not (isinstance(a, list | tuple) and list(a) == list(b or [])):
            diffs.append(f"{key}: checkpoint has {a!r}, config has {b!r}")
    return diffs


class Checkpointer:
    def __init__(
        self, workdir: str | os.PathLike, *, keep: int = 2, keep_best: bool = True,
        async_save: bool = True,
    ) -> None:
        self.directory = Path(workdir).absolute() / "checkpoints"
        policies: list[Any] = [ocp.checkpoint_managers.LatestN(n=max(int(keep), 1))]
        if keep_best:
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda m: m["val_accuracy"], reverse=False, n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            create=True,
            enable_async_checkpointing=async_save,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "meta")
        )

    # --- queries ---------------------------------------------------------------

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        path = self.directory / BEST_FILE
        if not path.exists():
            return None
        try:
            step = json.loads(path.read_text()).get("step")
        except (OSError, ValueError, AttributeError) as e:
            # best.json is a pointer, not data: a damaged one only loses the
            # preference for the best step.
            log.warning("%s is unreadable (%s); using the newest intact checkpoint", path, e)
            return None
        return step if step in self.all_steps() else None

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    # --- save / restore -------------------------------------------------------

    def save(
        self, step: int, state: Any, data_state: dict[str, Any], meta: dict[str, Any],
        metrics: dict[str, float] | None = None, force: bool = False,
    ) -> bool:
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            metrics=metrics,
            force=force,
        )
        if saved and metrics is not None and "val_accuracy" in metrics:
            self._update_best(step, float(metrics["val_accuracy"]))
        return saved

    def _update_best(self, step: int, accuracy: float) -> None:
        if jax.process_index() != 0:
            return
        path = self.directory / BEST_FILE
        best = json.loads(path.read_text()) if path.exists() else None
        if best is None or accuracy > best["val_accuracy"] or best["step"] not in self.all_steps():
            write_json_atomic(path, {"step": step, "val_accuracy": accuracy}, indent=None)

    def restore_meta(self, step: int) -> dict[str, Any]:
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore(
        self, step: int, abstract_state: Any, expected_meta: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(state, data_state, meta) at `step`, placed like `abstract_state`."""
        meta = self._check_fits(step, abstract_state, expected_meta)
        with orbax_read_echo_filters():
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                ),
            )
        return out["state"], dict(out["data"]), meta

    def _first_intact(
        self, read: Callable[[int], Any], *, prefer: int | None, before_read: Callable[[int], None],
    ) -> tuple[int, Any, list[tuple[int, str]]] | None:
        """(step, read(step), damaged) for the first step that passes the file
        check and reads back: `prefer` first, then newest to oldest.

        `before_read` runs checks that must stop the search instead of
        skipping the step (a checkpoint of another configuration)."""
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            return None
        if prefer in steps:
            steps.remove(prefer)
            steps.insert(0, prefer)
        damaged: list[tuple[int, str]] = []
        for step in steps:
            problems = step_problems(self.step_dir(step))
            if not problems:
                # Two tries: a passing I/O error (a network filesystem, a
                # bucket) must not send training back to an older step.
                for attempt in range(2):
                    with orbax_read_echo_filters():
                        try:
                            before_read(step)
                            return step, read(step), damaged
                        except CheckpointMismatchError:
                            raise
                        except Exception as e:  # tensorstore raises a bare Exception for a truncated file
                            problems = [f"cannot read it back: {_first_line(e)}"]
                        # The failed read's leftovers echo its error when
                        # collected: collect them while the filters hold.
                        collect_failed_reads()
                    if attempt == 0:
                        log.warning("reading %s failed (%s); trying once more",
                                    self.step_dir(step), problems[0])
            reason = "; ".join(problems)
            damaged.append((step, reason))
            log.warning("checkpoint %s is damaged and is skipped: %s", self.step_dir(step), reason)
        listing = "\n  ".join(f"{self.step_dir(s)}: {r}" for s, r in damaged)
        raise CheckpointCorruptError(
            f"no intact checkpoint in {self.directory}; every step is damaged:\n  {listing}\n"
            "Nothing was changed or deleted. Restore the files from a copy, or move the "
            "checkpoints directory aside (or use a new --workdir) to start from scratch."
        )

    def _check_fits(self, step: int, abstract_state: Any, expected_meta: dict[str, Any] | None,
                    ) -> dict[str, Any]:
        """The step's meta; CheckpointMismatchError when it belongs to another
        configuration (run meta, or the arrays the state holds)."""
        meta = self.restore_meta(step)
        where = self.step_dir(step)
        diffs = meta_differences(meta, expected_meta) if expected_meta is not None else []
        if abstract_state is not None and not diffs:
            # E.g. another optimizer: the model matches but the state does not.
            diffs = tree_differences(_saved_leaves(where / "state"), _leaf_shapes(abstract_state))
        if diffs:
            listing = "\n  ".join(diffs)
            raise CheckpointMismatchError(
                f"{where} was written by a different configuration; refusing to restore it:"
                f"\n  {listing}\nUse a new --workdir, or restore the configuration the "
                "checkpoint was made with."
            )
        return meta

    def restore_intact(
        self, abstract_state: Any, expected_meta: dict[str, Any] | None = None, *,
        prefer: int | None = None, move_damaged: bool = False,
    ) -> Restored | None:
        """The newest intact checkpoint (or `prefer` when it is intact), placed
        like `abstract_state`; None when there is none at all.

        Damaged steps are skipped with a warning; CheckpointCorruptError when
        every step is damaged (nothing is touched then). With `move_damaged`
        (training, which will write those step numbers again) skipped steps
        newer than the restored one are moved to `<workdir>/checkpoints_damaged/`.
        """
        fitting: dict[int, dict[str, Any]] = {}

        def check(step: int) -> None:
            fitting[step] = self._check_fits(step, abstract_state, expected_meta)

        def read(step: int) -> tuple[Any, dict[str, Any]]:
            out = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                ),
            )
            return out["state"], dict(out["data"])

        found = self._first_intact(read, prefer=prefer, before_read=check)
        if found is None:
            return None
        step, (state, data), damaged = found
        if move_damaged:
            self._move_aside([s for s, _ in damaged if s > step])
        return Restored(step, state, data, fitting[step], damaged)

    def restore_params_intact(self, abstract_params_of: Callable[[dict[str, Any]], Any],
                              prefer: int | None = None) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, params, meta) of the newest intact checkpoint (or `prefer`),
        for evaluation and export; `abstract_params_of(meta)` gives the target."""
        metas: dict[int, dict[str, Any]] = {}

        def check(step: int) -> None:
            metas[step] = self.restore_meta(step)

        found = self._first_intact(
            lambda s: self.restore_params(s, abstract_params_of(metas[s])), prefer=prefer,
            before_read=check,
        )
        if found is None:
            return None
        step, params, _ = found
        return step, params, metas[step]

    def _move_aside(self, steps: list[int]) -> None:
        """Move damaged steps out of Orbax's directory (kept for inspection):
        the resumed run saves those step numbers again."""
        if not steps:
            return
        if jax.process_index() == 0:
            target_root = self.directory.parent / DAMAGED_DIR
            target_root.mkdir(exist_ok=True)
            for step in steps:
                target, n = target_root / str(step), 1
                while target.exists():
                    target, n = target_root / f"{step}.{n}", n + 1
                os.replace(self.step_dir(step), target)
                log.warning("moved damaged checkpoint %s to %s", self.step_dir(step), target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("tinyllm_jax:move_damaged_checkpoints")
        self.manager.reload()

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the parameters (for evaluation and export)."""
        handler = ocp.PyTreeCheckpointer()
        path = self.directory / str(step) / "state"
        target = {"params": abstract_params}
        restored = handler.restore(
            path,
            args=ocp.args.PyTreeRestore(
                item=target,
                restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True,
            ),
        )
        return restored["params"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
