"""One split of a TinyLLM-layout dataset, joined with its teachers, as Examples.

`read_split` is the entry point. The published files (parsed by
tinyllm_files.py) carry no ids, so teacher rows are joined to questions by
position and every row's `Q:` block is checked against the question file; a
shifted or foreign chunk fails loudly instead of pairing rationales with the
wrong questions. Each count goes into the DataReport under the key in brackets.

- Rationale files shorter or longer than the question file are a DataError,
  not a counted skip: position is the only link, so a count mismatch means the
  alignment itself cannot be trusted.
- A missing question file (PIQA train) is recovered from the teachers' `Q:`
  blocks; FLAN's stated answer is the only label, so those examples carry
  label_source="teacher" and ids "<name>-<split>-<row>" [recovered_from_teacher_files].
- With store_dir, a teacher whose `<store_dir>/<dataset>/<teacher>/<split>.jsonl`
  exists is read from there (joined by id, see teacher_outputs.py) and wins
  over a built-in name. Its records' question hashes must match the
  questions (`store_mismatch`: "refuse" or "drop", see provenance.py).
- The label options (label_source, drop_disagreeing) are labels.py's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tinyllm_jax.data.errors import DataError, check_choice
from tinyllm_jax.data.example import Example
from tinyllm_jax.data.labels import LABEL_SOURCES, apply_label_options
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.data.stated_answers import flan_answer, fold_whitespace
from tinyllm_jax.data.store import StoreFile, has_store_file, read_store, store_path
from tinyllm_jax.data.teacher_outputs import TeacherOutput, file_outputs, store_outputs
from tinyllm_jax.data.tinyllm_files import (
    BUILTIN_TEACHERS,
    QUESTION_FORMAT,
    SPLITS,
    Question,
    TeacherRow,
    check_chunks_belong_to_split,
    question_path,
    read_questions,
    read_teacher_rows,
    teacher_chunk_paths,
)


def _verify_alignment(questions: Sequence[Question], rows: Sequence[TeacherRow], qpath: Path) -> None:
    if len(rows) != len(questions):
        last = rows[-1].path if rows else qpath.parent / "llm"
        raise DataError(
            f"teacher files hold {len(rows)} rows but {qpath} holds {len(questions)} questions",
            path=last,
            expected="one teacher string per question, in question-file order",
        )
    for q, r in zip(questions, rows):
        if fold_whitespace(q.question) != fold_whitespace(r.question):
            raise DataError(
                f"{r.where()}: the Q: block's question {r.question[:80]!r} does not match "
                f"{qpath.name} row {q.row} (id {q.id!r}): {q.question[:80]!r}",
                path=r.path, row=r.row, field="question",
                expected="teacher strings in the same order as the question file",
            )
        if [fold_whitespace(c) for c in q.choices] != [fold_whitespace(c) for c in r.choices]:
            raise DataError(
                f"{r.where()}: the Q: block's choices {list(r.choices)!r} do not match "
                f"{qpath.name} row {q.row} (id {q.id!r}): {list(q.choices)!r}",
                path=r.path, row=r.row, field="choices",
                expected="teacher strings in the same order as the question file",
            )


def _recover_questions(
    rows: Sequence[TeacherRow], dataset: str, split: str, report: DataReport
) -> list[Question]:
    questions = []
    for r in rows:
        answer = flan_answer(r.flan_letter, r.flan_text, r.choices, DataReport())
        if answer is None:
            report.add("dropped_unlabelled_recovered_rows")
            continue
        questions.append(Question(id=f"{dataset}-{split}-{r.row}", question=r.question,
                                  choices=r.choices, answer=answer, row=r.row))
    report.add("recovered_from_teacher_files", len(questions))
    report.note(
        f"{dataset}/{split}: no question file; {len(questions)} questions and choices recovered "
        "from the teachers' Q: blocks, labelled with FLAN-T5's stated answer (no gold exists)"
    )
    return questions


def available_teachers(
    root: str | os.PathLike[str], dataset: str, split: str,
    store_dir: str | os.PathLike[str] | None = None,
) -> tuple[str, ...]:
    """Built-in TinyLLM teachers plus every store teacher with a file for this split."""
    names = list(BUILTIN_TEACHERS)
    if store_dir is not None and (Path(store_dir) / dataset).is_dir():
        for d in sorted((Path(store_dir) / dataset).iterdir()):
            if has_store_file(store_path(store_dir, dataset, d.name, split)) and d.name not in names:
                names.append(d.name)
    return tuple(names)


def check_teachers(teachers: Any) -> tuple[str, ...]:
    """`teachers` as a tuple of distinct non-empty names, else a DataError.

    A bare string is refused rather than split: "flan" read as ("f", "l", ...)
    would fail later with a confusing unknown-teacher error.
    """
    if isinstance(teachers, str) or not isinstance(teachers, Sequence):
        raise DataError(f"teachers={teachers!r}", field="teachers",
                        expected="a sequence of teacher names, e.g. ('flan', 'llama')")
    seen = set()
    for t in teachers:
        if not isinstance(t, str) or not t or t in seen:
            raise DataError(f"bad or repeated teacher name {t!r} in {list(teachers)!r}",
                            field="teachers", expected="distinct non-empty names")
        seen.add(t)
    return tuple(teachers)


def _build_examples(
    questions: Sequence[Question], outputs: Mapping[str, Sequence[TeacherOutput]],
    teachers: Sequence[str], label_source: str,
) -> list[Example]:
    return [
        Example(
            id=q.id, question=q.question, choices=q.choices, answer=q.answer,
            rationales={t: outputs[t][i].rationale for t in teachers},
            teacher_answers={t: outputs[t][i].answer for t in teachers},
            label_source=label_source,
        )
        for i, q in enumerate(questions)
    ]


def read_raw_split(
    root: str | os.PathLike[str],
    dataset: str,
    split: str,
    teachers: Sequence[str],
    *,
    store_dir: str | os.PathLike[str] | None = None,
    store_mismatch: str = "refuse",
    report: DataReport | None = None,
) -> list[Example]:
    """Examples with the file's labels and every requested teacher's
    rationale unmasked: what `read_split` returns before the label options.
    The TFDS builders store this form so options can change without a rebuild."""
    report = report if report is not None else DataReport()
    teachers = check_teachers(teachers)
    check_choice(split, SPLITS, "split")
    root = Path(root)
    if not (root / dataset).is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(f"no dataset directory {dataset!r}", path=root / dataset,
                        expected=f"one of {present}" if present else "a TinyLLM data root")
    stores: dict[str, StoreFile] = {}
    for t in teachers:
        if store_dir is not None and has_store_file(store_path(store_dir, dataset, t, split)):
            stores[t] = read_store(store_path(store_dir, dataset, t, split))
        elif t in BUILTIN_TEACHERS:
            if store_dir is not None and store_path(store_dir, dataset, t, split).parent.is_dir():
                # The store has this teacher for other splits only: say that
                # this split's rationales come from somewhere else.
                report.note(f"{t}: no {store_path(store_dir, dataset, t, split)}; "
                            "using the published TinyLLM files for this split")
        else:
            where = (f"; no store file {store_path(store_dir, dataset, t, split)}"
                     if store_dir is not None else "")
            raise DataError(
                f"unknown teacher {t!r} for {dataset}/{split}{where}", field="teachers",
                expected=f"one of {list(available_teachers(root, dataset, split, store_dir))}",
            )
    qpath = question_path(root, dataset, split)
    file_teachers = [t for t in teachers if t not in stores]
    # A dangling symlink is a broken question file, not an absent one (which
    # would recover the questions from the teacher files instead).
    has_questions = qpath.exists() or qpath.is_symlink()
    rows = None
    if file_teachers or not has_questions:
        if not has_questions and not teacher_chunk_paths(root, dataset, split):
            raise DataError("question file not found", path=qpath, expected=QUESTION_FORMAT)
        rows = read_teacher_rows(root, dataset, split, report)
    if has_questions:
        questions = read_questions(qpath, report)
        if rows is not None:
            _verify_alignment(questions, rows, qpath)
        label_source = "gold"
    else:
        check_chunks_belong_to_split(root, dataset, split)
        questions = _recover_questions(rows, dataset, split, report)
        label_source = "teacher"
    outputs = {
        t: (store_outputs(t, stores[t], questions, qpath, report, mismatch=store_mismatch)
            if t in stores
            else file_outputs(t, questions, rows, report))
        for t in teachers
    }
    if "llama" in file_teachers and all(r.llama_raw is None for r in rows):
        report.note(f"{dataset}/{split}: the teacher files hold no LLaMA rationales")
    return _build_examples(questions, outputs, teachers, label_source)


def read_split(
    root: str | os.PathLike[str],
    dataset: str,
    split: str,
    teachers: Sequence[str],
    *,
    label_source: str = "gold",
    drop_disagreeing: bool = False,
    store_dir: str | os.PathLike[str] | None = None,
    store_mismatch: str = "refuse",
) -> tuple[list[Example], DataReport]:
    """Read one split of a TinyLLM-layout dataset joined with its teachers.

    `teachers` names the rationale sources in task order: "flan" / "llama"
    from the published files, or any teacher with a file in `store_dir`.
    `store_mismatch` says what a store record generated for another question
    does: "refuse" (a DataError) or "drop" (counted).
    Returns the examples and a report counting every skip, mask and relabel.
    """
    check_choice(label_source, LABEL_SOURCES, "label_source")
    report = DataReport()
    raw = read_raw_split(root, dataset, split, teachers, store_dir=store_dir,
                         store_mismatch=store_mismatch, report=report)
    examples = apply_label_options(raw, check_teachers(teachers), label_source=label_source,
                                   drop_disagreeing=drop_disagreeing, report=report)
    report.add("examples", len(examples))
    return examples, report
