"""The one exception type for bad input data, and the one-value check readers share.

Readers raise `DataError` instead of letting a KeyError or JSONDecodeError
escape, so a user sees which file, which line or row and which field is wrong
and what was expected, not a traceback into the parser.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


class DataError(ValueError):
    """Bad input data, located as precisely as the reader knows.

    `line` is 1-based (a line of a text file); `row` is the 0-based position of
    a record in its file or split (the TinyLLM layout counts rows from 0:
    teacher chunk k holds rows 500k..500k+499). Any of them may be None.
    Subclassing ValueError keeps `except ValueError` callers working.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        row: int | None = None,
        field: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.row = row
        self.field = field
        self.expected = expected
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        text = ", ".join(where)
        text = f"{text}: {self.message}" if text else self.message
        if self.expected is not None:
            text += f" (expected {self.expected})"
        return text


def check_choice(value: Any, allowed: Sequence[str], field: str) -> None:
    """DataError naming `field` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise DataError(f"unknown {field} {value!r}", field=field, expected=f"one of {list(allowed)}")
