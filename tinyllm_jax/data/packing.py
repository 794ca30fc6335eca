"""Fixed-shape batches from TaskFeatures: packed rows or one pair per row.

Output is the Batch dict of docs/design.md: encoder/decoder tokens, segment
ids (1.. per pair, 0 = pad), positions inside each segment, decoder inputs
shifted right per segment (each segment starts with 0), task ids per target
token and float loss weights.

Packing is two-dimensional: a pair needs room in both the encoder row (Li
slots) and the decoder row (Lt slots). `plan_rows` is a first-fit greedy over
the pairs in the given (shuffled) order with a bounded window of open rows,
so the cost stays linear in the number of pairs. Efficiency depends mostly on
the row shape matching the data's encoder:decoder token ratio, which
`auto_packed_lengths` picks from the lengths themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyllm_jax.data.features import TaskFeature, feature_lengths

BATCH_KEYS = (
    "encoder_input_tokens",
    "encoder_segment_ids",
    "encoder_positions",
    "decoder_input_tokens",
    "decoder_target_tokens",
    "decoder_segment_ids",
    "decoder_positions",
    "decoder_task_ids",
    "decoder_loss_weights",
)
DEFAULT_MAX_OPEN_ROWS = 512


def _check_fits(i: int, li: int, lt: int, packed_input_len: int, packed_target_len: int) -> None:
    if li > packed_input_len or lt > packed_target_len:
        raise ValueError(
            f"pair {i} has {li} input / {lt} target tokens but rows hold "
            f"{packed_input_len} / {packed_target_len}; packed lengths must be at least "
            "max_input_len / max_target_len (or use 'auto')"
        )


def plan_rows(
    input_lens: Sequence[int] | np.ndarray,
    target_lens: Sequence[int] | np.ndarray,
    packed_input_len: int,
    packed_target_len: int,
    *,
    max_open_rows: int = DEFAULT_MAX_OPEN_ROWS,
) -> list[list[int]]:
    """Rows as lists of pair indices, filled first-fit in index order.

    Each pair goes into the earliest open row with room for both its input
    and its target, else into a new row. A row stops being a candidate when
    it cannot take even the smallest pair, or when more than `max_open_rows`
    rows are open (the oldest is closed), which bounds the work per pair.
    """
    li = np.asarray(input_lens, dtype=np.int64)
    lt = np.asarray(target_lens, dtype=np.int64)
    if li.shape != lt.shape or li.ndim != 1:
        raise ValueError(
            f"input_lens and target_lens must be equal-length 1-D, got {li.shape} and {lt.shape}"
        )
    if len(li) == 0:
        return []
    if li.min() < 1 or lt.min() < 1:
        raise ValueError("every pair needs at least one input and one target token (EOS)")
    min_in, min_t = int(li.min()), int(lt.min())
    cap = max(1, int(max_open_rows))
    rem_in = np.zeros(cap, dtype=np.int64)
    rem_t = np.zeros(cap, dtype=np.int64)
    row_of = np.zeros(cap, dtype=np.int64)  # open slot -> index into `rows`
    n_open = 0
    rows: list[list[int]] = []
    for i in range(len(li)):
        a, b = int(li[i]), int(lt[i])
        _check_fits(i, a, b, packed_input_len, packed_target_len)
        slot = -1
        if n_open:
            fits = (rem_in[:n_open] >= a) & (rem_t[:n_open] >= b)
            first = int(np.argmax(fits))
            if fits[first]:
                slot = first
        if slot < 0:
            if n_open == cap:  # close the oldest open row
                rem_in[: cap - 1] = rem_in[1:cap]
                rem_t[: cap - 1] = rem_t[1:cap]
                row_of[: cap - 1] = row_of[1:cap]
                n_open -= 1
            slot = n_open
            rem_in[slot], rem_t[slot], row_of[slot] = packed_input_len, packed_target_len, len(rows)
            rows.append([])
            n_open += 1
        rows[row_of[slot]].append(i)
        rem_in[slot] -= a
        rem_t[slot] -= b
        if rem_in[slot] < min_in or rem_t[slot] < min_t:  # full: drop from the window
            keep = np.arange(n_open) != slot
            k = n_open - 1
            rem_in[:k], rem_t[:k], row_of[:k] = (
                rem_in[:n_open][keep],
                rem_t[:n_open][keep],
                row_of[:n_open][keep],
            )
            n_open = k
    return rows


def empty_batch(num_rows: int, input_len: int, target_len: int) -> dict[str, np.ndarray]:
    """All-padding arrays with the Batch keys, shapes and dtypes."""
    batch = {
        k: np.zeros((num_rows, input_len if k.startswith("encoder") else target_len), np.int32)
        for k in BATCH_KEYS
    }
    batch["decoder_loss_weights"] = np.zeros((num_rows, target_len), np.float32)
    return batch


def materialize_rows(
    features: Sequence[TaskFeature],
    rows: Sequence[Sequence[int]],
    input_len: int,
    target_len: int,
) -> dict[str, np.ndarray]:
    """The Batch for `rows` (lists of feature indices; an empty list is a pad row)."""
    batch = empty_batch(len(rows), input_len, target_len)
    enc_tok, enc_seg, enc_pos = (
        batch["encoder_input_tokens"],
        batch["encoder_segment_ids"],
        batch["encoder_positions"],
    )
    dec_in, dec_tgt, dec_seg = (
        batch["decoder_input_tokens"],
        batch["decoder_target_tokens"],
        batch["decoder_segment_ids"],
    )
    dec_pos, dec_task, dec_w = (
        batch["decoder_positions"],
        batch["decoder_task_ids"],
        batch["decoder_loss_weights"],
    )
    for r, row in enumerate(rows):
        ei = ti = 0
        for seg, idx in enumerate(row, start=1):
            f = features[idx]
            a, b = len(f.inputs), len(f.targets)
            if ei + a > input_len or ti + b > target_len:
                raise ValueError(
                    f"row {r} overflows: pair {idx} ({a} input / {b} target tokens) does not fit "
                    f"after {ei} / {ti} used of {input_len} / {target_len}"
                )
            enc_tok[r, ei : ei + a] = f.inputs
            enc_seg[r, ei : ei + a] = seg
            enc_pos[r, ei : ei + a] = np.arange(a)
            dec_tgt[r, ti : ti + b] = f.targets
            # Teacher forcing inside the segment: start token 0, then the
            # target shifted right by one, never reading a previous segment.
            dec_in[r, ti + 1 : ti + b] = f.targets[:-1]
            dec_seg[r, ti : ti + b] = seg
            dec_pos[r, ti : ti + b] = np.arange(b)
            dec_task[r, ti : ti + b] = f.task_id
            dec_w[r, ti : ti + b] = 1.0
            ei += a
            ti += b
    return batch


def pack_features(
    features: Sequence[TaskFeature],
    packed_input_len: int,
    packed_target_len: int,
    *,
    max_open_rows: int = DEFAULT_MAX_OPEN_ROWS,
) -> dict[str, np.ndarray]:
    """All `features`, in order, packed first-fit into rows of the given shape."""
    li, lt = feature_lengths(features)
    rows = plan_rows(li, lt, packed_input_len, packed_target_len, max_open_rows=max_open_rows)
    return materialize_rows(features, rows, packed_input_len, packed_target_len)


def pad_features(
    features: Sequence[TaskFeature], max_input_len: int, max_target_len: int
) -> dict[str, np.ndarray]:
    """Unpacked mode: one pair per row, padded to the per-sequence limits."""
    return materialize_rows(
        features, [[i] for i in range(len(features))], max_input_len, max_target_len
    )


def packing_efficiency(batch: dict[str, np.ndarray]) -> float:
    """Real tokens / slots, encoder and decoder slots counted together."""
    enc, dec = batch["encoder_segment_ids"], batch["decoder_segment_ids"]
    slots = enc.size + dec.size
    return float((np.count_nonzero(enc) + np.count_nonzero(dec)) / slots) if slots else 0.0


def rows_efficiency(
    rows: Sequence[Sequence[int]],
    input_lens: np.ndarray,
    target_lens: np.ndarray,
    input_len: int,
    target_len: int,
) -> float:
    """packing_efficiency of a row plan without building the arrays."""
    if not rows:
        return 0.0
    used = sum(int(input_lens[i]) + int(target_lens[i]) for row in rows for i in row)
    return used / (len(rows) * (input_len + target_len))


def _round_up(n: float, multiple: int) -> int:
    return int(-(-int(np.ceil(n)) // multiple) * multiple)


def auto_packed_lengths(
    input_lens: Sequence[int] | np.ndarray,
    target_lens: Sequence[int] | np.ndarray,
    *,
    packed_input_len: int | None = None,
    packed_target_len: int | None = None,
    multiple: int = 64,
    target_efficiency: float = 0.9,
    max_scale: int = 8,
    seed: int = 0,
    sample: int = 2048,
) -> tuple[int, int]:
    """The smallest row shape (Li, Lt) that packs these lengths well.

    Candidates are multiples of `multiple` (accelerator friendly) that hold
    the longest pair, up to `max_scale` times that, with Lt near Li times the
    data's target:input token ratio. They are tried from the smallest total
    Li + Lt up, packing a shuffled sample; the first reaching
    `target_efficiency` wins (smaller rows waste less attention work on
    cross-segment pairs), else the most efficient one. A side given as an
    int is kept as is.
    """
    li = np.asarray(input_lens, dtype=np.int64)
    lt = np.asarray(target_lens, dtype=np.int64)
    if len(li) == 0:
        raise ValueError("auto packed lengths need at least one feature")
    if packed_input_len is not None and packed_target_len is not None:
        return int(packed_input_len), int(packed_target_len)
    idx = np.random.default_rng(seed).permutation(len(li))[:sample]
    si, st = li[idx], lt[idx]
    ratio = float(lt.sum()) / float(li.sum())
    a_min, b_min = _round_up(li.max(), multiple), _round_up(lt.max(), multiple)
    if packed_input_len is not None:
        inputs = [int(packed_input_len)]
    else:
        inputs = list(range(a_min, max_scale * a_min + 1, multiple))
    candidates = set()
    for a in inputs:
        if packed_target_len is not None:
            candidates.add((a + int(packed_target_len), a, int(packed_target_len)))
            continue
        centre = _round_up(a * ratio, multiple)
        for k in (-1, 0, 1):
            b = max(b_min, centre + k * multiple)
            candidates.add((a + b, a, b))
    best: tuple[float, int, int] | None = None
    for _, a, b in sorted(candidates):
        eff = rows_efficiency(plan_rows(si, st, a, b), si, st, a, b)
        if eff >= target_efficiency:
            return a, b
        if best is None or eff > best[0]:
            best = (eff, a, b)
    assert best is not None
    return best[1], best[2]
