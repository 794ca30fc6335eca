"""Your own multiple-choice data (`config.data.table`) as Examples.

A table per split (JSONL, CSV, Parquet or an HF `datasets` split, read by
table_files.py) and a column mapping: the question, the options (one list
column, or one text column per option), the answer (the option's text, its
letter or its 0-based index) and one rationale column per teacher. Every bad
row is a DataError naming the file, the row and the field.

Limits (the student is trained and scored on multiple-choice questions):
2 to 26 options per question, exactly one of them correct; free-form answers
that are not among the options are refused, not guessed. A teacher whose
rationale cell is empty gets no rationale task for that question, counted as
`<teacher>/missing_rationale`. With `answer_format="auto"` the count
`answer_read_as/<text|letter|index>` says how the answers were read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.example import LETTERS, Example
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.data.stated_answers import fold_whitespace
from tinyllm_jax.data.table_files import TableRow, read_file, read_hf
from tinyllm_jax.spec.types import TableSpec

_LETTER_RE = re.compile(r"^\(?([A-Za-z])\)?\.?$")


def split_rows(table: TableSpec, split: str) -> Iterator[TableRow]:
    """The rows of one split, from its file or its HF split."""
    if table.format == "hf":
        return read_hf(table.path, split, getattr(table, split), table.hf_config)
    given = getattr(table, split)
    if not given:
        raise DataError(f"no file for split {split!r}", field=f"table.{split}",
                        expected=f"config.data.table.{split} naming a {table.format} file")
    path = Path(given).expanduser()
    if table.path and not path.is_absolute():
        path = Path(table.path).expanduser() / path
    return read_file(table.format, path)


class _Row:
    """Typed reads of one row's cells; every failure names file, row and field."""

    def __init__(self, row: TableRow) -> None:
        self.row = row

    def fail(self, field: str | None, message: str, expected: str) -> DataError:
        return DataError(message, path=self.row.source, line=self.row.line, row=self.row.row,
                         field=field, expected=expected)

    def cell(self, column: str) -> Any:
        if column not in self.row.values:
            raise self.fail(column, "no such column",
                            f"one of the columns {sorted(self.row.values)}")
        return self.row.values[column]

    def text(self, column: str, *, optional: bool = False) -> str | None:
        v = self.cell(column)
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)
        if v is None or (isinstance(v, str) and not v.strip()):
            if optional:
                return None
            raise self.fail(column, f"empty value {v!r}", "non-empty text")
        if not isinstance(v, str):
            raise self.fail(column, f"a {type(v).__name__} value {v!r}", "text")
        return v


def _choices(r: _Row, columns: Sequence[str]) -> tuple[str, ...]:
    expected = "2 to 26 non-empty option texts"
    if len(columns) == 1:
        value = r.cell(columns[0])
        if isinstance(value, str):
            # CSV cells cannot hold lists: a JSON list in the cell instead.
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise r.fail(columns[0], f"text {value[:60]!r} is not a JSON list",
                             'a list column (in CSV a JSON list like ["red", "blue"]), or '
                             "config.data.table.choices naming one column per option") from None
        if hasattr(value, "tolist"):
            value = value.tolist()
        if not isinstance(value, list | tuple):
            raise r.fail(columns[0], f"a {type(value).__name__} value {value!r}",
                         "a list of option texts")
        choices = list(value)
        for i, c in enumerate(choices):
            if isinstance(c, int | float) and not isinstance(c, bool):
                choices[i] = c = str(c)
            if not isinstance(c, str) or not c.strip():
                raise r.fail(columns[0], f"option {i} is {c!r}", expected)
    else:
        cells = [r.text(c, optional=True) for c in columns]
        # Questions with fewer options leave the last columns empty.
        while cells and cells[-1] is None:
            cells.pop()
        for c, v in zip(columns, cells):
            if v is None:
                raise r.fail(c, "empty option before a filled one",
                             "options in the first columns, empty ones only at the end")
        choices = cells
    if len(choices) < 2 or len(choices) > len(LETTERS):
        raise r.fail(",".join(columns), f"{len(choices)} option(s)", expected)
    return tuple(choices)


