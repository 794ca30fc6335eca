"""The answer of a rationale-then-answer generation: the text after the separator.

    parsed = parse_generation("3 * 4 = 12. ... So the answer is: 14")
    parsed.answer     # "14"; None when the separator is missing
    parsed.rationale  # "3 * 4 = 12. ..."

The separator is `data.rationale_then_answer.SEPARATOR`, matched exactly
(case and the colon included: that is what every training target holds).
Its *last* occurrence splits the text, since a teacher's rationale may itself
contain the phrase and the trained layout puts ours last. A generation
without the separator has no answer (None) and is scored as wrong; one with
nothing after it has the empty answer, also wrong.
"""

from __future__ import annotations

from typing import NamedTuple

from tinyllm_jax.data.rationale_then_answer import SEPARATOR


class ParsedGeneration(NamedTuple):
    rationale: str
    answer: str | None  # None: no separator in the text


def parse_generation(text: str, separator: str = SEPARATOR) -> ParsedGeneration:
    """Split a generated text into (rationale, answer) at the last separator."""
    at = text.rfind(separator)
    if at < 0:
        return ParsedGeneration(text.strip(), None)
    return ParsedGeneration(text[:at].strip(), text[at + len(separator):].strip())
