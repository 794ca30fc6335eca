"""Resuming a store file: which of its records this run may keep.

A record is kept only when this run would write it again as it is: the same
model and generation settings (else the whole file is refused: resuming
would mix two teachers under one name), and, record by record, the same
prompt (`prompt_hash` equal to the hash of the prompt built now, with as
many demonstrations as the record shows) for the same question
(`question_hash`, when recorded). A record that fails the prompt check was
generated for a question, a demonstration or prompt settings that have since
changed. `config.on_prompt_mismatch` decides: "refuse" (the default) stops
with a message naming the file, the count and the first record; "regenerate"
appends those records to `<split>.jsonl.replaced` (kept, never read as a
store), rewrites the store without them and generates them again. Kept
records written before question hashes existed get theirs added, so an old
store becomes checkable by resuming it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tinyllm_jax.atomic import write_text_atomic
from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.example import Example
from tinyllm_jax.data.provenance import (
    QUESTION_HASH,
    describe_differences,
    hash_differences,
    is_question_hash,
    question_hash,
)
from tinyllm_jax.data.store import (
    StoreRecord,
    append_records,
    has_store_file,
    read_store,
    repair_partial_tail,
)
from tinyllm_jax.teachers.config import PROMPT_MISMATCH, TeacherError
from tinyllm_jax.teachers.prompts import PromptBuilder

REPLACED_SUFFIX = ".replaced"
# `generation` keys that change what a teacher writes; a resumed run must
# match them, while backend and dtype may differ (e.g. resuming on a GPU).
_NOT_COMPARED = ("backend", "dtype")


@dataclasses.dataclass(frozen=True)
class Stale:
    """A record this run would not write again, and why."""

    record: StoreRecord
    reason: str


def _comparable(generation: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in generation.items() if k not in _NOT_COMPARED}


def load_existing(path: Path, *, model: str, generation: Mapping[str, Any]) -> list[StoreRecord]:
    """The records already written, after dropping a torn last line; refuses a
    file written by another model or other generation settings, or one that
    holds an id twice."""
    try:
        if not has_store_file(path):
            return []
        store = read_store(path)
    except DataError as err:
        raise TeacherError(f"{err}; this run cannot resume from it: fix or move the file, "
                           "or use another out_dir") from err
    if store.partial_tail is not None:
        removed = repair_partial_tail(path)
        print(f"{path}: dropped a torn last line ({removed} bytes); it is redone", flush=True)
    want = _comparable(generation)
    seen: set[str] = set()
    for record in store.records:
        data = record.data
        if data.get("model") != model or _comparable(data.get("generation") or {}) != want:
            raise TeacherError(
                f"{path}, line {record.line}: written by model {data.get('model')!r} with "
                f"generation {data.get('generation')!r}, but this run uses model {model!r} "
                f"with {dict(generation)!r}; use another out_dir or delete the file"
            )
        if record.id in seen:
            raise TeacherError(f"{path}, line {record.line}: id {record.id!r} appears twice")
        seen.add(record.id)
    return list(store.records)


def _why_stale(record: StoreRecord, example: Example, builder: PromptBuilder) -> str | None:
    data = record.data
    recorded = data.get(QUESTION_HASH)
    if recorded is not None:
        if not is_question_hash(recorded):
            return f"a malformed {QUESTION_HASH} {recorded!r}"
        differ = hash_differences(recorded, example.question, example.choices, example.answer)
        if differ:
            return f"{describe_differences(differ)} from the question it was generated for"
    prompt = builder.build(example)
    demo_ids = data.get("demo_ids")
    if isinstance(demo_ids, list) and len(demo_ids) < len(prompt.demo_ids):
        # Written with demonstrations dropped to fit the model's length.
        prompt = builder.build(example, len(demo_ids))
    if data.get("prompt_hash") is None:
        return f"no prompt_hash recorded (the prompt now hashes to {prompt.hash!r})"
    if data["prompt_hash"] != prompt.hash:
        return f"prompt_hash {data['prompt_hash']!r} recorded, {prompt.hash!r} built now"
    return None


def review(records: Sequence[StoreRecord], examples: Sequence[Example],
           builder: PromptBuilder) -> tuple[list[Stale], dict[int, dict[str, str]]]:
    """Records of `examples`' ids whose prompt or question changed, and the
    question hashes to add (by line) to kept records written before hashes
    were recorded: their prompt, which holds the question and choices (and
    the answer when teacher forcing), matches, so the hash of the example is
    theirs. Records of other ids (beyond this run's `max_examples`) are not
    this run's to judge."""
    by_id = {e.id: e for e in examples}
    stale, fill = [], {}
    for record in records:
        example = by_id.get(record.id)
        if example is None:
            continue
        reason = _why_stale(record, example, builder)
        if reason is not None:
            stale.append(Stale(record, reason))
        elif record.data.get(QUESTION_HASH) is None:
            fill[record.line] = question_hash(example.question, example.choices, example.answer)
    return stale, fill


def _rewrite(path: Path, drop: set[int], fill: Mapping[int, dict[str, str]]) -> None:
    """`path` without the lines `drop` and with `fill`'s question hashes added,
    replaced atomically (a crash leaves the old or the new file)."""
    kept = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip() or number in drop:
            continue
        if number in fill:
            data = json.loads(line)
            line = json.dumps({"id": data["id"], QUESTION_HASH: fill[number], **data},
                              ensure_ascii=False, allow_nan=False)
        kept.append(line + "\n")
    write_text_atomic(path, "".join(kept))


def set_aside(path: Path, stale: Sequence[Stale]) -> Path:
    """Append the stale records to `<path>.replaced` (before they leave the
    store, so a crash in between loses none); returns that path."""
    replaced = path.with_name(path.name + REPLACED_SUFFIX)
    append_records(replaced, [{**s.record.data, "replaced_because": s.reason} for s in stale])
    return replaced


def resume(path: Path, examples: Sequence[Example], builder: PromptBuilder, *, model: str,
           generation: Mapping[str, Any], policy: str) -> tuple[set[str], int]:
    """The ids already done and how many records were set aside to redo."""
    if policy not in PROMPT_MISMATCH:
        raise TeacherError(f"on_prompt_mismatch: expected one of {', '.join(PROMPT_MISMATCH)}; "
                           f"got {policy!r}")
    records = load_existing(path, model=model, generation=generation)
    stale, fill = review(records, examples, builder)
    if stale and policy == "refuse":
        first = stale[0]
        raise TeacherError(
            f"{path}, line {first.record.line}: {len(stale)} of {len(records)} records were "
            f"written for other prompts than this config builds now (first: id "
            f"{first.record.id!r}: {first.reason}): the questions, their demonstrations or the "
            "prompt settings changed since. Set config.on_prompt_mismatch='regenerate' to move "
            f"them to {path.name}{REPLACED_SUFFIX} and generate them again, or use another out_dir"
        )
    if stale:
        replaced = set_aside(path, stale)
        print(f"{path}: {len(stale)} record(s) written for other prompts moved to {replaced}; "
              "they are generated again", flush=True)
    if stale or fill:
        _rewrite(path, {s.record.line for s in stale}, fill)
    if fill:
        print(f"{path}: added the question_hash to {len(fill)} record(s) written before it "
              "was recorded (their prompts match this run's)", flush=True)
    dropped = {s.record.id for s in stale}
    return {r.id for r in records if r.id not in dropped}, len(stale)
