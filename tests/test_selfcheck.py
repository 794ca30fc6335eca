"""The self-check's KV-cache comparison fails on any disagreement up to EOS."""

from __future__ import annotations

import numpy as np

from tinyllm_jax.selfcheck import cached_matches_forced

EOS = 1


def _ok(cached: list[list[int]], forced: list[list[int]]) -> bool:
    return cached_matches_forced(np.asarray(cached), np.asarray(forced), EOS)[0]


def test_rows_agreeing_up_to_their_first_eos_pass():
    # After EOS the cached decode pads; the teacher-forced argmax goes on.
    assert _ok([[5, 6, 1, 0], [7, 8, 9, 4]], [[5, 6, 1, 9], [7, 8, 9, 4]])


def test_any_disagreement_up_to_and_including_eos_fails():
    assert not _ok([[5, 6, 1, 0], [7, 8, 9, 4]], [[5, 3, 1, 0], [7, 8, 9, 4]])
    assert not _ok([[5, 6, 1, 0]], [[5, 6, 2, 0]])  # EOS itself differs
    assert not _ok([[5, 6, 1, 0], [7, 8, 9, 4]], [[5, 6, 1, 0], [7, 8, 9, 5]])  # row without EOS


def test_tokens_after_eos_must_be_padding():
    assert not _ok([[5, 1, 6, 0]], [[5, 1, 6, 0]])


def test_the_report_names_the_failing_row():
    ok, detail = cached_matches_forced(np.asarray([[2, 1], [3, 4]]), np.asarray([[2, 1], [3, 5]]),
                                       EOS)
    assert not ok and detail.startswith("row 1:")
