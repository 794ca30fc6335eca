"""The answer a teacher states, as one of the question's choices.

- FLAN's "(x) text" maps by letter to the question file's choice; when the
  text after the letter disagrees with that choice the letter wins
  [flan/answer_text_mismatch].
- LLaMA's answer is taken only from explicit phrases ("the answer is (c)",
  "option (b) is correct", "Answer: d") in its cleaned text; two different
  letters give no answer (the caller counts it as llama/ambiguous_answer).
- A store's `teacher_answer` may be a letter ("b", "(b)") or the choice text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tinyllm_jax.data.example import LETTERS
from tinyllm_jax.data.report import DataReport

_LETTER = r"(?:\(([a-z])\)|\b([a-z])(?=\s*[.,;:)]|[ \t]*$))"
_ANSWER_PATTERNS = [
    re.compile(p, re.I | re.M)
    for p in (
        r"\banswer\s+(?:is|would be|should be)\s*:?\s*(?:option\s+)?" + _LETTER,
        r"\b(?:correct|right|best)\s+(?:option|choice)\s+is\s*:?\s*" + _LETTER,
        r"\boption\s+" + _LETTER + r"\s+is\s+(?:the\s+)?(?:correct|right|best|answer)",
        r"^\s*answer\s*:\s*" + _LETTER,
    )
]


def fold_whitespace(text: str) -> str:
    """`text` with every whitespace run folded to one space, ends stripped.

    The published files disagree on runs of spaces and trailing blanks (82
    riddle-train gold answers end in spaces the Q: blocks drop), so question,
    choice and answer texts are compared in this form.
    """
    return " ".join(text.split())


def stated_letter(text: str, n_choices: int) -> tuple[str | None, bool]:
    """The single option letter a free-text rationale commits to, if any.

    Returns (letter, ambiguous): ambiguous is True when the text names two
    different valid letters, in which case the letter is None.
    """
    letters = set()
    for pattern in _ANSWER_PATTERNS:
        for m in pattern.finditer(text):
            letter = (m.group(1) or m.group(2)).lower()
            if LETTERS.index(letter) < n_choices:
                letters.add(letter)
    if len(letters) == 1:
        return letters.pop(), False
    return None, len(letters) > 1


def resolve_answer(value: str, choices: Sequence[str]) -> str | None:
    """A teacher answer given as a letter ("b", "(b)") or as choice text ->
    that choice's exact text, else None."""
    # Text first: a choice may itself be a single letter ("A", "B" ...).
    if value in choices:
        return value
    for c in choices:
        if fold_whitespace(c) == fold_whitespace(value):
            return c
    m = re.fullmatch(r"\(?([A-Za-z])\)?[.]?", value.strip())
    if m:
        i = LETTERS.index(m.group(1).lower())
        if i < len(choices):
            return choices[i]
    return None


def flan_answer(
    letter: str | None, text: str | None, choices: Sequence[str], report: DataReport
) -> str | None:
    """FLAN-T5's stated answer ("(letter) text" after "Thus, the answer is")
    as one of `choices`, or None when it names none of them."""
    if letter is not None and LETTERS.index(letter) < len(choices):
        answer = choices[LETTERS.index(letter)]
        if text is not None and fold_whitespace(text) != fold_whitespace(answer):
            # The letter is what the teacher committed to; the text after it
            # has been seen cut short, so the letter wins.
            report.add("flan/answer_text_mismatch")
        return answer
    if text:
        return resolve_answer(text, choices)
    return None
