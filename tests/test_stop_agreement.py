"""StopAgreement's rule on one process and, with the all-gather replaced by
the flags of simulated hosts, on several (the real collective runs in
tests/test_preemption_multihost.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tinyllm_jax import stop_agreement
from tinyllm_jax.preemption import Preemption
from tinyllm_jax.stop_agreement import StopAgreement


def test_one_process_stops_when_asked_without_a_collective(monkeypatch):
    monkeypatch.setattr(stop_agreement.multihost_utils, "process_allgather",
                        lambda x: pytest.fail("no collective on one process"))
    preempt = Preemption()
    stop = StopAgreement(preempt, every=5, process_count=1)
    assert not stop.should_stop(1)
    preempt.requested = True
    assert stop.should_stop(2)  # at once, not at the next multiple of 5


def test_a_host_not_asked_stops_with_the_one_that_was(monkeypatch):
    other_host = {"flag": 0}
    gathered = []

    def allgather(local):
        gathered.append(int(local))
        return np.array([int(local), other_host["flag"]], np.int32)

    monkeypatch.setattr(stop_agreement.multihost_utils, "process_allgather", allgather)
    stop = StopAgreement(Preemption(), every=2, process_count=2)
    assert not stop.should_stop(2)
    other_host["flag"] = 1  # the notice reached the other host only
    assert not stop.should_stop(3)  # between sync steps nothing is exchanged
    assert stop.should_stop(4) and stop.from_other_host
    assert gathered == [0, 0]
    with pytest.raises(ValueError, match="stop sync interval must be >= 1"):
        StopAgreement(Preemption(), every=0, process_count=2)
