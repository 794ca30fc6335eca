"""Rows of one split of your own data: JSONL, CSV, Parquet or an HF `datasets` split.

Every reader yields `TableRow`s (a plain dict per row and where it came from)
so the column mapping in table.py is the same for every format. Parquet needs
pyarrow and HF datasets need `datasets`: both are optional dependencies (the
`data` extra), imported only when such a file is read, with an error naming
the extra when missing.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.files import check_regular, read_regular_bytes

EXTRA = "pip install 'tinyllm_jax[data]'"
# Our split names and the names HF datasets usually give them.
HF_SPLIT_NAMES = {"train": ("train",), "valid": ("validation", "valid", "dev"),
                  "test": ("test",)}


@dataclasses.dataclass(frozen=True)
class TableRow:
    """One record: `row` is its 0-based position, `line` the text line when known."""

    values: dict[str, Any]
    source: str
    row: int
    line: int | None = None


def _text(raw: bytes, path: Path, expected: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start})", path=path, expected=expected) from None


def read_jsonl(path: Path) -> Iterator[TableRow]:
    expected = "one JSON object per line"
    text = _text(read_regular_bytes(path, expected=expected), path, expected)
    row = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON line: {e.msg} at column {e.colno}", path=path,
                            line=number, row=row, expected=expected) from None
        if not isinstance(record, dict):
            raise DataError(f"a JSON {type(record).__name__} where a record belongs", path=path,
                            line=number, row=row, expected=expected)
        yield TableRow(record, str(path), row, number)
        row += 1


def read_csv(path: Path) -> Iterator[TableRow]:
    expected = "a CSV file with a header row"
    text = _text(read_regular_bytes(path, expected=expected), path, expected)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise DataError("no header row", path=path, line=1, expected=expected)
        row, line = 0, reader.line_num + 1
        for cells in reader:
            if not any(c.strip() for c in cells):
                line = reader.line_num + 1
                continue
            if len(cells) != len(header):
                raise DataError(f"{len(cells)} cells but the header has {len(header)} columns",
                                path=path, line=line, row=row, expected=expected)
            yield TableRow(dict(zip(header, cells)), str(path), row, line)
            row, line = row + 1, reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"malformed CSV: {e}", path=path, line=reader.line_num,
                        expected=expected) from None


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"reading {what} needs the optional package {module.split('.')[0]!r}, "
                        f"which is not installed", expected=f"{EXTRA} (or pip install "
                        f"{module.split('.')[0]})") from None


def read_parquet(path: Path) -> Iterator[TableRow]:
    check_regular(path, expected="a Parquet file")
    pq = _import("pyarrow.parquet", f"Parquet ({path})")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own error types for a bad file
        raise DataError(f"not a readable Parquet file ({type(e).__name__}: {e})", path=path,
                        expected="a Parquet file") from None
    for row, record in enumerate(table.to_pylist()):
        yield TableRow(record, str(path), row)


def _hf_split_name(available: list[str], ours: str, given: str, source: str) -> str:
    if given:
        if given not in available:
            raise DataError(f"no split {given!r}", path=source, field=f"table.{ours}",
                            expected=f"one of {available}")
        return given
    for name in HF_SPLIT_NAMES[ours]:
        if name in available:
            return name
    raise DataError(f"no split for {ours!r} (looked for {list(HF_SPLIT_NAMES[ours])})",
                    path=source, field=f"table.{ours}",
                    expected=f"config.data.table.{ours} naming one of {available}")


def read_hf(path: str, split: str, given: str, config_name: str = "") -> Iterator[TableRow]:
    """A split of a `save_to_disk` DatasetDict directory or of a hub dataset."""
    datasets = _import("datasets", f"HF datasets ({path})")
    local = Path(path).expanduser()
    try:
        if local.is_dir():
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(path, config_name or None)
    except Exception as e:  # datasets raises many types; the message is what helps
        raise DataError(f"cannot load the dataset ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})", path=path,
                        expected="a datasets.save_to_disk directory or a hub id") from None
    if not hasattr(loaded, "keys"):
        raise DataError("holds one Dataset without splits", path=path,
                        expected="a DatasetDict (save it with DatasetDict({'train': ds, ...}))")
    name = _hf_split_name(list(loaded.keys()), split, given, path)
    source = f"{path}[{name}]"
    for row, record in enumerate(loaded[name]):
        yield TableRow(dict(record), source, row)


def read_file(fmt: str, path: str | os.PathLike[str]) -> Iterator[TableRow]:
    readers = {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}
    return readers[fmt](Path(path))
