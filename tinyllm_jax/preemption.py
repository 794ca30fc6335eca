"""Stop requests (preemption, Ctrl-C) turned into "save a checkpoint and stop".

    with Preemption(interrupts=True, abort_process=True) as stop:
        ...start-up: a Ctrl-C ends the process at once (nothing is unsaved)...
        with stop.saving():
            ...the loop: checks stop.requested after every step...

SIGTERM (TPU/spot preemption) asks the loop to save and stop
(`sigterm=False` leaves SIGTERM alone, for commands without a loop). With
`interrupts`, SIGINT does the same while `saving()` is entered. Outside it
(data loading, compiling, the final evaluation, --mode=eval) nothing is
unsaved and every file is written whole at the end, so a Ctrl-C stops at
once; a second Ctrl-C inside `saving()` stops at once too, without saving.

"At once" with `abort_process` (the command line) means: the `before_abort`
callbacks run (releasing the workdir lock), one line goes to stderr and the
process exits with status 130. A thread woken by the signal itself does
this, so it works while the main thread is inside a long compile or device
call, where Python signal handlers cannot run, and a KeyboardInterrupt that
would land in a garbage-collector callback (and be ignored there) is never
needed. Without `abort_process` (a notebook, a test) it raises
KeyboardInterrupt in the main thread, as Python does by default.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130


class Preemption:
    """Held for the whole run, since a notice can come while data loads or the
    step compiles; entering it again is a no-op."""

    def __init__(self, interrupts: bool = False, *, sigterm: bool = True,
                 abort_process: bool = False,
                 stop_note: str = "stopped by Ctrl-C; nothing was unsaved",
                 abort_note: str = "nothing was saved since the last checkpoint; the next "
                                   "run resumes from it") -> None:
        self.requested = False
        self.reason: str | None = None  # "SIGTERM" or "SIGINT" once requested
        self.interrupts = interrupts
        self.sigterm = sigterm
        self.abort_process = abort_process
        self.stop_note = stop_note
        self.abort_note = abort_note
        self._saving = False
        self._count = 0
        self._count_lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}
        self._depth = 0
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._previous_fd = -1
        self._watcher: threading.Thread | None = None

    # --- use --------------------------------------------------------------------

    @contextlib.contextmanager
    def saving(self) -> Iterator[None]:
        """While inside, a first Ctrl-C asks for save-and-stop like SIGTERM."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False

    def before_abort(self, callback: Callable[[], None]) -> None:
        """Run `callback` before a Ctrl-C ends the process."""
        self._callbacks.append(callback)

    # --- installing ---------------------------------------------------------------

    def __enter__(self) -> Preemption:
        self._depth += 1
        if self._depth > 1:
            return self
        try:
            if self.sigterm:
                self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
            if self.interrupts:
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
                if self.abort_process:
                    self._start_watcher()
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            self._restore()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._restore()

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous.clear()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_fd)
            reader, writer = self._wakeup
            writer.close()  # the watcher's recv returns b"" and it ends
            if self._watcher is not None:
                self._watcher.join(timeout=5)
            reader.close()
            self._wakeup = self._watcher = None

    def _start_watcher(self) -> None:
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._wakeup = (reader, writer)

        def watch() -> None:
            while True:
                try:
                    data = reader.recv(64)
                except OSError:
                    return
                if not data:
                    return
                for signum in data:
                    if signum == signal.SIGINT:
                        self._interrupt()

        self._watcher = threading.Thread(target=watch, name="ctrl-c watcher", daemon=True)
        self._watcher.start()

    # --- the signals ------------------------------------------------------------

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True
        self.reason = self.reason or "SIGTERM"

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # With the watcher, it has acted already (it is woken first); this
        # Python-level handler only keeps the default KeyboardInterrupt away.
        if self._wakeup is None:
            self._interrupt()

    def _interrupt(self) -> None:
        with self._count_lock:
            self._count += 1
            first = self._count == 1
        if first and self._saving:
            self.requested = True
            self.reason = "SIGINT"
            log.warning("Ctrl-C: saving a checkpoint of the current step and stopping "
                        "(press Ctrl-C again to stop at once without saving)")
            return
        if not self.abort_process:  # in-process use: unwind like Python's default
            raise KeyboardInterrupt
        self._exit(self.stop_note if first else f"second Ctrl-C, stopped at once; "
                                                f"{self.abort_note}")

    def _exit(self, note: str) -> None:
        for callback in self._callbacks:
            with contextlib.suppress(Exception):
                callback()
        # os.write, not print: the main thread may hold sys.stderr's lock.
        with contextlib.suppress(OSError):
            os.write(2, f"interrupted: {note}\n".encode())
        os._exit(EXIT_INTERRUPTED)
