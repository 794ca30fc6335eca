"""One line, not a traceback, for what library background threads report
when the disk fills up (or another file-system fault hits a write).

On a full disk Orbax's asynchronous checkpoint threads, TensorStore's
callbacks and tensorboardX's writer thread each report the failure with a
full traceback, some of them again at interpreter exit; the same error also
reaches the main thread, where the command's error boundary (tinyllm_jax.cli)
prints the one line a person must act on. `quiet_background_errors()` keeps
those reports to one line each (their message stays: it names the file):

- records of the `absl` logger written from Orbax's files, and of the
  `asyncio` logger about exceptions raised in Orbax's frames, lose their
  traceback; asyncio's "exception was never retrieved" about them (one per
  array, at exit) is dropped;
- "Event loop is closed" reports (TensorStore completing a write after Orbax
  closed its loop) are dropped: they say nothing about the cause;
- OSErrors that end a library thread or an atexit callback (tensorboardX
  flushing to a full disk) become one `warning:` line.

Process-wide and never removed (the exit-time reports come after the
command returned), so only the command line installs it; a genuine bug in
the main thread keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

# Where the filtered reports come from (path fragments of the packages).
LIBRARIES = ("/orbax/", "/tensorstore/", "/tensorboardX/")


def _in_libraries(filename: str) -> bool:
    return any(part in filename for part in LIBRARIES)


def _raised_in_libraries(exc: BaseException | None) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:  # the exception and its causes
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            if _in_libraries(tb.tb_frame.f_code.co_filename):
                return True
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return False


class OneLineFilter(logging.Filter):
    """Drops the traceback of records about library background failures."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and record.name == "asyncio" and _raised_in_libraries(exc) and (
                "exception was never retrieved" in str(record.msg)):
            return False  # one per array write, at exit, after the error was reported
        if exc is not None and (_in_libraries(record.pathname) or _raised_in_libraries(exc)):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {_first_line(exc)})"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:500] if lines else ""


def _warn(what: str, exc: BaseException) -> None:
    print(f"warning: {what}: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr,
          flush=True)


def _unraisable_hook(previous: Any) -> Any:
    def hook(unraisable: Any) -> None:
        exc = getattr(unraisable, "exc_value", None)
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        if isinstance(exc, OSError) and _raised_in_libraries(exc):
            _warn(unraisable.err_msg or "ignored", exc)
            return
        previous(unraisable)

    return hook


def _thread_hook(previous: Any) -> Any:
    def hook(args: Any) -> None:
        if isinstance(args.exc_value, OSError) and _raised_in_libraries(args.exc_value):
            _warn(f"thread {getattr(args.thread, 'name', '?')} stopped", args.exc_value)
            return
        previous(args)

    return hook


_installed = False


def quiet_background_errors() -> None:
    """Install the filters and hooks above (once; idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(OneLineFilter())
    sys.unraisablehook = _unraisable_hook(sys.unraisablehook)
    threading.excepthook = _thread_hook(threading.excepthook)
