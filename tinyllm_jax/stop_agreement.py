"""Every host stops at the same step when any host is asked to stop.

A preemption notice (SIGTERM) reaches each host's process on its own, at
different moments: one host may see it after step 7, another after step 8
or never. The checkpoint save is collective, so hosts that decide to save
at different steps hang or write a mixed checkpoint. Here each host's flag
is all-gathered (`multihost_utils.process_allgather`, a small collective on
the same devices as the step) every `every` steps, and all hosts stop when
any flag is set: the same step on every host, by construction.

On one process nothing is exchanged and a request is honoured at once.
With `every` > 1 a request waits for the next sync step: keep
`every` x step time well inside the grace period of the notice (30 s on
Cloud TPU spot / preemptible VMs).
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.experimental import multihost_utils

from tinyllm_jax.preemption import Preemption

log = logging.getLogger(__name__)


class StopAgreement:
    """`should_stop(step)` after each step: True on every host at once."""

    def __init__(self, preempt: Preemption, every: int = 1,
                 process_count: int | None = None) -> None:
        if every < 1:
            raise ValueError(f"the stop sync interval must be >= 1 step, got {every}")
        self.preempt = preempt
        self.every = int(every)
        self.process_count = jax.process_count() if process_count is None else process_count
        self.from_other_host = False  # stopping because another host was asked to

    def should_stop(self, step: int) -> bool:
        local = bool(self.preempt.requested)
        if self.process_count == 1:
            return local
        if step % self.every:
            return False
        flags = np.asarray(multihost_utils.process_allgather(np.int32(local)))
        agreed = bool(flags.max())
        if agreed and not local:
            self.from_other_host = True
            asked = [int(i) for i in np.flatnonzero(flags.reshape(-1))]
            log.warning("process(es) %s were asked to stop: saving step %d and stopping with "
                        "them", asked, step)
        return agreed
