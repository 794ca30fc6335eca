"""Orbax checkpoints of the train state, the data-iterator position and a
description of the run (model shape, teachers, tokenizer), so a resume or
`--mode=eval` can refuse a workdir made by a different configuration instead
of restoring half of it.

Kept: the last `keep` checkpoints plus the best by validation accuracy.
Saves are asynchronous; `wait()` blocks until the last one is on disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from tinyllm_jax.models.t5 import T5Config

log = logging.getLogger(__name__)

BEST_FILE = "best.json"


class CheckpointMismatchError(ValueError):
    """The workdir's checkpoint was made by a different configuration."""


def run_meta(
    model: T5Config, *, teachers: tuple[str, ...], tokenizer: str, dataset: str, vocab: int
) -> dict[str, Any]:
    fields = dataclasses.asdict(model)
    # Runtime choices that do not change the parameters.
    for k in ("dtype", "remat", "scan_layers", "dropout_rate"):
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
        step = json.loads(path.read_text()).get("step")
        return step if step in self.all_steps() else None

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
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": step, "val_accuracy": accuracy}))
            os.replace(tmp, path)

    def restore_meta(self, step: int) -> dict[str, Any]:
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"])

    def restore(
        self, step: int, abstract_state: Any, expected_meta: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(state, data_state, meta) at `step`, placed like `abstract_state`."""
        meta = self.restore_meta(step)
        if expected_meta is not None:
            diffs = meta_differences(meta, expected_meta)
            if diffs:
                listing = "\n  ".join(diffs)
                raise CheckpointMismatchError(
                    f"{self.directory / str(step)} was written by a different configuration; "
                    f"refusing to restore it:\n  {listing}\nUse a new --workdir, or restore the "
                    "configuration the checkpoint was made with."
                )
        out = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
            ),
        )
        return out["state"], dict(out["data"]), meta

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


def load_student_from_workdir(
    workdir: str | os.PathLike, tokenizer: Any = None, which: str = "best"
) -> Any:
    """A `Student` from a training workdir's best (or latest) checkpoint."""
    from tinyllm_jax.models.t5 import abstract_params
    from tinyllm_jax.student import Student
    from tinyllm_jax.tokenizers import load_tokenizer

    ckpt = Checkpointer(workdir, async_save=False)
    try:
        step = ckpt.best_step() if which == "best" else None
        step = step if step is not None else ckpt.latest_step()
        if step is None:
            raise FileNotFoundError(f"{ckpt.directory}: no checkpoint to load")
        meta = ckpt.restore_meta(step)
        config = T5Config(**meta["model"])
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
            __import__("flax").linen.meta.unbox(abstract_params(config)),
        )
        params = ckpt.restore_params(step, abstract)
    finally:
        ckpt.close()
    if tokenizer is None:
        tokenizer = load_tokenizer(meta["tokenizer"])
    return Student(config, params, tokenizer)
