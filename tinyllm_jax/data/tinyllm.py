"""Reader for the published TinyLLM layout and for this project's rationale store.

Layout (see ../shared/README.md):

    <root>/<name>/<name>_{train,valid,test}.json      questions, JSONL or a JSON array
    <root>/<name>/llm/{split}_CoT_<k>.json             teacher strings, 500 per chunk

Each teacher string is `<FLAN-T5 rationale> Thus, the answer is (x) <text>`
then `\\n\\nQ: <question>\\nAnswer Choices:\\n(a) ...` then, except in PIQA,
` llama rationale: <LLaMA-2 rationale>`. The files carry no ids, so rows are
joined by position and every row's `Q:` block is checked against the question
file; a shifted or foreign chunk fails loudly instead of pairing rationales
with the wrong questions.

Decisions (each counted in the DataReport under the key in brackets):

- FLAN rationale = the text before "Thus, the answer is", without that
  sentence, as in the reference distilling-step-by-step / TinyLLM code: the
  answer is already the target of the answer task, and a rationale target
  that ends by restating it would teach the rationale heads to emit answers.
- LLaMA rationale = the text after "llama rationale:", cut at the first line
  that starts a new block ("#", "Question:", "Q:", "Options:", "Answer
  Choices:", a code fence) [llama/trimmed_runaway], with immediately repeated
  lines collapsed to one [llama/collapsed_repeats]. A rationale with nothing
  left beyond the prompt echo "Let's think step by step." is empty.
- Empty rationale -> None [<t>/empty_rationale]; no rationale at all (PIQA's
  LLaMA, an id missing from a store file) -> None [<t>/missing_rationale].
- Stated answers: FLAN's "(x) text" maps by letter to the question file's
  choice. LLaMA's answer is taken only from explicit phrases ("the answer is
  (c)", "option (b) is correct", "Answer: d") in the kept text; two different
  letters -> None [llama/ambiguous_answer]. No answer -> [<t>/no_stated_answer].
- Rationale files shorter or longer than the question file are a DataError,
  not a counted skip: position is the only link, so a count mismatch means the
  alignment itself cannot be trusted.
- A missing question file (PIQA train) is recovered from the teachers' `Q:`
  blocks; FLAN's stated answer is the only label, so those examples carry
  label_source="teacher" and ids "<name>-<split>-<row>" [recovered_from_teacher_files].
- label_source="teacher": majority of the requested teachers' stated answers;
  a tie goes to the earliest teacher in `teachers` order among the tied
  answers [label_tie_broken_by_teacher_order]; no stated answer at all keeps
  gold [label_kept_gold_no_teacher_answer]; a changed label [relabelled_from_teacher].
- drop_disagreeing=True masks a rationale whose teacher's stated answer
  differs from the label the student is trained on (gold unless
  label_source="teacher") [<t>/masked_disagreeing]; a teacher with no stated
  answer is not masked. Disagreement with the gold/file label is always
  counted [<t>/disagrees_with_gold].
- With store_dir, a teacher whose `<store_dir>/<dataset>/<teacher>/<split>.jsonl`
  exists is read from there (joined by id) and wins over a built-in name;
  unknown or duplicate ids there are DataErrors, questions absent from the
  store are counted as missing rationales (a partly generated store is normal),
  lines whose rationale is null with an `error` as [<t>/generation_error], and
  a torn last line (a crash mid-write) as [<t>/store_partial_last_line].
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.example import LETTERS, Example
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.data.store import StoreFile, read_store, store_path

SPLITS = ("train", "valid", "test")
CHUNK_SIZE = 500
BUILTIN_TEACHERS = ("flan", "llama")
LABEL_SOURCES = ("gold", "teacher")

_Q_MARK = "\n\nQ: "
_CHOICES_MARK = "\nAnswer Choices:\n"
_LLAMA_MARK = "llama rationale:"
_THUS = "Thus, the answer is"
_ECHO = "let's think step by step."
_CHUNK_RE = re.compile(r"^(train|valid|test)_CoT_(\d+)\.json$")
_QUESTION_FORMAT = "records {id, question, choices: [...], answer} where answer is one of choices"


def _norm(text: str) -> str:
    # The published files disagree on runs of spaces and trailing blanks
    # (82 riddle-train gold answers end in spaces the Q: blocks drop), so text
    # is compared with all whitespace runs folded.
    return " ".join(text.split())


# ----------------------------------------------------------------------------
# Question files
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Question:
    """One validated question record; `row` is its 0-based position."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: str
    row: int


