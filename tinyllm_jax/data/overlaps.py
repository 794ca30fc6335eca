"""Overlaps between the splits of one run: shared ids and repeated questions.

Not fatal (some published benchmarks do repeat questions), but an eval
question that is also a training question measures memorisation, so every
overlap is counted in the DataReport the trainer prints at start-up:

- `overlap/ids_<a>_and_<b>`: ids present in both splits;
- `overlap/<b>_rows_same_as_<a>`: rows of the later split `b` whose question
  and choices (whitespace folded) equal a row of the earlier split `a`, in the
  order train, valid, test.

Only overlaps that exist are added, each with a note naming a few ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.data.stated_answers import fold_whitespace

SPLIT_ORDER = ("train", "valid", "test")
_SHOWN = 3


def _content_key(example: Example) -> tuple[str, tuple[str, ...]]:
    return fold_whitespace(example.question), tuple(fold_whitespace(c) for c in example.choices)


def _shown(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return ", ".join(repr(i) for i in ids[:_SHOWN]) + more


def split_overlaps(splits: Mapping[str, Sequence[Example]]) -> DataReport:
    """Count shared ids and repeated (question, choices) between every pair of splits."""
    report = DataReport()
    names = sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 99, s))
    ids = {s: {e.id for e in splits[s]} for s in names}
    contents = {s: {_content_key(e): e.id for e in splits[s]} for s in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(ids[a] & ids[b])
            if shared:
                report.add(f"overlap/ids_{a}_and_{b}", len(shared))
                report.note(f"overlap: {len(shared)} id(s) in both {a} and {b}: {_shown(shared)}")
            same = [e.id for e in splits[b] if _content_key(e) in contents[a]]
            if same:
                report.add(f"overlap/{b}_rows_same_as_{a}", len(same))
                report.note(
                    f"overlap: {len(same)} {b} row(s) repeat the question and choices of a {a} "
                    f"row ({b} ids {_shown(same)}); scores on them measure memorisation"
                )
    return report
