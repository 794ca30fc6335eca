"""Imported first by `python -m tinyllm_jax.main`: a Ctrl-C while the heavy
libraries (JAX, Orbax, Flax) are still importing, seconds before the
command's own handlers exist, ends the command with one line and status 130
instead of a KeyboardInterrupt traceback. Nothing has been written then.

The command replaces this handler with its own (tinyllm_jax.preemption)
while it trains or evaluates. Only the command-line module imports this, so
importing the library changes no signal handling.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

EXIT_INTERRUPTED = 130


def _stop(signum: int, frame: Any) -> None:
    os.write(2, b"interrupted: stopped by Ctrl-C while starting; nothing was written\n")
    os._exit(EXIT_INTERRUPTED)


if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGINT, _stop)
