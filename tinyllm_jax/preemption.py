"""Stop requests (preemption, Ctrl-C) turned into "save a checkpoint and stop"."""

from __future__ import annotations

import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


class Preemption:
    """SIGTERM (TPU/spot preemption) asks the loop to save and stop cleanly.

    Held for the whole run, since a notice can come while data loads or the
    step compiles; entering it again (the loop does) is a no-op."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._depth = 0

    def __enter__(self) -> Preemption:
        self._depth += 1
        if self._depth > 1:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0 and self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
