"""The label options, shared by the TinyLLM reader, TFDS and the synthetic task.

Each count goes into the DataReport under the key in brackets.

- label_source="teacher": majority of the requested teachers' stated answers;
  a tie goes to the earliest teacher in `teachers` order among the tied
  answers [label_tie_broken_by_teacher_order]; no stated answer at all keeps
  gold [label_kept_gold_no_teacher_answer]; a changed label [relabelled_from_teacher].
- drop_disagreeing=True masks a rationale whose teacher's stated answer
  differs from the label the student is trained on (gold unless
  label_source="teacher") [<t>/masked_disagreeing]; a teacher with no stated
  answer is not masked [<t>/no_stated_answer]. Disagreement with the
  gold/file label is always counted [<t>/disagrees_with_gold].
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

from tinyllm_jax.data.errors import check_choice
from tinyllm_jax.data.example import Example
from tinyllm_jax.data.report import DataReport

LABEL_SOURCES = ("gold", "teacher")


def apply_label_options(
    examples: Sequence[Example],
    teachers: Sequence[str],
    *,
    label_source: str = "gold",
    drop_disagreeing: bool = False,
    report: DataReport | None = None,
) -> list[Example]:
    """Relabel from teachers and/or mask disagreeing rationales (see module doc)."""
    check_choice(label_source, LABEL_SOURCES, "label_source")
    report = report if report is not None else DataReport()
    out = []
    for ex in examples:
        stated = {t: ex.teacher_answers.get(t) for t in teachers}
        for t, a in stated.items():
            if a is None:
                report.add(f"{t}/no_stated_answer")
            elif a != ex.answer:
                report.add(f"{t}/disagrees_with_gold")
        answer, source = ex.answer, ex.label_source
        if label_source == "teacher":
            votes = collections.Counter(a for a in stated.values() if a is not None)
            if not votes:
                report.add("label_kept_gold_no_teacher_answer")
            else:
                top = max(votes.values())
                tied = {a for a, n in votes.items() if n == top}
                if len(tied) > 1:
                    report.add("label_tie_broken_by_teacher_order")
                answer = next(a for a in stated.values() if a in tied)
                source = "teacher"
                if answer != ex.answer:
                    report.add("relabelled_from_teacher")
        rationales = {t: ex.rationales.get(t) for t in teachers}
        if drop_disagreeing:
            for t in teachers:
                if rationales[t] is not None and stated[t] is not None and stated[t] != answer:
                    rationales[t] = None
                    report.add(f"{t}/masked_disagreeing")
        out.append(dataclasses.replace(
            ex, answer=answer, label_source=source, rationales=rationales, teacher_answers=stated
        ))
    return out