def _by_text(value: Any, choices: Sequence[str], report: DataReport) -> str | None:
    if not isinstance(value, str):
        return None
    hits = [c for c in choices if c == value]
    if not hits:
        hits = [c for c in choices if fold_whitespace(c) == fold_whitespace(value)]
        if len(hits) == 1:
            report.add("answer_matched_after_whitespace_normalisation")
    return hits[0] if len(hits) == 1 else None


def _by_letter(value: Any, choices: Sequence[str]) -> str | None:
    m = _LETTER_RE.match(value.strip()) if isinstance(value, str) else None
    i = LETTERS.index(m.group(1).lower()) if m else -1
    return choices[i] if 0 <= i < len(choices) else None


def _by_index(value: Any, choices: Sequence[str]) -> str | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return choices[value] if 0 <= value < len(choices) else None


def _answer(r: _Row, column: str, fmt: str, choices: Sequence[str], report: DataReport) -> str:
    value = r.cell(column)
    if hasattr(value, "item"):
        value = value.item()  # numpy scalars from Parquet / datasets
    if isinstance(value, int | float) and not isinstance(value, bool) and fmt == "text":
        value = str(value)
    found = {"text": lambda: _by_text(value, choices, report),
             "letter": lambda: _by_letter(value, choices),
             "index": lambda: _by_index(value, choices)}
    kinds = ("text", "letter", "index") if fmt == "auto" else (fmt,)
    for kind in kinds:
        answer = found[kind]()
        if answer is not None:
            if fmt == "auto":
                report.add(f"answer_read_as/{kind}")
            return answer
    what = {"text": "the text of exactly one option", "letter": f"a letter a..{LETTERS[len(choices) - 1]}",
            "index": f"a 0-based index 0..{len(choices) - 1}"}
    raise r.fail(column, f"answer {value!r} is not one of the {len(choices)} options "
                 f"{list(choices)}", " or ".join(what[k] for k in kinds)
                 + " (multiple choice only: free-form answers are not supported)")


def _example_id(r: _Row, table: TableSpec, dataset: str, split: str) -> str:
    if not table.id:
        return f"{dataset}-{split}-{r.row.row}"
    v = r.cell(table.id)
    if isinstance(v, bool) or not isinstance(v, str | int) or v == "":
        raise r.fail(table.id, f"bad id {v!r}", "a non-empty string or an integer")
    return str(v)


def read_table_split(table: TableSpec, dataset: str, split: str, teachers: Sequence[str],
                     report: DataReport) -> list[Example]:
    """Examples of one split with gold labels and the teachers' rationale columns.

    Teachers whose column is "" get no entry here: the caller joins them from
    the rationale store."""
    examples: list[Example] = []
    first_row: dict[str, int] = {}
    source = None
    for row in split_rows(table, split):
        r, source = _Row(row), row.source
        choices = _choices(r, table.choices)
        rationales: dict[str, str | None] = {}
        for t, column in zip(teachers, table.rationales):
            if column:
                rationales[t] = r.text(column, optional=True)
                if rationales[t] is None:
                    report.add(f"{t}/missing_rationale")
        ex_id = _example_id(r, table, dataset, split)
        if ex_id in first_row:
            raise r.fail(table.id, f"duplicate id {ex_id!r} (first at row {first_row[ex_id]})",
                         "unique ids")
        first_row[ex_id] = row.row
        examples.append(Example(
            id=ex_id, question=r.text(table.question), choices=choices,
            answer=_answer(r, table.answer, table.answer_format, choices, report),
            rationales=rationales, teacher_answers={t: None for t in rationales},
        ))
    if not examples:
        raise DataError(f"no rows in split {split!r}", path=source or getattr(table, split),
                        expected="at least one question")
    return examples
