"""Metric sinks: JSONL log, TensorBoard events, final plot (console progress: progress.py).

Only process 0 writes. Every JSONL record is one complete line written with
a single `write` + flush + fsync, so a crash leaves at worst no line, never a
half one; `read_jsonl` skips (and reports) a torn last line anyway, for logs
written by other tools.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from tinyllm_jax.data.store import repair_partial_tail

log = logging.getLogger(__name__)


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    try:
        if os.path.exists(path):
            repair_partial_tail(path)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        # A failed write or fsync (a full disk) names no file: name it.
        raise type(e)(e.errno, e.strerror, os.fspath(path)) from e


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    out = []
    lines = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines, 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) and not line.endswith("\n"):
                log.warning("%s: ignoring torn last line %d", path, i)
                continue
            raise ValueError(f"{path}:{i}: not a JSON line: {line[:80]!r}") from None
    return out


class MetricWriter:
    """Scalars to `metrics.jsonl` and TensorBoard (`tb/`) under the workdir."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None,
                 sinks: Sequence[Any] = ()) -> None:
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        # More destinations (tracking.py: W&B), each with write(step, scalars, kind) and close().
        self.sinks = list(sinks)
        self.workdir = Path(workdir)
        self.path = self.workdir / "metrics.jsonl"
        self._tb = None
        if self.enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(self.workdir / "tb"))
            except ImportError:
                log.warning("tensorboardX is not installed: TensorBoard events are not written")

    def write(self, step: int, scalars: dict[str, float], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, "time": time.time()}
        record.update({k: float(v) for k, v in scalars.items()})
        append_jsonl(self.path, record)
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))
        for sink in self.sinks:
            sink.write(step, scalars, kind)

    def write_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text panel in TensorBoard (the resolved config at start)."""
        if self.enabled and self._tb is not None:
            # Markdown: indented by four spaces it shows as a code block.
            self._tb.add_text(tag, "    " + text.replace("\n", "\n    "), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        sinks, self.sinks = self.sinks, []  # closed once, also when called again after an error
        for sink in sinks:
            sink.close()


def plot_run(workdir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path | None:
    """PNG of per-task training losses and validation accuracy over steps."""
    workdir = Path(workdir)
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(path)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"].startswith("eval")]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    keys = sorted({k for r in train for k in r if k.startswith("loss/")})
    for k in keys:
        pts = [(r["step"], r[k]) for r in train if k in r]
        ax_loss.plot(*zip(*pts), label=k.removeprefix("loss/"))
    ax_loss.set(xlabel="step", ylabel="token cross-entropy", title="training loss per task")
    ax_loss.set_yscale("log")
    if keys:
        ax_loss.legend()
    for kind in sorted({r["kind"] for r in evals}):
        pts = [(r["step"], r["accuracy"]) for r in evals if r["kind"] == kind and "accuracy" in r]
        if pts:
            ax_acc.plot(*zip(*pts), marker="o", label=kind.removeprefix("eval/"))
    ax_acc.set(xlabel="step", ylabel="exact-match accuracy", title="evaluation accuracy")
    if evals:
        ax_acc.legend()
    fig.tight_layout()
    out = Path(out) if out else workdir / "training.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
