"""Deterministic, resumable, host-sharded batches over TaskFeatures.

Everything a batch depends on is (features, seed, epoch, position): the
pair order of an epoch is a permutation drawn from (seed, epoch), rows are
packed from that order, and global batch p of the epoch is rows
[p*B, (p+1)*B). So the state to checkpoint is three integers, and restoring
it reproduces the remaining batches exactly, on any number of restarts.

Every host computes the same rows and keeps its contiguous share of each
global batch (rows [i*B/n, (i+1)*B/n) for process i of n), which is the
layout `jax.make_array_from_process_local_data` expects for a batch axis
sharded over processes in order. The last global batch of an epoch is
completed with empty rows (all loss weights 0), so no pair is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from tinyllm_jax.data.features import TaskFeature, feature_lengths
from tinyllm_jax.data.packing import DEFAULT_MAX_OPEN_ROWS, materialize_rows, plan_rows

STATE_KEYS = ("seed", "epoch", "position")


def state_problems(state: Any) -> list[str]:
    """What makes `state` unusable as an iterator state ([] = usable): it must
    be a mapping of the STATE_KEYS to integers, epoch and position >= 0."""
    if not isinstance(state, Mapping):
        return [f"expected an object with keys {STATE_KEYS}, got a {type(state).__name__}"]
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        return [f"lacks {missing}; expected keys {STATE_KEYS}"]
    problems = []
    for k in STATE_KEYS:
        value = state[k]
        # JSON gives ints; a float or a string here is damage, not a count.
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            problems.append(f"{k}={value!r} is not an integer")
        elif k != "seed" and value < 0:
            problems.append(f"{k}={value!r} is negative")
    return problems


def process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    return int(process_index), int(process_count)


class BatchIterator:
    """Yields this host's rows of each global batch, forever or for `num_epochs`.

    Args:
      features: the training pairs (all tasks).
      batch_size: global rows per batch, across all hosts.
      input_len, target_len: row lengths (packed lengths, or the per-sequence
        limits in unpacked mode).
      packing: pack several pairs per row (True) or one pair per row.
      seed: shuffle seed; with `shuffle=False` the order is the given one.
      num_epochs: stop after this many epochs; None means never stop.
      process_index, process_count: default to jax.process_index() /
        jax.process_count(); pass them to simulate hosts in tests.
    """

    def __init__(
        self,
        features: Sequence[TaskFeature],
        *,
        batch_size: int,
        input_len: int,
        target_len: int,
        packing: bool = True,
        seed: int = 0,
        shuffle: bool = True,
        num_epochs: int | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        max_open_rows: int = DEFAULT_MAX_OPEN_ROWS,
    ) -> None:
        if not features:
            raise ValueError(
                "BatchIterator needs at least one feature; the training split is empty"
            )
        self._index, self._count = process_layout(process_index, process_count)
        if batch_size < 1 or batch_size % self._count:
            raise ValueError(
                f"batch_size {batch_size} must be a positive multiple of the process count "
                f"{self._count} (each host takes an equal share of every global batch)"
            )
        self._features = features
        self._input_lens, self._target_lens = feature_lengths(features)
        too_long = np.flatnonzero((self._input_lens > input_len) | (self._target_lens > target_len))
        if too_long.size:
            i = int(too_long[0])
            raise ValueError(
                f"{too_long.size} pairs do not fit rows of {input_len} input / {target_len} "
                f"target tokens, e.g. pair {i} ({features[i].example_id}, task "
                f"{features[i].task_id}) with {self._input_lens[i]} / {self._target_lens[i]}"
            )
        self.batch_size = int(batch_size)
        self.input_len, self.target_len = int(input_len), int(target_len)
        self.packing = bool(packing)
        self.shuffle = bool(shuffle)
        self.num_epochs = num_epochs
        self._max_open_rows = max_open_rows
        self._state = {"seed": int(seed), "epoch": 0, "position": 0}
        self._plan_key: tuple[int, int] | None = None
        self._plan: list[list[int]] = []

    # ------------------------------------------------------------ state

    @property
    def local_batch_size(self) -> int:
        return self.batch_size // self._count

    def get_state(self) -> dict[str, int]:
        """{"seed", "epoch", "position"}: position = global batches done in epoch."""
        return dict(self._state)

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from `state` (from `get_state`, e.g. a checkpoint's data item)."""
        problems = state_problems(state)
        if problems:
            raise ValueError(f"iterator state {state!r}: {'; '.join(problems)}")
        previous, self._state = self._state, {k: int(state[k]) for k in STATE_KEYS}
        # Past the epoch's last batch, __next__ would silently start the next
        # epoch: the rows are not the ones this state was saved with. (The
        # epoch's rows depend on the seed just set.)
        epoch, position = self._state["epoch"], self._state["position"]
        batches = self.batches_in_epoch(epoch)
        if position > batches:
            self._state = previous
            raise ValueError(
                f"iterator state position {position} is past the end of epoch {epoch}, which "
                f"has {batches} batches: the training data is not the data this position was "
                "saved with"
            )

    # ------------------------------------------------------------ epochs

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Pair indices in the order epoch `epoch` visits them."""
        n = len(self._features)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self._state["seed"], epoch]).permutation(n)

    def epoch_rows(self, epoch: int) -> list[list[int]]:
        """Rows (lists of feature indices) of epoch `epoch`, cached for reuse."""
        key = (self._state["seed"], epoch)
        if self._plan_key != key:
            order = self.epoch_order(epoch)
            if self.packing:
                local = plan_rows(
                    self._input_lens[order],
                    self._target_lens[order],
                    self.input_len,
                    self.target_len,
                    max_open_rows=self._max_open_rows,
                )
                self._plan = [[int(order[j]) for j in row] for row in local]
            else:
                self._plan = [[int(i)] for i in order]
            self._plan_key = key
        return self._plan

    def batches_in_epoch(self, epoch: int) -> int:
        return -(-len(self.epoch_rows(epoch)) // self.batch_size)

    def global_rows(self, epoch: int, position: int) -> list[list[int]]:
        """All hosts' rows of global batch `position`, padded with empty rows."""
        rows = self.epoch_rows(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        return [*rows, *([[]] * (self.batch_size - len(rows)))]

    # ------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        epoch, position = self._state["epoch"], self._state["position"]
        if self.num_epochs is not None and epoch >= self.num_epochs:
            raise StopIteration
        if position >= self.batches_in_epoch(epoch):
            epoch, position = epoch + 1, 0
            if self.num_epochs is not None and epoch >= self.num_epochs:
                self._state.update(epoch=epoch, position=0)
                raise StopIteration
        rows = self.global_rows(epoch, position)
        lb = self.local_batch_size
        mine = rows[self._index * lb : (self._index + 1) * lb]
        batch = materialize_rows(self._features, mine, self.input_len, self.target_len)
        self._state.update(epoch=epoch, position=position + 1)
        return batch
