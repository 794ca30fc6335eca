"""Eval rows in a fixed order, padded to a few bucketed shapes.

Every padded eval shape, in eval batches and in `Student.generate`, comes
from `bucket_length`, so a set of inputs compiles a handful of programs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from tinyllm_jax.data.features import ANSWER_TASK, TaskFeature, feature_lengths
from tinyllm_jax.data.iterator import process_layout
from tinyllm_jax.data.packing import materialize_rows


class EvalBatch(NamedTuple):
    """This host's rows of one eval batch; example_ids[i] is "" for a pad row."""

    batch: dict[str, np.ndarray]
    example_ids: list[str]


def bucket_length(n: int, cap: int | None = None, minimum: int = 16) -> int:
    """Smallest of 16, 24, 32, 48, 64, 96, ... (2**k and 1.5 * 2**k) >= n, at most `cap`.

    Batches padded to these few lengths compile a handful of programs per
    eval set while wasting at most a third of each row on padding.
    `minimum` (a power of two) starts the series lower, e.g. 1, 2, 3, 4, 6,
    8, ... for a row count.
    """
    if minimum < 1 or minimum & (minimum - 1):
        raise ValueError(f"bucket_length: minimum must be a power of two, got {minimum}")
    size = minimum
    while size < n:
        if size & (size - 1):  # 1.5 * 2**k -> 2**(k + 1)
            size = size // 3 * 4
        else:  # 2**k -> 1.5 * 2**k (and 1 -> 2)
            size = max(size * 3 // 2, size + 1)
    return min(size, cap) if cap else size


def pad_batch(
    sequences: Sequence[Sequence[int]], length: int, rows: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token lists into [rows, length] tokens and 0/1 segment ids."""
    tokens = np.full((rows, length), pad_id, np.int32)
    segments = np.zeros((rows, length), np.int32)
    for r, seq in enumerate(sequences):
        seq = seq[:length]
        tokens[r, : len(seq)] = seq
        segments[r, : len(seq)] = 1
    return tokens, segments


def eval_lengths(features: Sequence[TaskFeature], multiple: int = 8) -> tuple[int, int]:
    """Smallest multiple-of-`multiple` lengths that hold every pair."""
    li, lt = feature_lengths(features)
    if not len(li):
        return multiple, multiple
    return int(-(-li.max() // multiple) * multiple), int(-(-lt.max() // multiple) * multiple)


def eval_order(features: Sequence[TaskFeature], by_length: bool = False) -> list[int]:
    """The feature index of every global eval row, in batch order.

    `by_length` visits the pairs shortest input first (ties by target, then
    position, so every host computes the same order), so each batch pads to
    its own longest pair rather than to the longest in the whole set.
    """
    if not by_length:
        return list(range(len(features)))
    li, lt = feature_lengths(features)
    return [int(i) for i in np.lexsort((np.arange(len(features)), lt, li))]


def eval_batches(
    features: Sequence[TaskFeature],
    *,
    batch_size: int,
    input_len: int | None = None,
    target_len: int | None = None,
    by_length: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[EvalBatch]:
    """Answer-task pairs, one per row, as padded batches of `batch_size` global rows.

    Rows follow `eval_order(features, by_length)`; the last batch is completed
    with empty rows. Lengths default to `eval_lengths(features)`, one shape for
    the whole set, so an eval set is never padded to 512 for nothing; with
    `by_length` each batch takes the `bucket_length` of its own longest pair
    instead (at most the whole set's length), so short pairs are not padded
    to the longest one. Each host gets its contiguous share of rows and ids.
    """
    bad = sorted({f.task_id for f in features if f.task_id != ANSWER_TASK})
    if bad:
        raise ValueError(
            f"eval batches hold the answer task only, got task ids {bad}; build them with "
            f"build_features(..., tasks=({ANSWER_TASK},))"
        )
    index, count = process_layout(process_index, process_count)
    if batch_size < 1 or batch_size % count:
        raise ValueError(
            f"eval batch_size {batch_size} must be a positive multiple of {count} processes"
        )
    default_in, default_t = eval_lengths(features)
    input_len, target_len = input_len or default_in, target_len or default_t
    order = eval_order(features, by_length)
    local = batch_size // count
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        rows_in, rows_t = input_len, target_len
        if by_length:
            li, lt = feature_lengths([features[i] for i in ids])
            rows_in = bucket_length(int(li.max()), cap=input_len)
            rows_t = bucket_length(int(lt.max()), cap=target_len)
        ids = ids + [-1] * (batch_size - len(ids))
        mine = ids[index * local : (index + 1) * local]
        rows = [[i] if i >= 0 else [] for i in mine]
        yield EvalBatch(
            materialize_rows(features, rows, rows_in, rows_t),
            [features[i].example_id if i >= 0 else "" for i in mine],
        )
