"""Turn a teacher's generated text into (rationale, stated answer), or a reason.

Generated text is messy in known ways (see ../shared/README.md on the LLaMA
rationales): echoes of the prompt, the prompt's "Let's think step by step."
repeated, runaway continuations that start the next question ("# 17.
Question: ..."), chat markup, and answers stated as "(d)", "d)" or the option
text. Nothing is dropped silently: an output that leaves no rationale gets an
`error`, and every cleanup step leaves a `note`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from tinyllm_jax.data.example import LETTERS

# Where a continuation stops being this answer: a new question block, a new
# numbered item, or another speaker's turn in chat markup.
_RUNAWAY = re.compile(
    r"\n\s*(?:Question|Q)\s*:"
    r"|\bQuestion\s*:"
    r"|\n\s*(?:Options|Answer Choices)\s*:"
    r"|\n\s*Rationale\s*:"
    r"|(?:^|\n[\s#]*|\s)#+\s*\d+\s*\."
    r"|\[/?INST\]|<\|[A-Za-z_]+\|>|</?s>"
    r"|\n\s*(?:User|Human|Assistant)\s*:",
)
_LEADER = re.compile(r"^\s*(?:Rationale\s*:|Let'?s think step by step\.?)", re.IGNORECASE)
_STATEMENT = re.compile(
    r"(?:\b(?:thus|so|therefore|hence)\s*,?\s+)?"
    r"(?:\bthe\s+(?:correct\s+|best\s+|final\s+|right\s+)?answer\s+(?:is|would\s+be|should\s+be)"
    r"|\banswer\s*(?=:))"
    r"\s*:?\s*",
    re.IGNORECASE,
)
_LETTER = re.compile(r"\(([A-Za-z])\)|([A-Za-z])\)|([A-Za-z])(?=\s*(?:\.|,|$))")
_DANGLING = re.compile(r"(?:\b(?:thus|so|therefore|hence)\s*,?\s*)$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Parsed:
    """`rationale` is None exactly when `error` says why."""

    rationale: str | None
    teacher_answer: str | None
    answer_letter: str | None
    error: str | None
    notes: tuple[str, ...] = ()


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _stated_choice(after: str, choices: Sequence[str]) -> tuple[int, int] | None:
    """(choice index, characters consumed) for the text after "the answer is"."""
    letter = _LETTER.match(after)
    if letter:
        index = LETTERS.index(next(g for g in letter.groups() if g).lower())
        consumed = letter.end()
        # "(d) plants sprouting..." restates the option; consume it too.
        if index < len(choices):
            rest = after[consumed:]
            stripped = rest.lstrip()
            if _normalize(stripped[: len(choices[index]) + 2]).startswith(
                _normalize(choices[index])
            ):
                consumed += len(rest) - len(stripped) + len(choices[index])
        return index, consumed
    head = _normalize(after[:200])
    best = None
    for index, choice in enumerate(choices):
        norm = _normalize(choice)
        longer = best is None or len(norm) > len(_normalize(choices[best]))
        # Whole words only: choice "1" must not match "the answer is 12".
        whole = head == norm or head.startswith(norm + " ")
        if norm and whole and longer:
            best = index
    if best is None:
        return None
    return best, min(len(after), len(choices[best]))


def _end_of_sentence(text: str, pos: int) -> int:
    """Skip the closing punctuation of a statement."""
    match = re.match(r"[\s.!]*", text[pos:])
    return pos + (match.end() if match else 0)


def strip_echo(text: str, echoes: Sequence[str]) -> tuple[str, bool]:
    """Remove a copy of the prompt (or of its question block) at the start."""
    body = text.lstrip()
    for echo in echoes:
        echo = echo.strip()
        if echo and body.startswith(echo):
            return body[len(echo) :], True
    return text, False


def parse_output(
    text: str, choices: Sequence[str], *, echoes: Sequence[str] = ()
) -> Parsed:
    """Parse one generation; `echoes` are prompt texts the model may repeat."""
    notes: list[str] = []
    if not text or not text.strip():
        return Parsed(None, None, None, "empty_output")
    body, echoed = strip_echo(text, echoes)
    if echoed:
        notes.append("echo_stripped")
    while True:
        lead = _LEADER.match(body)
        if not lead:
            break
        body = body[lead.end() :]
    cut = _RUNAWAY.search(body)
    if cut:
        if body[cut.end() :].strip():
            notes.append("runaway_cut")
        body = body[: cut.start()]
    if not body.strip():
        return Parsed(None, None, None, "no_rationale_after_cleanup", tuple(notes))

    statements = []
    for match in _STATEMENT.finditer(body):
        stated = _stated_choice(body[match.end() :], choices)
        if stated is not None:
            index, consumed = stated
            statements.append((match.start(), _end_of_sentence(body, match.end() + consumed), index))
    letter = answer = None
    rationale = body
    if statements:
        # The last statement is the teacher's final word; the rationale is the
        # reasoning before the first one, or after it when the answer led.
        index = statements[-1][2]
        if len({s[2] for s in statements}) > 1:
            notes.append("answer_changed")
        first_start, first_end, _ = statements[0]
        if body[:first_start].strip():
            rationale = body[:first_start]
            if body[statements[-1][1] :].strip():
                notes.append("tail_dropped")
        else:
            end = statements[1][0] if len(statements) > 1 else len(body)
            rationale = body[first_end:end]
        letter = LETTERS[index]
        if index < len(choices):
            answer = choices[index]
        else:
            notes.append("answer_out_of_range")
    elif _STATEMENT.search(body):
        notes.append("answer_not_a_choice")
    else:
        notes.append("no_answer_stated")
    rationale = _DANGLING.sub("", rationale.strip()).strip()
    if not rationale:
        return Parsed(None, answer, letter, "no_rationale_after_cleanup", tuple(notes))
    return Parsed(rationale, answer, letter, None, tuple(notes))
