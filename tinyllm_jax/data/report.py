"""Counted, reported data decisions: nothing is dropped or changed silently."""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass
class DataReport:
    """Counters keyed like "flan/missing_rationale" plus free-text notes.

    Every reader and transform that skips, masks, relabels or truncates
    something adds a count here; the stats command and the trainer print it.
    """

    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def note(self, message: str) -> None:
        self.notes.append(message)

    def merge(self, other: DataReport) -> DataReport:
        self.counts.update(other.counts)
        self.notes.extend(other.notes)
        return self

    def format(self, title: str = "data report") -> str:
        lines = [f"{title}:"]
        lines += [f"  {k}: {v}" for k, v in sorted(self.counts.items())]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)
