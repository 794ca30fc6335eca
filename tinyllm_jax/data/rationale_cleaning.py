"""Cleaning LLaMA-2's free-text rationales from the published TinyLLM files.

LLaMA rationale = the text after "llama rationale:", cut at the first line
that starts a new block ("#", "Question:", "Q:", "Options:", "Answer
Choices:", a code fence): the model ran on into inventing the next prompt
(the caller counts it as llama/trimmed_runaway). Immediately repeated lines
are collapsed to one (llama/collapsed_repeats). A rationale with nothing left
beyond the prompt echo "Let's think step by step." is empty.
"""

from __future__ import annotations

import dataclasses
import re

_ECHO = "let's think step by step."
_RUNAWAY = re.compile(
    r"^[ \t]*(?:#|```|(?:question|q|options|answer choices|input|instruction)\s*\d*\s*:)",
    re.I | re.M,
)


@dataclasses.dataclass(frozen=True)
class CleanedRationale:
    """The cleaned text (None when empty) and which cleanings changed it."""

    text: str | None
    trimmed: bool
    collapsed: bool


def is_empty_rationale(text: str) -> bool:
    """True when nothing but the prompt echo (or a torn piece of it) is left."""
    core = re.sub(re.escape(_ECHO), "", text.strip(), flags=re.I).strip()
    return not core or _ECHO.startswith(core.lower())


def clean_llama_rationale(raw: str) -> CleanedRationale:
    """Cut runaway continuations and collapse repeated lines; None if empty."""
    m = _RUNAWAY.search(raw)
    trimmed = m is not None
    text = raw[: m.start()] if m else raw
    kept: list[str] = []
    last = None
    for line in text.split("\n"):
        key = line.strip()
        if key and key == last:
            continue
        if key:
            last = key
        kept.append(line)
    collapsed = len(kept) < len(text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip()
    return CleanedRationale(None if is_empty_rationale(text) else text, trimmed, collapsed)

