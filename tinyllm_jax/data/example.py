"""The one record type every reader produces and every consumer reads."""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping, Sequence

LETTERS = string.ascii_lowercase


def format_input(question: str, choices: Sequence[str]) -> str:
    """The student's input text: the question followed by lettered options.

    Same layout as the teachers' `Q:` blocks in the published TinyLLM files,
    so a student sees what the teachers saw.
    """
    options = "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return f"{question}\nAnswer Choices:\n{options}"


@dataclasses.dataclass(frozen=True)
class Example:
    """A multiple-choice question joined with every teacher's rationale.

    `rationales[t]` is None when teacher `t` has no usable rationale for this
    example (missing, empty, or masked because it disagreed with gold); the
    task for that teacher then gets loss weight 0, never a made-up target.
    """

    id: str
    question: str
    choices: tuple[str, ...]
    answer: str
    rationales: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    teacher_answers: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    label_source: str = "gold"  # "gold" or "teacher"

    @property
    def input(self) -> str:
        return format_input(self.question, self.choices)

    @property
    def answer_index(self) -> int:
        return self.choices.index(self.answer)
