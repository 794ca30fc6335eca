"""Each teacher's (rationale, stated answer) per question, from either source.

`file_outputs` reads a built-in teacher ("flan", "llama") from the published
teacher strings, already paired with their questions by row; `store_outputs`
joins a rationale store file onto the questions by id. Each count goes into
the DataReport under the key in brackets:

- Empty rationale -> None [<t>/empty_rationale]; no rationale at all (PIQA's
  LLaMA, an id missing from a store file) -> None [<t>/missing_rationale].
  Questions absent from a store are missing, not an error: a partly generated
  store is normal.
- A store line whose rationale is null with an `error` is a failed
  generation [<t>/generation_error]; a torn last line (a crash mid-write) is
  ignored [<t>/store_partial_last_line]; a `teacher_answer` that names no
  choice [<t>/unparsed_answer]. Unknown or duplicate ids are DataErrors.
- A store record's `question_hash` (provenance.py) must match the question of
  its id: otherwise the store was generated for other questions and is
  refused naming the file, the first such line and what differs, or with
  mismatch="drop" those records are dropped [<t>/question_mismatch_dropped]
  (and counted missing). Records without one (older stores) are joined
  unchecked [<t>/question_hash_absent], with a note.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from tinyllm_jax.data.errors import DataError, check_choice
from tinyllm_jax.data.example import LETTERS
from tinyllm_jax.data.provenance import (
    QUESTION_HASH,
    STORE_MISMATCH,
    describe_differences,
    hash_differences,
    is_question_hash,
)
from tinyllm_jax.data.rationale_cleaning import clean_llama_rationale
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.data.stated_answers import flan_answer, resolve_answer, stated_letter
from tinyllm_jax.data.store import StoreFile, StoreRecord
from tinyllm_jax.data.tinyllm_files import Question, TeacherRow


@dataclasses.dataclass(frozen=True)
class TeacherOutput:
    """One teacher's rationale and stated answer (a choice's text) for one question."""

    rationale: str | None
    answer: str | None


def file_outputs(
    teacher: str, questions: Sequence[Question], rows: Sequence[TeacherRow], report: DataReport
) -> list[TeacherOutput]:
    """A built-in teacher's outputs, in question order, from the rows at the questions' rows."""
    by_row = {r.row: r for r in rows}
    out = []
    for q in questions:
        r = by_row[q.row]
        if teacher == "flan":
            rationale = r.flan_rationale or None
            if rationale is None:
                report.add("flan/empty_rationale")
            answer = flan_answer(r.flan_letter, r.flan_text, q.choices, report)
            out.append(TeacherOutput(rationale, answer))
            continue
        if r.llama_raw is None:
            report.add("llama/missing_rationale")
            out.append(TeacherOutput(None, None))
            continue
        cleaned = clean_llama_rationale(r.llama_raw)
        if cleaned.trimmed:
            report.add("llama/trimmed_runaway")
        if cleaned.collapsed:
            report.add("llama/collapsed_repeats")
        if cleaned.text is None:
            report.add("llama/empty_rationale")
            out.append(TeacherOutput(None, None))
            continue
        letter, ambiguous = stated_letter(cleaned.text, len(q.choices))
        if ambiguous:
            report.add("llama/ambiguous_answer")
        answer = None if letter is None else q.choices[LETTERS.index(letter)]
        out.append(TeacherOutput(cleaned.text, answer))
    return out


def store_outputs(
    teacher: str,
    store: StoreFile,
    questions: Sequence[Question],
    question_source: str | os.PathLike[str],
    report: DataReport,
    *,
    mismatch: str = "refuse",
) -> list[TeacherOutput]:
    """Join one store file onto the questions by id, in question order.

    `mismatch` says what a record generated for another question than the
    one of its id does: "refuse" (a DataError) or "drop" (counted)."""
    check_choice(mismatch, STORE_MISMATCH, "store_mismatch")
    known = {q.id: q for q in questions}
    seen: dict[str, int] = {}
    got: dict[str, TeacherOutput] = {}
    foreign: list[tuple[StoreRecord, list[str]]] = []
    unchecked = 0
    if store.partial_tail is not None:
        report.add(f"{teacher}/store_partial_last_line")
        report.note(f"{store.path}: ignored an unterminated last line (a write cut short)")
    for rec in store.records:
        rid = rec.id
        if rid not in known:
            raise DataError(f"id {rid!r} is not in {os.fspath(question_source)}", path=store.path,
                            line=rec.line, field="id", expected="ids of the split's questions")
        if rid in seen:
            raise DataError(f"duplicate id {rid!r} (first on line {seen[rid]})", path=store.path,
                            line=rec.line, field="id", expected="one line per question")
        seen[rid] = rec.line
        recorded = rec.data.get(QUESTION_HASH)
        if recorded is None:
            unchecked += 1
        elif not is_question_hash(recorded):
            raise DataError(f"bad {QUESTION_HASH} {recorded!r}", path=store.path, line=rec.line,
                            field=QUESTION_HASH,
                            expected="an object with 'question', 'choices' and 'answer' hashes")
        else:
            q = known[rid]
            differ = hash_differences(recorded, q.question, q.choices, q.answer)
            if differ:
                foreign.append((rec, differ))
                continue
        got[rid] = _record_output(teacher, rec, known[rid], store, report)
    if foreign:
        _foreign_records(teacher, store, foreign, question_source, mismatch, report)
    if unchecked:
        report.add(f"{teacher}/question_hash_absent", unchecked)
        report.note(
            f"{store.path}: {unchecked} record(s) carry no {QUESTION_HASH} (a store written "
            "before it was recorded), so nothing shows they were generated for these "
            "questions; they are joined by id unchecked. Rerun its teacher generation (which "
            "adds the hash to records whose prompts still match) or re-import it with "
            "--overwrite to record it"
        )
    out = []
    for q in questions:
        if q.id not in got:
            report.add(f"{teacher}/missing_rationale")
        out.append(got.get(q.id, TeacherOutput(None, None)))
    return out


def _foreign_records(
    teacher: str, store: StoreFile, foreign: Sequence[tuple[StoreRecord, list[str]]],
    question_source: str | os.PathLike[str], mismatch: str, report: DataReport,
) -> None:
    rec, differ = foreign[0]
    summary = (f"{len(foreign)} of {len(store.records)} records were generated for other "
               f"questions than {os.fspath(question_source)} holds (first: id {rec.id!r}: "
               f"{describe_differences(differ)})")
    if mismatch == "refuse":
        raise DataError(
            f"{summary}; regenerate or re-import this store for these questions, or set "
            "config.data.store_mismatch='drop' to drop only those records",
            path=store.path, line=rec.line, field=QUESTION_HASH,
        )
    report.add(f"{teacher}/question_mismatch_dropped", len(foreign))
    report.note(f"{store.path}: {summary}; dropped (store_mismatch='drop')")


def _record_output(
    teacher: str, rec: StoreRecord, question: Question, store: StoreFile, report: DataReport
) -> TeacherOutput:
    if "rationale" not in rec.data:
        raise DataError("record has no 'rationale'", path=store.path, line=rec.line,
                        field="rationale", expected="a string or null")
    rationale = rec.data["rationale"]
    if rationale is not None and not isinstance(rationale, str):
        raise DataError(f"bad rationale {rationale!r}", path=store.path, line=rec.line,
                        field="rationale", expected="a string or null")
    if rationale is not None and not rationale.strip():
        rationale = None
    if rationale is None:
        # Teacher generation writes failures as lines with an `error`;
        # they are counted apart from rationales that came out empty.
        failed = rec.data.get("error") is not None
        report.add(f"{teacher}/{'generation_error' if failed else 'empty_rationale'}")
    raw_answer = rec.data.get("teacher_answer")
    if raw_answer is not None and not isinstance(raw_answer, str):
        raise DataError(f"bad teacher_answer {raw_answer!r}", path=store.path, line=rec.line,
                        field="teacher_answer", expected="choice text, a letter, or null")
    answer = None
    if raw_answer is not None:
        answer = resolve_answer(raw_answer, question.choices)
        if answer is None:
            report.add(f"{teacher}/unparsed_answer")
    return TeacherOutput(rationale, answer)
