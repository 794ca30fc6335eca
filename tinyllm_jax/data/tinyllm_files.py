"""Parsing and validating the two kinds of file in the published TinyLLM layout.

Layout (see ../shared/README.md):

    <root>/<name>/<name>_{train,valid,test}.json      questions, JSONL or a JSON array
    <root>/<name>/llm/{split}_CoT_<k>.json             teacher strings, 500 per chunk

Each teacher string is `<FLAN-T5 rationale> Thus, the answer is (x) <text>`
then `\\n\\nQ: <question>\\nAnswer Choices:\\n(a) ...` then, except in PIQA,
` llama rationale: <LLaMA-2 rationale>`. This module only splits a string into
those parts; cleaning the rationales and reading the answers they state live
in rationale_cleaning.py and stated_answers.py, and pairing rows with
questions in tinyllm.py.

FLAN rationale = the text before "Thus, the answer is", without that sentence,
as in the reference distilling-step-by-step / TinyLLM code: the answer is
already the target of the answer task, and a rationale target that ends by
restating it would teach the rationale heads to emit answers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.example import LETTERS
from tinyllm_jax.data.files import read_regular_bytes
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.data.stated_answers import fold_whitespace

SPLITS = ("train", "valid", "test")
CHUNK_SIZE = 500
# The teachers whose outputs the published chunk files hold.
BUILTIN_TEACHERS = ("flan", "llama")
QUESTION_FORMAT = "records {id, question, choices: [...], answer} where answer is one of choices"

_Q_MARK = "\n\nQ: "
_CHOICES_MARK = "\nAnswer Choices:\n"
_LLAMA_MARK = "llama rationale:"
_THUS = "Thus, the answer is"
# [0-9], not \d: int() also reads other scripts' digits, so "train_CoT_٠.json"
# would quietly be chunk 0.
_CHUNK_RE = re.compile(r"^(train|valid|test)_CoT_([0-9]+)\.json$")
# Names a person probably meant as a chunk ("train_cot_1.json", "train_CoT_1.jsonl",
# "train_CoT_1 (copy).json"): reported, since a chunk that is silently not read
# shifts or shortens the split.
_NEAR_CHUNK_RE = re.compile(r"^(train|valid|test)[ _-]*cot", re.IGNORECASE)


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
    raw = read_regular_bytes(path, missing="question file not found", expected=QUESTION_FORMAT)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError("not valid UTF-8", path=path, expected="a UTF-8 JSON file") from None
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
        raise fail(None, f"a JSON {type(record).__name__} where a record belongs", QUESTION_FORMAT)
    for key in ("id", "question", "choices", "answer"):
        if key not in record:
            raise fail(key, f"record has no {key!r}", QUESTION_FORMAT)
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
        hits = [c for c in choices if fold_whitespace(c) == fold_whitespace(answer)]
        if hits:
            report.add("answer_matched_after_whitespace_normalisation")
    if not hits:
        raise fail("answer", f"answer {answer!r} is not among the choices {choices!r}",
                   "the text of one of the choices")
    if len(hits) > 1:
        raise fail("answer", f"answer {answer!r} matches more than one choice",
                   "choices that differ from each other")
    if len({fold_whitespace(c) for c in choices}) < len(choices):
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
        raise DataError("no records", path=path, expected=QUESTION_FORMAT)
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


def teacher_chunk_paths(
    root: str | os.PathLike[str], dataset: str, split: str, report: DataReport | None = None
) -> list[Path]:
    """`{split}_CoT_<k>.json` files in chunk order (numeric, so 10 follows 9).

    Rows are joined to questions by position, so every way of reading the
    wrong set of files is an error: two files for one chunk number
    (`train_CoT_1.json` and `train_CoT_01.json`: one would silently win by
    directory order) and a gap in the numbering (every later row would shift).
    Names that look like a chunk of this split but are not read
    (`train_cot_1.json`, `train_CoT_1.jsonl`) are counted
    [teacher_files/unrecognised_names] with a note naming them."""
    llm_dir = Path(root) / dataset / "llm"
    found: dict[int, list[Path]] = {}
    near: list[str] = []
    if llm_dir.is_dir():
        for p in sorted(llm_dir.iterdir()):
            m = _CHUNK_RE.match(p.name)
            if m and m.group(1) == split:
                found.setdefault(int(m.group(2)), []).append(p)
            elif not m:
                n = _NEAR_CHUNK_RE.match(p.name)
                if n and n.group(1).lower() == split:
                    near.append(p.name)
    for number, paths in sorted(found.items()):
        if len(paths) > 1:
            names = " and ".join(p.name for p in paths)
            raise DataError(
                f"{names} both hold teacher chunk {number} of split {split!r}", path=llm_dir,
                expected=f"one file per chunk number: keep the right one as "
                f"{split}_CoT_{number}.json and move the other out of {llm_dir}",
            )
    if near and report is not None:
        report.add("teacher_files/unrecognised_names", len(near))
        report.note(f"{llm_dir}: not read as teacher chunks of {split!r}: {near} "
                    f"(chunk files are named exactly {split}_CoT_<k>.json)")
    expected = sorted(found)
    if expected != list(range(len(expected))):
        missing = sorted(set(range(max(expected) + 1)) - set(expected))
        raise DataError(
            f"teacher chunks {missing} missing for split {split!r}",
            path=llm_dir,
            expected=f"{split}_CoT_0.json .. {split}_CoT_{max(expected)}.json without gaps",
        )
    return [found[k][0] for k in expected]


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


def _read_chunk(path: Path) -> list:
    raw = read_regular_bytes(path, expected="a JSON array of strings")
    try:
        strings = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise DataError("not valid UTF-8", path=path, expected="a UTF-8 JSON file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON: {e.msg} at column {e.colno}", path=path,
                        line=e.lineno, expected="a JSON array of strings") from None
    if not isinstance(strings, list):
        raise DataError(f"a JSON {type(strings).__name__} at top level", path=path,
                        expected="a JSON array of strings")
    return strings


def read_teacher_rows(
    root: str | os.PathLike[str], dataset: str, split: str, report: DataReport | None = None
) -> list[TeacherRow]:
    """Every teacher string of a split, parsed, in row order."""
    report = report if report is not None else DataReport()
    paths = teacher_chunk_paths(root, dataset, split, report)
    if not paths:
        raise DataError(
            f"no teacher files for split {split!r}",
            path=Path(root) / dataset / "llm",
            expected=f"{split}_CoT_0.json, {split}_CoT_1.json, ... (JSON arrays of strings)",
        )
    rows: list[TeacherRow] = []
    first_of: dict[tuple[str, ...], int] = {}
    for chunk, path in enumerate(paths):
        strings = _read_chunk(path)
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
        key = tuple(strings)
        if strings and key in first_of:
            # A copied chunk lines up with the questions only by accident (and
            # not at all without a question file, where nothing else checks it).
            raise DataError(
                f"chunk {chunk} is an exact copy of chunk {first_of[key]} "
                f"({paths[first_of[key]].name})", path=path,
                expected=f"each chunk holding its own rows of split {split!r}",
            )
        first_of.setdefault(key, chunk)
    return rows



def _chunk_digests(root: str | os.PathLike[str], dataset: str, split: str) -> dict[str, Path]:
    try:
        paths = teacher_chunk_paths(root, dataset, split)
    except DataError:
        return {}  # that split's own problem, reported when it is read
    digests = {}
    for path in paths:
        try:
            digests[hashlib.sha256(read_regular_bytes(path)).hexdigest()] = path
        except DataError:
            continue
    return digests


def check_chunks_belong_to_split(root: str | os.PathLike[str], dataset: str, split: str) -> None:
    """Without a question file nothing ties the teacher strings to the split,
    so a chunk that is byte for byte a chunk of another split (a copy made to
    fill the gap) is refused instead of being trained on as this split."""
    mine = _chunk_digests(root, dataset, split)
    for other in SPLITS:
        if other == split:
            continue
        for digest, path in _chunk_digests(root, dataset, other).items():
            if digest in mine:
                raise DataError(
                    f"{mine[digest].name} is byte for byte {path.name} of split {other!r}",
                    path=mine[digest], expected=f"the teacher strings of split {split!r}",
                )
