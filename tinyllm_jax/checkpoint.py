"""Orbax checkpoints of the train state, the data-iterator position, a
description of the run (model shape, teachers, tokenizer), so a resume or
`--mode=eval` can refuse a workdir made by a different configuration instead
of restoring half of it, and a checksum of every array of the state
(`array_checksums`), so damaged array bytes that read back without an error
are caught.

Kept: the last `keep` checkpoints plus the best by validation accuracy.
Saves are asynchronous; `wait()` blocks until the last one is on disk.

Integrity: a step directory that Orbax finalised can still be damaged later
(a truncated copy, a deleted file, a disk error) or half-removed by a crash
while Orbax deleted an old step. `restore_intact` walks the steps from the
newest down, checks each one's files (cheap: metadata only) and its data
item, then reads it and compares its arrays with their checksums; a damaged
step is named in a warning and the next older one is tried. Steps written
before checksums were recorded have no `checksums` item: they are used
unverified, with a warning.
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

from tinyllm_jax import array_checksums
from tinyllm_jax.atomic import write_json_atomic
from tinyllm_jax.checkpoint_files import CHECKSUMS, ITEMS, step_problems
from tinyllm_jax.checkpoint_layout import placed_like, saved_target
from tinyllm_jax.data.iterator import state_problems
from tinyllm_jax.models.t5_config import RUNTIME_MODEL_FIELDS, T5Config
from tinyllm_jax.orbax_echoes import collect_failed_reads, orbax_read_echo_filters

log = logging.getLogger(__name__)

BEST_FILE = "best.json"
DAMAGED_DIR = "checkpoints_damaged"


class CheckpointMismatchError(ValueError):
    """The workdir's checkpoint was made by a different configuration."""


class CheckpointCorruptError(ValueError):
    """Checkpoints exist but none of them is intact (ValueError: main.py turns
    it into `error: ...` and exit status 2)."""


class ChecksumMismatchError(ValueError):
    """Arrays read back differ from the checksums saved with them (retried
    once, then the step counts as damaged)."""


class StepContentError(ValueError):
    """A step's JSON item holds something its reader cannot use, e.g. a
    negative iterator position: damage, found without reading the arrays."""


