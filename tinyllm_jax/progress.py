"""Progress of a long loop (training, evaluation, teacher generation), with rate and ETA.

    with Progress(total=1000, initial=0, unit="step", desc="train") as bar:
        for step in ...:
            bar.update(to=step, text="loss 1.23")
    echo("step 4: valid accuracy ...")   # never breaks an active bar

On a terminal this is a tqdm bar. Elsewhere (SLURM and gcloud logs, a pipe)
tqdm's carriage returns would make one endless line, so the fallback is a
plain line now and then, each with the position, the rate and the ETA:

    train 40/100 step (40%) 3.20 step/s elapsed 0:00:12 ETA 0:00:19 | loss 1.23

Plain lines come at most every `interval_s` seconds (default 30, or the
TINYLLM_PROGRESS_INTERVAL_S environment variable; 0 = every update) plus one
at the end, and a loop that ends before the first interval prints nothing:
a short evaluation inside training adds no noise to the log.

While a bar is shown, `echo` and the `logging` records of the program go
through `tqdm.write`, which prints above the bar instead of through it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from typing import IO, Any

from absl import logging as absl_logging
from tqdm import tqdm

INTERVAL_ENV = "TINYLLM_PROGRESS_INTERVAL_S"
_ACTIVE: list[Progress] = []  # bars being shown, innermost last


def process_index() -> int:
    """JAX's process index, without importing JAX: teacher generation (torch,
    vLLM) never does, and a program that has not is one process to JAX."""
    jax = sys.modules.get("jax")
    return int(jax.process_index()) if jax is not None else 0


def default_interval() -> float:
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else 30.0
    except ValueError:
        logging.getLogger(__name__).warning("%s=%r is not a number of seconds; using 30",
                                            INTERVAL_ENV, raw)
        return 30.0
    return max(value, 0.0)


def duration_text(seconds: float) -> str:
    """H:MM:SS; "?" for an unknown (infinite or NaN) duration."""
    if not math.isfinite(seconds):
        return "?"
    s = round(max(seconds, 0.0))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def rate_text(rate: float, unit: str) -> str:
    if rate >= 1 or rate == 0:
        return f"{rate:.2f} {unit}/s"
    return f"{1 / rate:.2f} s/{unit}"


def status_line(desc: str, done: int, total: int | None, unit: str, elapsed: float,
                counted: int) -> str:
    """`desc done/total unit (p%) rate elapsed ETA`; the rate is over the
    `counted` units done in `elapsed` seconds by this process."""
    rate = counted / elapsed if elapsed > 0 else 0.0
    head = f"{desc} " if desc else ""
    if total:
        left = (total - done) / rate if rate > 0 else math.inf
        return (f"{head}{done}/{total} {unit} ({100 * done / total:.0f}%) {rate_text(rate, unit)} "
                f"elapsed {duration_text(elapsed)} ETA {duration_text(left)}")
    return f"{head}{done} {unit} {rate_text(rate, unit)} elapsed {duration_text(elapsed)}"


def echo(message: str, file: IO[str] | None = None) -> None:
    """Print a line without breaking an active bar (tqdm.write then)."""
    if _ACTIVE:
        tqdm.write(message, file=file or sys.stdout)
        return
    print(message, file=file or sys.stdout, flush=True)


class Progress:
    """A bar on a terminal, plain rate/ETA lines elsewhere; process 0 only.

    `stream` (default stderr) is where both go; `terminal` overrides the
    isatty() test (tests); `interval_s` as described in the module docstring.
    """

    def __init__(self, total: int | None, *, initial: int = 0, unit: str = "it", desc: str = "",
                 enabled: bool = True, stream: IO[str] | None = None,
                 terminal: bool | None = None, interval_s: float | None = None,
                 leave: bool = True) -> None:
        self.total, self.unit, self.desc = total, unit, desc
        self.enabled = enabled and process_index() == 0
        self.stream = stream or sys.stderr
        self.interval_s = default_interval() if interval_s is None else interval_s
        self.position = self._start = initial
        self.text = ""
        self._t0 = self._last_line = time.perf_counter()
        self._lines = 0
        self._printed_at = -1  # the position of the last plain line
        self._bar: Any = None
        self._redirect: Any = None
        is_tty = terminal if terminal is not None else _isatty(self.stream)
        if self.enabled and is_tty:
            self._bar = tqdm(total=total, initial=initial, unit=unit, desc=desc or None,
                             file=self.stream, dynamic_ncols=True, leave=leave,
                             position=len(_ACTIVE))
            if not _ACTIVE:  # the outermost bar routes the program's log records
                self._redirect = _redirect_console_logging()
            _ACTIVE.append(self)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1, *, to: int | None = None, text: str | None = None) -> None:
        """Advance by `n` (or to position `to`); `text` is shown after the numbers."""
        new = self.position + n if to is None else to
        if text is not None:
            self.text = text
        if not self.enabled:
            self.position = new
            return
        if self._bar is not None:
            self._bar.update(new - self.position)
            if text is not None:
                self._bar.set_postfix_str(text)
            self.position = new
            return
        self.position = new
        now = time.perf_counter()
        if now - self._last_line >= self.interval_s:
            self._line(now)

    def line(self) -> str:
        """The plain status line as of now."""
        elapsed = time.perf_counter() - self._t0
        status = status_line(self.desc, self.position, self.total, self.unit, elapsed,
                             self.position - self._start)
        return f"{status} | {self.text}" if self.text else status

    def _line(self, now: float) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last_line, self._lines, self._printed_at = now, self._lines + 1, self.position

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            with contextlib.suppress(ValueError):
                _ACTIVE.remove(self)
            if self._redirect is not None:
                _restore_console_logging(self._redirect)
                self._redirect = None
            return
        if self.enabled and not self._closed_quietly():
            self._line(time.perf_counter())
        self.enabled = False

    def _closed_quietly(self) -> bool:
        # A loop that ended before its first line (or whose last line is
        # current) says nothing more.
        if self._lines == 0:
            return time.perf_counter() - self._t0 < self.interval_s
        return self._printed_at == self.position


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


class _AboveBar(logging.Handler):
    """Stands in for a console log handler while a bar is shown: the same
    format and level, written through tqdm.write."""

    def __init__(self, replaced: logging.Handler, formatter: logging.Formatter | None,
                 stream: IO[str]) -> None:
        super().__init__(replaced.level)
        self.replaced, self.stream = replaced, stream
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging's rule: a failing handler must not raise
            self.handleError(record)


def _redirect_console_logging() -> list[_AboveBar]:
    """Swap the root logger's console handlers (absl's among them: it writes
    to sys.stderr itself, which tqdm's logging_redirect_tqdm does not see)
    for ones that print through tqdm.write; returns them, to swap back."""
    root = logging.getLogger()
    absl_handler = absl_logging.get_absl_handler()
    swapped = []
    for handler in list(root.handlers):
        if handler is absl_handler:
            stand_in = _AboveBar(handler, handler.python_handler.formatter, sys.stderr)
        elif isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout,
                                                                               sys.stderr):
            stand_in = _AboveBar(handler, handler.formatter, handler.stream)
        else:
            continue
        root.removeHandler(handler)
        root.addHandler(stand_in)
        swapped.append(stand_in)
    return swapped


def _restore_console_logging(swapped: list[_AboveBar]) -> None:
    root = logging.getLogger()
    for stand_in in swapped:
        root.removeHandler(stand_in)
        root.addHandler(stand_in.replaced)
