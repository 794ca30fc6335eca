"""Experiment tracking beyond TensorBoard: Weights & Biases, and a profiler trace of chosen steps.

    writer = MetricWriter(workdir, sinks=metric_sinks(spec, workdir))  # + W&B when configured
    profiler = StepProfiler(spec.train.profile_steps, workdir)
    profiler.before(step + 1); state, m = step_fn(state, batch); step += 1
    profiler.after(step, state)

W&B is optional (`pip install 'tinyllm_jax[wandb]'`) and off until
`config.train.wandb.project` is set. Its files go under `<workdir>/wandb`, its
run id is kept in `<workdir>/wandb_run_id` so a resumed training continues the
same W&B run, and `mode` "offline" (or WANDB_MODE=offline) logs without a
network (`wandb sync <workdir>/wandb/offline-run-*` uploads later).

The trace (jax.profiler) covers `profile_steps` (e.g. "5-7"), from just before
the first to the end of the last (the state is waited for, so the work of
the traced steps is inside), into `<workdir>/profile`: open it with
TensorBoard's profile plugin or Perfetto (`plugins/profile/<time>/*.xplane.pb`).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any

import jax

from tinyllm_jax.atomic import write_text_atomic
from tinyllm_jax.run_config import config_dict
from tinyllm_jax.spec import RunSpec
from tinyllm_jax.spec.tracking import profile_range

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id"
PROFILE_DIR = "profile"


class WandbSink:
    """MetricWriter sink: each record as `<kind>/<name>` at its step."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def write(self, step: int, scalars: dict[str, float], kind: str) -> None:
        self.run.log({f"{kind}/{k}": float(v) for k, v in scalars.items()}, step=int(step))

    def close(self) -> None:
        self.run.finish()


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise ValueError("config.train.wandb.project is set but the wandb package is not "
                         "installed: pip install 'tinyllm_jax[wandb]' (or leave the project "
                         "empty)") from None
    return wandb


def _run_id(workdir: Path) -> str:
    path = workdir / RUN_ID_FILE
    if path.is_file() and (known := path.read_text(encoding="utf-8").strip()):
        return known
    new = secrets.token_hex(4)  # W&B ids are short [a-z0-9] strings
    write_text_atomic(path, new + "\n")
    return new


def metric_sinks(spec: RunSpec, workdir: str | os.PathLike) -> list[Any]:
    """The extra sinks the config asks for (process 0 only): [] or [WandbSink]."""
    settings = spec.train.wandb
    if not settings.project or jax.process_index() != 0:
        return []
    wandb = _import_wandb()
    workdir = Path(workdir)
    try:
        run = wandb.init(
            project=settings.project, name=settings.name or None,
            entity=settings.entity or None, mode=settings.mode or None, dir=str(workdir),
            id=_run_id(workdir), resume="allow", config=config_dict(spec),
        )
    except wandb.errors.Error as e:  # not logged in, no network, a bad entity: the user's to fix
        raise ValueError(f"W&B could not start a run for config.train.wandb "
                         f"(project {settings.project!r}): {e}; log in (wandb login) or set "
                         "--config.train.wandb.mode=offline") from e
    log.info("W&B run %s (%s) in %s", run.id, settings.mode or "WANDB_MODE/online", workdir)
    return [WandbSink(run)]


class StepProfiler:
    """A jax.profiler trace of the steps `profile_steps` names ("" = none)."""

    def __init__(self, profile_steps: str, workdir: str | os.PathLike) -> None:
        self.span = profile_range(profile_steps)
        self.directory = Path(workdir) / PROFILE_DIR
        self.active = False
        self.done = False
        self._annotation: Any = None

    def before(self, step: int) -> None:
        """Call with the number of the step about to run (1 for the first)."""
        if self.span is None or self.done:
            return
        if not self.active and self.span[0] <= step <= self.span[1]:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory))
            self.active = True
        if self.active:
            # Step markers in the trace viewer.
            self._annotation = jax.profiler.StepTraceAnnotation("train", step_num=step)
            self._annotation.__enter__()

    def after(self, step: int, state: Any) -> None:
        """Call after step `step` was dispatched, with the state it returned."""
        if not self.active:
            return
        self._annotation.__exit__(None, None, None)
        self._annotation = None
        if step >= self.span[1]:
            jax.block_until_ready(state)
            self._stop()
            if jax.process_index() == 0:
                print(f"profile of steps {self.span[0]}-{self.span[1]} written to "
                      f"{self.directory}", flush=True)

    def _stop(self) -> None:
        jax.profiler.stop_trace()
        self.active, self.done = False, True

    def close(self) -> None:
        """End a trace the run stopped inside of (preempted, an error)."""
        if self._annotation is not None:
            self._annotation.__exit__(None, None, None)
            self._annotation = None
        if self.active:
            self._stop()
            log.warning("the run stopped inside the profiled steps: the trace in %s ends early",
                        self.directory)
