"""Validation of `config.data.table`: your own data as a table per split."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tinyllm_jax.spec.fields import Fields, split_known
from tinyllm_jax.spec.types import ANSWER_FORMATS, TABLE_FORMATS, TableSpec

WHERE = "config.data.table"
FILE_SPLITS = ("train", "valid", "test")


def _columns(f: Fields, key: str) -> tuple[str, ...]:
    v = f.raw(key)
    if isinstance(v, str):
        v = (v,)
    if not isinstance(v, Sequence) or not all(isinstance(x, str) for x in v):
        return f.bad(key, v, "must be a tuple of column names")
    # `--config.data.table.choices=A,B,C` arrives as ('A,B,C',): commas separate names.
    return tuple(part.strip() for x in v for part in x.split(",")) if v else ()


def parse_table(values: Any, *, name: str, teachers: tuple[str, ...], store: str,
                use_tfds: bool, problems: list[str]) -> TableSpec:
    """The TableSpec of `config.data.table`; problems name the field and what is allowed."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        problems.append(f"{WHERE} = {values!r}: must be a section (ConfigDict or mapping)")
        return TableSpec()
    values = split_known(values, [x.name for x in dataclasses.fields(TableSpec)], WHERE, problems)
    f = Fields(values, TableSpec, WHERE, problems)
    fmt = f.text("format", TABLE_FORMATS)
    if not fmt:
        changed = sorted(k for k, v in values.items() if k != "format" and v != f.defaults[k])
        if changed:
            problems.append(f"{WHERE}: {changed} set but {WHERE}.format is '': choose one of "
                            f"{list(TABLE_FORMATS[1:])} to read your own data")
        return TableSpec()
    if name == "synthetic":
        problems.append(f"config.data.name = 'synthetic': with {WHERE}.format={fmt!r} name your "
                        "dataset (it goes into ids, reports and rationale-store paths)")
    if use_tfds:
        problems.append(f"config.data.use_tfds = True: the TFDS builders read the TinyLLM "
                        f"layout, not {WHERE}; set it to False")
    text = {k: f.text(k) for k in ("path", "hf_config", "train", "valid", "test", "question",
                                   "answer", "id")}
    if fmt == "hf" and not text["path"]:
        f.bad("path", "", "format 'hf' needs a datasets.save_to_disk directory or a hub id")
    for key in ("question", "answer"):
        if not text[key].strip():
            f.bad(key, text[key], "must name a column")
    choices = _columns(f, "choices")
    if not choices or any(not c.strip() for c in choices) or len(set(choices)) != len(choices):
        f.bad("choices", choices, "must name one list column, or two or more distinct text "
              "columns (one per option)")
    rationales = _columns(f, "rationales")
    if rationales and len(rationales) != len(teachers):
        f.bad("rationales", rationales, f"must name one column per teacher in "
              f"config.data.teachers ({len(teachers)}: {list(teachers)}), '' for a teacher "
              "read from config.data.rationale_store")
    elif not rationales and teachers and not store:
        f.bad("rationales", rationales, f"teachers {list(teachers)} need their rationale "
              "columns (one per teacher), or config.data.rationale_store")
    elif "" in rationales and not store:
        f.bad("rationales", rationales, "'' reads that teacher from config.data.rationale_store, "
              "which is not set")
    used = [text["question"], text["answer"], *choices, *(r for r in rationales if r)]
    repeated = sorted({c for c in used if used.count(c) > 1})
    if repeated and not any(p.startswith(f"{WHERE}.choices") for p in problems):
        problems.append(f"{WHERE}: column(s) {repeated} mapped to more than one of question, "
                        "choices, answer and rationales")
    return TableSpec(format=fmt, choices=choices, rationales=rationales or ("",) * len(teachers),
                     answer_format=f.text("answer_format", ANSWER_FORMATS), **text)


def missing_splits(table: TableSpec, splits: Sequence[str]) -> list[str]:
    """Problems for splits a run reads that have no file (hf names default to the split's)."""
    if table.format in ("", "hf"):
        return []
    return [f"{WHERE}.{s} = '': the run reads the {s!r} split; give its file (or, for "
            "valid/test, leave it out of config.train.eval_splits / final_eval_split)"
            for s in FILE_SPLITS if s in splits and not getattr(table, s)]
