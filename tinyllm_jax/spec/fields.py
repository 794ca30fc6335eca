"""Typed, range-checked reads of one config section; problems are collected, not raised."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from tinyllm_jax.spec.types import field_default


def as_dict(section: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if section is None:
        return {}
    if hasattr(section, "to_dict"):
        return dict(section.to_dict())
    if isinstance(section, Mapping):
        return dict(section)
    problems.append(f"{where} = {section!r}: must be a section (ConfigDict or mapping)")
    return {}


def split_known(values: dict[str, Any], known: Sequence[str], where: str,
                 problems: list[str]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(known))
    if unknown:
        problems.append(f"{where}: unknown field(s) {unknown}; known fields: {sorted(known)}")
    return {k: v for k, v in values.items() if k in known}


class Fields:
    """Typed reads of one section's values with range checks; problems are
    collected, and a bad value is replaced by the default so checking goes on."""

    def __init__(self, values: dict[str, Any], cls: type, where: str, problems: list[str]):
        self.values, self.where, self.problems = values, where, problems
        self.defaults = {f.name: field_default(f) for f in dataclasses.fields(cls)}

    def bad(self, key: str, value: Any, allowed: str) -> Any:
        self.problems.append(f"{self.where}.{key} = {value!r}: {allowed}")
        return self.defaults[key]

    def raw(self, key: str) -> Any:
        return self.values.get(key, self.defaults[key])

    def boolean(self, key: str) -> bool:
        v = self.raw(key)
        return v if isinstance(v, bool) else self.bad(key, v, "must be True or False")

    def text(self, key: str, choices: Sequence[str] | None = None) -> str:
        v = self.raw(key)
        if not isinstance(v, str):
            return self.bad(key, v, "must be text")
        if choices is not None and v not in choices:
            return self.bad(key, v, f"must be one of {list(choices)}")
        return v

    def integer(self, key: str, lo: int | None = None, hi: int | None = None,
                allowed: str | None = None) -> int:
        v = self.raw(key)
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                return self.bad(key, v, "must be an integer")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return self.bad(key, v, allowed or range_text(lo, hi))
        return v

    def number(self, key: str, lo: float | None = None, hi: float | None = None, *,
               lo_open: bool = False, hi_open: bool = False) -> float:
        v = self.raw(key)
        if isinstance(v, bool) or not isinstance(v, int | float):
            return self.bad(key, v, "must be a number")
        v = float(v)
        if not math.isfinite(v):
            return self.bad(key, v, "must be a finite number")
        if (lo is not None and (v < lo or (lo_open and v == lo))) or (
                hi is not None and (v > hi or (hi_open and v == hi))):
            return self.bad(key, v, interval_text(lo, hi, lo_open, hi_open))
        return v


def range_text(lo: int | None, hi: int | None) -> str:
    if hi is None:
        return f"must be >= {lo}"
    if lo is None:
        return f"must be <= {hi}"
    return f"must be between {lo} and {hi}"


def interval_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    left = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
    right = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
    return "must be a finite number " + " and ".join(p for p in (left, right) if p)


def text_tuple(f: Fields, key: str) -> tuple[str, ...]:
    v = f.raw(key)
    if isinstance(v, str) or not isinstance(v, Sequence) or not all(isinstance(x, str) for x in v):
        return f.bad(key, v, "must be a tuple of text values")
    return tuple(v)


