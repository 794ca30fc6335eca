"""Which questions a rationale-store record was written for: its question hash.

Every record the teacher generator or the importer writes carries

    "question_hash": {"question": "<12 hex>", "choices": "<12 hex>", "answer": "<12 hex>"}

each the first 12 hex digits of the SHA-256 of the field's JSON text
(`json.dumps(value, ensure_ascii=False)`) after folding whitespace runs to one
space (the comparison `read_split` already uses between question files and
teacher strings): a whitespace-only edit does not invalidate a store, any
other edit does. The id is not hashed: records are joined by id, so it is
compared directly. One hash per record, not one per file, because stores
grow by appends and are generated for a prefix of a split (`max_examples`)
and resumed: each line stays self-describing, however the file was put
together, and a mismatch names the very record and field.

Joining a store onto questions (`teacher_outputs.store_outputs`) compares
every record's hash with the question of its id: a store generated for
other questions (another synthetic seed, an edited dataset) is refused, or
with `store_mismatch="drop"` its mismatching records are dropped and
counted. Records without the field (stores written before it existed) are
joined unchecked and counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tinyllm_jax.data.stated_answers import fold_whitespace

QUESTION_HASH = "question_hash"
HASHED_FIELDS = ("question", "choices", "answer")
# What joining does with a record whose question hash differs.
STORE_MISMATCH = ("refuse", "drop")
_DIGITS = 12


def _digest(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_DIGITS]


def question_hash(question: str, choices: Sequence[str], answer: str) -> dict[str, str]:
    """The `question_hash` value a store record carries for this question."""
    return {
        "question": _digest(fold_whitespace(question)),
        "choices": _digest([fold_whitespace(c) for c in choices]),
        "answer": _digest(fold_whitespace(answer)),
    }


def is_question_hash(value: Any) -> bool:
    """Whether `value` has the shape `question_hash` writes."""
    return (isinstance(value, Mapping) and set(value) == set(HASHED_FIELDS)
            and all(isinstance(v, str) and v for v in value.values()))


def hash_differences(recorded: Mapping[str, str], question: str, choices: Sequence[str],
                     answer: str) -> list[str]:
    """The fields ("question", "choices", "answer") whose hash differs."""
    now = question_hash(question, choices, answer)
    return [f for f in HASHED_FIELDS if recorded[f] != now[f]]


def describe_differences(fields: Sequence[str]) -> str:
    """'the question and the choices differ' for ["question", "choices"]."""
    names = [f"the {f}" for f in fields]
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{joined} {'differ' if len(fields) > 1 or fields[0] == 'choices' else 'differs'}"