def question_path(root: str | os.PathLike[str], dataset: str, split: str) -> Path:
    return Path(root) / dataset / f"{dataset}_{split}.json"


def _load_records(path: Path) -> list[tuple[Any, int | None]]:
    """(record, line) pairs from a JSON-lines file or a JSON array file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(
            "question file not found", path=path, expected=_QUESTION_FORMAT
        ) from None
    except UnicodeDecodeError:
        raise DataError("not valid UTF-8", path=path, expected="a UTF-8 JSON file") from None
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path=path, expected="a readable file") from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(
                f"malformed JSON array: {e.msg} at column {e.colno}",
                path=path,
                line=e.lineno,
                expected="one JSON array of records or one JSON object per line",
            ) from None
        return [(record, None) for record in data]
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((json.loads(line), number))
        except json.JSONDecodeError as e:
            raise DataError(
                f"malformed JSON line: {e.msg} at column {e.colno}",
                path=path,
                line=number,
                expected="one JSON object per line (or the whole file one JSON array)",
            ) from None
    return records


def _check_question(
    record: Any, path: Path, row: int, line: int | None, report: DataReport
) -> Question:
    def fail(field: str | None, message: str, expected: str) -> DataError:
        return DataError(message, path=path, line=line, row=row, field=field, expected=expected)

    if not isinstance(record, dict):
        raise fail(None, f"a JSON {type(record).__name__} where a record belongs", _QUESTION_FORMAT)
    for key in ("id", "question", "choices", "answer"):
        if key not in record:
            raise fail(key, f"record has no {key!r}", _QUESTION_FORMAT)
    rid = record["id"]
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
        raise fail("id", f"bad id {rid!r}", "a non-empty string or an integer")
    question = record["question"]
    if not isinstance(question, str) or not question.strip():
        raise fail("question", f"bad question {question!r}", "a non-empty string")
    choices = record["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise fail("choices", f"bad choices {choices!r}", "a list of at least two strings")
    if len(choices) > len(LETTERS):
        raise fail("choices", f"{len(choices)} choices", f"at most {len(LETTERS)} (one per letter)")
    for i, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            raise fail("choices", f"choice {i} is {choice!r}", "a non-empty string")
    answer = record["answer"]
    if not isinstance(answer, str):
        raise fail("answer", f"bad answer {answer!r}", "the text of one of the choices")
    hits = [c for c in choices if c == answer]
    if not hits:
        # Hand-edited files lose trailing blanks; accept a whitespace-only
        # difference but count it.
        hits = [c for c in choices if _norm(c) == _norm(answer)]
        if hits:
            report.add("answer_matched_after_whitespace_normalisation")
    if not hits:
        raise fail("answer", f"answer {answer!r} is not among the choices {choices!r}",
                   "the text of one of the choices")
    if len(hits) > 1:
        raise fail("answer", f"answer {answer!r} matches more than one choice",
                   "choices that differ from each other")
    if len({_norm(c) for c in choices}) < len(choices):
        report.add("duplicate_choices")
    return Question(
        id=str(rid), question=question, choices=tuple(choices), answer=hits[0], row=row
    )


def read_questions(path: str | os.PathLike[str], report: DataReport | None = None) -> list[Question]:
    """Load and validate a question file (JSONL or one JSON array)."""
    path = Path(path)
    report = report if report is not None else DataReport()
    questions: list[Question] = []
    first_row: dict[str, int] = {}
    for row, (record, line) in enumerate(_load_records(path)):
        q = _check_question(record, path, row, line, report)
        if q.id in first_row:
            raise DataError(
                f"duplicate id {q.id!r} (first at row {first_row[q.id]})",
                path=path, line=line, row=row, field="id", expected="unique ids",
            )
        first_row[q.id] = row
        questions.append(q)
    if not questions:
        raise DataError("no records", path=path, expected=_QUESTION_FORMAT)
    return questions


# ----------------------------------------------------------------------------
# Teacher files
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TeacherRow:
    """One parsed teacher string, located by file, chunk and split row."""

    path: Path
    chunk: int
    row: int
    question: str
    choices: tuple[str, ...]
    flan_rationale: str
    flan_letter: str | None
    flan_text: str | None
    llama_raw: str | None
    stripped_prompt_line: bool = False

    def where(self) -> str:
        return f"chunk {self.chunk}, string {self.row - self.chunk * CHUNK_SIZE} of the chunk"


def teacher_chunk_paths(root: str | os.PathLike[str], dataset: str, split: str) -> list[Path]:
    """`{split}_CoT_<k>.json` files in chunk order (numeric, so 10 follows 9);
    a gap in the numbering is an error, since every later row would shift."""
    llm_dir = Path(root) / dataset / "llm"
    found: dict[int, Path] = {}
    if llm_dir.is_dir():
        for p in llm_dir.iterdir():
            m = _CHUNK_RE.match(p.name)
            if m and m.group(1) == split:
                found[int(m.group(2))] = p
    expected = sorted(found)
    if expected != list(range(len(expected))):
        missing = sorted(set(range(max(expected) + 1)) - set(expected))
        raise DataError(
            f"teacher chunks {missing} missing for split {split!r}",
            path=llm_dir,
            expected=f"{split}_CoT_0.json .. {split}_CoT_{max(expected)}.json without gaps",
        )
    return [found[k] for k in expected]


def _parse_choices(block: str, row: int, path: Path, where: str) -> tuple[tuple[str, ...], bool]:
    choices: list[str] = []
    stripped = False
    lines = block.split("\n")
    for i, line in enumerate(lines):
        letter = LETTERS[len(choices)] if len(choices) < len(LETTERS) else None
        if letter and (line.startswith(f"({letter}) ") or line == f"({letter})"):
            choices.append(line[4:])
        elif choices and line.startswith("A:") and all(not x.strip() for x in lines[i + 1:]):
            # Some splits (ARC test) end the block with the prompt's
            # "A: Let's think step by step." line; it is not a choice.
            stripped = True
            break
        elif choices:
            choices[-1] += "\n" + line
        else:
            raise DataError(
                f"{where}: Answer Choices block does not start with '(a) '",
                path=path, row=row, expected="'(a) <text>' lines after 'Answer Choices:'",
            )
    if len(choices) < 2:
        raise DataError(
            f"{where}: fewer than two answer choices in the Q: block",
            path=path, row=row, expected="'(a) ..' and '(b) ..' lines at least",
        )
    return tuple(choices), stripped


def parse_teacher_string(text: str, *, path: Path, chunk: int, row: int) -> TeacherRow:
    """Split one published teacher string into its parts (no cleaning yet)."""
    where = f"chunk {chunk}, string {row - chunk * CHUNK_SIZE} of the chunk"
    expected = "'<rationale> Thus, the answer is (x) ..\\n\\nQ: <question>\\nAnswer Choices:\\n(a) ..'"
    cut = text.find(_CHOICES_MARK)
    if cut < 0:
        raise DataError(f"{where}: no 'Answer Choices:' block", path=path, row=row,
                        expected=expected)
    head, rest = text[:cut], text[cut + len(_CHOICES_MARK):]
    # FLAN-T5's vocabulary has no newline, so its rationale cannot contain
    # "\n\nQ: "; the first one is the boundary even if the question has one.
    q = head.find(_Q_MARK)
    if q < 0:
        raise DataError(f"{where}: no '\\n\\nQ: ' before 'Answer Choices:'", path=path, row=row,
                        expected=expected)
    flan_part, question = head[:q], head[q + len(_Q_MARK):]
    letter = stated = None
    t = flan_part.rfind(_THUS)
    if t >= 0:
        rationale = flan_part[:t].strip()
        stated_part = flan_part[t + len(_THUS):].strip()
        m = re.match(r"\(([a-z])\)\s*(.*)$", stated_part, re.S)
        letter, stated = (m.group(1), m.group(2).strip()) if m else (None, stated_part)
    else:
        rationale = flan_part.strip()
    cut = rest.find(_LLAMA_MARK)
    if cut >= 0:
        block, llama_raw = rest[:cut], rest[cut + len(_LLAMA_MARK):]
        # The files join the parts with exactly one space.
        block = block[:-1] if block.endswith(" ") else block
    else:
        block, llama_raw = rest, None
    choices, stripped = _parse_choices(block, row, path, where)
    return TeacherRow(
        path=path, chunk=chunk, row=row, question=question, choices=choices,
        flan_rationale=rationale, flan_letter=letter, flan_text=stated, llama_raw=llama_raw,
        stripped_prompt_line=stripped,
    )


def read_teacher_rows(
    root: str | os.PathLike[str], dataset: str, split: str, report: DataReport | None = None
) -> list[TeacherRow]:
    """Every teacher string of a split, parsed, in row order."""
    report = report if report is not None else DataReport()
    paths = teacher_chunk_paths(root, dataset, split)
    if not paths:
        raise DataError(
            f"no teacher files for split {split!r}",
            path=Path(root) / dataset / "llm",
            expected=f"{split}_CoT_0.json, {split}_CoT_1.json, ... (JSON arrays of strings)",
        )
    rows: list[TeacherRow] = []
    for chunk, path in enumerate(paths):
        try:
            strings = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON: {e.msg} at column {e.colno}", path=path,
                            line=e.lineno, expected="a JSON array of strings") from None
        except UnicodeDecodeError:
            raise DataError("not valid UTF-8", path=path, expected="a UTF-8 JSON file") from None
        except OSError as e:
            raise DataError(f"cannot read: {e.strerror}", path=path,
                            expected="a readable file") from None
        if not isinstance(strings, list):
            raise DataError(f"a JSON {type(strings).__name__} at top level", path=path,
                            expected="a JSON array of strings")
        if chunk < len(paths) - 1 and len(strings) != CHUNK_SIZE:
            raise DataError(
                f"chunk {chunk} holds {len(strings)} strings", path=path,
                expected=f"{CHUNK_SIZE} (chunk {chunk} covers rows "
                f"{chunk * CHUNK_SIZE}..{chunk * CHUNK_SIZE + CHUNK_SIZE - 1}); only the last "
                "chunk may be shorter",
            )
        for i, text in enumerate(strings):
            row = chunk * CHUNK_SIZE + i
            if not isinstance(text, str):
                raise DataError(f"chunk {chunk}, string {i} is a {type(text).__name__}",
                                path=path, row=row, expected="a JSON array of strings")
            parsed = parse_teacher_string(text, path=path, chunk=chunk, row=row)
            if parsed.stripped_prompt_line:
                report.add("teacher_files/stripped_prompt_line")
            rows.append(parsed)
    return rows


def _verify_alignment(questions: Sequence[Question], rows: Sequence[TeacherRow], qpath: Path) -> None:
    if len(rows) != len(questions):
        last = rows[-1].path if rows else qpath.parent / "llm"
        raise DataError(
            f"teacher files hold {len(rows)} rows but {qpath} holds {len(questions)} questions",
            path=last,
            expected="one teacher string per question, in question-file order",
        )
    for q, r in zip(questions, rows):
        if _norm(q.question) != _norm(r.question):
            raise DataError(
                f"{r.where()}: the Q: block's question {r.question[:80]!r} does not match "
                f"{qpath.name} row {q.row} (id {q.id!r}): {q.question[:80]!r}",
                path=r.path, row=r.row, field="question",
                expected="teacher strings in the same order as the question file",
            )
        if [_norm(c) for c in q.choices] != [_norm(c) for c in r.choices]:
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
        answer = _flan_answer(r, r.choices, DataReport())
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


# ----------------------------------------------------------------------------
# Rationale cleaning and stated answers
# ----------------------------------------------------------------------------

_RUNAWAY = re.compile(
    r"^[ \t]*(?:#|```|(?:question|q|options|answer choices|input|instruction)\s*\d*\s*:)",
    re.I | re.M,
)
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


@dataclasses.dataclass(frozen=True)
class CleanedRationale:
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
        if _norm(c) == _norm(value):
            return c
    m = re.fullmatch(r"\(?([A-Za-z])\)?[.]?", value.strip())
    if m:
        i = LETTERS.index(m.group(1).lower())
        if i < len(choices):
            return choices[i]
    return None


def _flan_answer(r: TeacherRow, choices: Sequence[str], report: DataReport) -> str | None:
    if r.flan_letter is not None and LETTERS.index(r.flan_letter) < len(choices):
        answer = choices[LETTERS.index(r.flan_letter)]
        if r.flan_text is not None and _norm(r.flan_text) != _norm(answer):
            # The letter is what the teacher committed to; the text after it
            # has been seen cut short, so the letter wins.
            report.add("flan/answer_text_mismatch")
        return answer
    if r.flan_text:
        return resolve_answer(r.flan_text, choices)
    return None


# ----------------------------------------------------------------------------
# Teacher outputs joined onto questions
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TeacherOutput:
    rationale: str | None
    answer: str | None


def _from_files(
    teacher: str, questions: Sequence[Question], rows: Sequence[TeacherRow], report: DataReport
) -> list[TeacherOutput]:
    by_row = {r.row: r for r in rows}
    out = []
    for q in questions:
        r = by_row[q.row]
        if teacher == "flan":
            rationale = r.flan_rationale or None
            if rationale is None:
                report.add("flan/empty_rationale")
            out.append(TeacherOutput(rationale, _flan_answer(r, q.choices, report)))
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
) -> list[TeacherOutput]:
    """Join one store file onto the questions by id, in question order."""
    known = {q.id: q for q in questions}
    seen: dict[str, int] = {}
    got: dict[str, TeacherOutput] = {}
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
            answer = resolve_answer(raw_answer, known[rid].choices)
            if answer is None:
                report.add(f"{teacher}/unparsed_answer")
        got[rid] = TeacherOutput(rationale, answer)
    out = []
    for q in questions:
        if q.id not in got:
            report.add(f"{teacher}/missing_rationale")
        out.append(got.get(q.id, TeacherOutput(None, None)))
    return out


# ----------------------------------------------------------------------------
# Label options
# ----------------------------------------------------------------------------


def _check_choice(value: str, allowed: Sequence[str], field: str) -> None:
    if value not in allowed:
        raise DataError(f"unknown {field} {value!r}", field=field, expected=f"one of {list(allowed)}")


def apply_label_options(
    examples: Sequence[Example],
    teachers: Sequence[str],
    *,
    label_source: str = "gold",
    drop_disagreeing: bool = False,
    report: DataReport | None = None,
) -> list[Example]:
    """Relabel from teachers and/or mask disagreeing rationales (see module doc)."""
    _check_choice(label_source, LABEL_SOURCES, "label_source")
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


# ----------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------


def available_teachers(
    root: str | os.PathLike[str], dataset: str, split: str,
    store_dir: str | os.PathLike[str] | None = None,
) -> tuple[str, ...]:
    """Built-in TinyLLM teachers plus every store teacher with a file for this split."""
    names = list(BUILTIN_TEACHERS)
    if store_dir is not None and (Path(store_dir) / dataset).is_dir():
        for d in sorted((Path(store_dir) / dataset).iterdir()):
            if store_path(store_dir, dataset, d.name, split).is_file() and d.name not in names:
                names.append(d.name)
    return tuple(names)


def check_teachers(teachers: Any) -> tuple[str, ...]:
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
    report: DataReport | None = None,
) -> list[Example]:
    """Examples with the file's labels and every requested teacher's
    rationale unmasked: what `read_split` returns before the label options.
    The TFDS builders store this form so options can change without a rebuild."""
    report = report if report is not None else DataReport()
    teachers = check_teachers(teachers)
    _check_choice(split, SPLITS, "split")
    root = Path(root)
    if not (root / dataset).is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(f"no dataset directory {dataset!r}", path=root / dataset,
                        expected=f"one of {present}" if present else "a TinyLLM data root")
    stores: dict[str, StoreFile] = {}
    for t in teachers:
        if store_dir is not None and store_path(store_dir, dataset, t, split).is_file():
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
    rows = None
    if file_teachers or not qpath.exists():
        if not qpath.exists() and not teacher_chunk_paths(root, dataset, split):
            raise DataError("question file not found", path=qpath, expected=_QUESTION_FORMAT)
        rows = read_teacher_rows(root, dataset, split, report)
    if qpath.exists():
        questions = read_questions(qpath, report)
        if rows is not None:
            _verify_alignment(questions, rows, qpath)
        label_source = "gold"
    else:
        questions = _recover_questions(rows, dataset, split, report)
        label_source = "teacher"
    outputs = {
        t: (store_outputs(t, stores[t], questions, qpath, report) if t in stores
            else _from_files(t, questions, rows, report))
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
) -> tuple[list[Example], DataReport]:
    """Read one split of a TinyLLM-layout dataset joined with its teachers.

    `teachers` names the rationale sources in task order: "flan" / "llama"
    from the published files, or any teacher with a file in `store_dir`.
    Returns the examples and a report counting every skip, mask and relabel.
    """
    _check_choice(label_source, LABEL_SOURCES, "label_source")
    report = DataReport()
    raw = read_raw_split(root, dataset, split, teachers, store_dir=store_dir, report=report)
    examples = apply_label_options(raw, check_teachers(teachers), label_source=label_source,
                                   drop_disagreeing=drop_disagreeing, report=report)
    report.add("examples", len(examples))
    return examples, report
