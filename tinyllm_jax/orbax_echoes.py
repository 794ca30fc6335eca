"""Quiet the echoes of a failed Orbax array read, only while a restore runs.

When a restore fails on a damaged array (the checkpoint integrity check
expects that), TensorStore reads still in flight complete after Orbax has
closed its asyncio loop, and each one reports "Event loop is closed" as an
ignored exception: noise with a traceback that would bury the one-line error
a user must read. Reads that had already failed are garbage-collected
unawaited and report their read error again, after the restore path has
logged it once (how many depends on GC timing); a gather of several failed
reads also logs "exception was never retrieved" on asyncio's logger.

`orbax_read_echo_filters()` drops exactly those reports inside its block and
puts the previous hook and logger back on exit, so importing the checkpoint
code changes no process-wide state. The echoes come when the failed read's
leftover coroutines are collected, which is only possible once TensorStore has
finished the reads still in flight: `collect_failed_reads()`, called inside
the block after a failed read, waits for that and collects them there.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import logging
import sys
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

# How Orbax words a failed array read (its message, not an exception type).
ORBAX_READ_ERROR = "Encountered error while reading array index"


def drop_failed_read_echoes(unraisable: Any, previous: Callable[[Any], None]) -> None:
    """An unraisable hook: drops the echoes described above, hands every
    other report to `previous`."""
    exc = getattr(unraisable, "exc_value", None)
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return
    code = getattr(getattr(unraisable, "object", None), "cr_code", None)
    if (code is not None and "orbax" in code.co_filename
            and str(exc).startswith(ORBAX_READ_ERROR)):
        return
    previous(unraisable)


def is_orbax_read_echo(exc: BaseException | None) -> bool:
    """An Orbax array-read failure (raised from Orbax's own frames)."""
    if exc is None or not str(exc).startswith(ORBAX_READ_ERROR):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


class FailedReadLogFilter(logging.Filter):
    """Drops asyncio's "exception was never retrieved" records of failed
    Orbax reads; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not is_orbax_read_echo(exc)


@contextlib.contextmanager
def orbax_read_echo_filters() -> Iterator[None]:
    """The hook and the asyncio log filter above, for the block only.

    Call `collect_failed_reads()` inside the block after a failed read: its
    echoes come when its unawaited coroutines are collected, and must come
    while the filters are still in place.
    """
    previous = sys.unraisablehook
    log_filter = FailedReadLogFilter()
    asyncio_log = logging.getLogger("asyncio")
    sys.unraisablehook = functools.partial(drop_failed_read_echoes, previous=previous)
    asyncio_log.addFilter(log_filter)
    try:
        yield
    finally:
        asyncio_log.removeFilter(log_filter)
        sys.unraisablehook = previous


def _suspended_orbax_coroutines() -> list[weakref.ref]:
    return [weakref.ref(o) for o in gc.get_objects()
            if inspect.iscoroutine(o) and o.cr_frame is not None
            and "orbax" in o.cr_code.co_filename]


def collect_failed_reads(timeout_s: float = 2.0) -> None:
    """Collect the coroutines a failed Orbax restore left suspended.

    Orbax closes its event loop without cancelling the reads still pending;
    TensorStore keeps each one referenced until its read completes on a
    worker thread (milliseconds), so a single `gc.collect()` can run too
    early. This collects until they are gone, for at most `timeout_s`.
    """
    gc.collect()
    pending = _suspended_orbax_coroutines()
    deadline = time.monotonic() + timeout_s
    while any(ref() is not None for ref in pending) and time.monotonic() < deadline:
        time.sleep(0.01)
        gc.collect()