class Restored(NamedTuple):
    step: int
    state: Any
    data: dict[str, Any]
    meta: dict[str, Any]
    damaged: list[tuple[int, str]]  # newer steps that were skipped, with the reason
    unverified: bool = False  # written before checksums were recorded


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"params/encoder/...": shape} for every array leaf of a pytree."""
    return {name: tuple(getattr(leaf, "shape", ())) for name, leaf in
            array_checksums.named_leaves(tree)}


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


def _meta_problems(meta: dict[str, Any]) -> list[str]:
    """Why a run description cannot rebuild the model and tokenizer ([] = it can)."""
    problems = []
    if not isinstance(meta.get("model"), dict):
        problems.append(f"'model' is {meta.get('model')!r}, not an object of T5Config fields")
    if not isinstance(meta.get("tokenizer"), str):
        problems.append(f"'tokenizer' is {meta.get('tokenizer')!r}, not a tokenizer name")
    return problems


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
            self.directory, options=options, item_names=(*ITEMS, CHECKSUMS)
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
        if not (force or self.manager.should_save(step)):
            return False
        # Computed from the arrays being saved, on their devices: the write
        # and anything that damages the files later are what a restore checks.
        checksums = array_checksums.checksum_record(state)
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
                **{CHECKSUMS: ocp.args.JsonSave(checksums)},
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

    def restore_data(self, step: int) -> dict[str, Any]:
        """The step's data-iterator position; StepContentError when it is not one."""
        out = self.manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        data = dict(out["data"])
        if problems := state_problems(data):
            raise StepContentError(f"item 'data' ({self.step_dir(step) / 'data' / 'metadata'}) "
                                   f"is not an iterator position: {'; '.join(problems)}")
        return data

    def checksums(self, step: int) -> dict[str, Any] | None:
        """The step's array checksums; None for a step written before they
        were recorded (step_problems has checked the item when it exists)."""
        if not (self.step_dir(step) / CHECKSUMS).is_dir():
            return None
        out = self.manager.restore(
            step, args=ocp.args.Composite(**{CHECKSUMS: ocp.args.JsonRestore()}))
        return dict(out[CHECKSUMS])

    def verify(self, step: int, tree: Any, record: dict[str, Any] | None) -> bool:
        """Compare restored arrays (all of the state, or a part such as
        {"params": ...}) with the step's checksums: ChecksumMismatchError
        naming the arrays that differ; False when nothing could be compared."""
        where = self.step_dir(step)
        if record is None:
            log.warning("checkpoint %s has no array checksums (it was written before they were "
                        "recorded): its arrays are used unverified", where)
            return False
        problems, unverified = array_checksums.mismatches(record, tree)
        if problems:
            raise ChecksumMismatchError("; ".join(problems))
        if unverified:
            log.warning("checkpoint %s: %d arrays were restored into another dtype than saved "
                        "and are not verified (%s, ...)", where, len(unverified), unverified[0])
        return not unverified

    def restore(
        self, step: int, abstract_state: Any, expected_meta: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(state, data_state, meta) at `step`, placed like `abstract_state`
        and verified against its checksums."""
        meta = self._check_fits(step, abstract_state, expected_meta)
        data = self.restore_data(step)
        record = self.checksums(step)
        try:
            with orbax_read_echo_filters():
                state, _ = self._read_state(step, abstract_state, record)
        except ChecksumMismatchError as e:
            raise ChecksumMismatchError(f"{self.step_dir(step)} is damaged: {e}") from None
        return state, data, meta

    def _read_state(self, step: int, abstract_state: Any, record: dict[str, Any] | None
                    ) -> tuple[Any, bool]:
        """(state placed like `abstract_state`, verified): read in the layer
        layout it was saved in, checked against its checksums, then converted
        (checkpoint_layout.py) when `abstract_state` asks for the other one."""
        target = saved_target(_saved_leaves(self.step_dir(step) / "state"), abstract_state)
        out = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        verified = self.verify(step, out["state"], record)
        return placed_like(out["state"], abstract_state), verified

    def _first_intact(
        self, read: Callable[[int], Any], *, prefer: int | None, before_read: Callable[[int], None],
    ) -> tuple[int, Any, list[tuple[int, str]]] | None:
        """(step, read(step), damaged) for the first step that passes the file
        check and reads back: `prefer` first, then newest to oldest.

        `before_read` runs checks that must stop the search instead of
        skipping the step (a checkpoint of another configuration), and
        checks of the JSON items (StepContentError: damaged, not retried)."""
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            return None
        if prefer in steps:
            steps.remove(prefer)
            steps.insert(0, prefer)
        damaged: list[tuple[int, str]] = []
        for step in steps:
            problems = step_problems(self.step_dir(step))
            # Two tries: a passing I/O error (a network filesystem, a bucket)
            # must not send training back to an older step.
            for attempt in range(0 if problems else 2):
                with orbax_read_echo_filters():
                    try:
                        before_read(step)
                        return step, read(step), damaged
                    except CheckpointMismatchError:
                        raise
                    except StepContentError as e:
                        problems = [str(e)]
                        break
                    except ChecksumMismatchError as e:
                        problems = [str(e)]
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
            # The other layer layout is no difference: the restore converts it.
            saved = _saved_leaves(where / "state")
            diffs = tree_differences(saved, _leaf_shapes(saved_target(saved, abstract_state)))
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

        Damaged steps (files, data item, array checksums) are skipped with a
        warning; CheckpointCorruptError when every step is damaged (nothing is
        touched then). With `move_damaged` (training, which will write those
        step numbers again) skipped steps newer than the restored one are
        moved to `<workdir>/checkpoints_damaged/`.
        """
        found_items: dict[int, tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]] = {}

        def check(step: int) -> None:
            meta = self._check_fits(step, abstract_state, expected_meta)
            found_items[step] = (meta, self.restore_data(step), self.checksums(step))

        def read(step: int) -> tuple[Any, bool]:
            return self._read_state(step, abstract_state, found_items[step][2])

        found = self._first_intact(read, prefer=prefer, before_read=check)
        if found is None:
            return None
        step, (state, verified), damaged = found
        if move_damaged:
            self._move_aside([s for s, _ in damaged if s > step])
        meta, data, _ = found_items[step]
        return Restored(step, state, data, meta, damaged, unverified=not verified)

    def last_intact_step(self, abstract_state: Any,
                         expected_meta: dict[str, Any] | None = None) -> int | None:
        """The newest step that reads back intact and matches its checksums
        right now (for messages that name a good checkpoint); None if none.
        Reads a whole state: it holds a second copy in memory meanwhile."""
        try:
            found = self.restore_intact(abstract_state, expected_meta)
        except (CheckpointCorruptError, CheckpointMismatchError):
            return None
        return None if found is None else found.step

    def restore_params_intact(self, abstract_params_of: Callable[[dict[str, Any]], Any],
                              prefer: int | None = None) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, params, meta) of the newest intact checkpoint (or `prefer`),
        for evaluation and export; `abstract_params_of(meta)` gives the target.
        The parameters are verified against the step's checksums."""
        found_items: dict[int, tuple[dict[str, Any], dict[str, Any] | None]] = {}

        def check(step: int) -> None:
            meta = self.restore_meta(step)
            if problems := _meta_problems(meta):
                raise StepContentError(f"item 'meta' ({self.step_dir(step) / 'meta' / 'metadata'})"
                                       f" is not a run description: {'; '.join(problems)}")
            found_items[step] = (meta, self.checksums(step))

        def read(step: int) -> Any:
            meta, record = found_items[step]
            wanted = abstract_params_of(meta)
            params = self._read_params(step, wanted)
            self.verify(step, {"params": params}, record)
            return placed_like(params, wanted)

        found = self._first_intact(read, prefer=prefer, before_read=check)
        if found is None:
            return None
        step, params, _ = found
        return step, params, found_items[step][0]

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
        """Only the parameters (for evaluation and export), in the layer layout
        of `abstract_params`, unverified: see `restore_params_intact`."""
        return placed_like(self._read_params(step, abstract_params), abstract_params)

    def _read_params(self, step: int, abstract_params: Any) -> Any:
        """The parameters in the layer layout they were saved in."""
        handler = ocp.PyTreeCheckpointer()
        path = self.directory / str(step) / "state"
        saved = [n.removeprefix("params/") for n in _saved_leaves(path) if n.startswith("params/")]
        target = {"params": saved_target(saved, abstract_params)}
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
