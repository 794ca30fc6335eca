"""The resumable generation loop for one teacher on one split.

Each batch is parsed and appended to `<out>/<dataset>/<teacher>/<split>.jsonl`
with flush + fsync (data/store.py) before the next batch starts, so a crash
loses at most the batch in flight. A restart reads the file, drops a torn last
line, keeps every record it would write again as it is (resume.py: same
model, settings, prompt and question) and generates the rest: every id ends
up exactly once. The store file's lock (store_lock.py) keeps two runs from
writing the same file.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.provenance import QUESTION_HASH, question_hash
from tinyllm_jax.data.store import append_records
from tinyllm_jax.progress import Progress
from tinyllm_jax.teachers.backends import Backend, Generated
from tinyllm_jax.teachers.config import TeacherError
from tinyllm_jax.teachers.parsing import Parsed, parse_output
from tinyllm_jax.teachers.prompts import Prompt, PromptBuilder
from tinyllm_jax.teachers.resume import resume
from tinyllm_jax.teachers.store_lock import store_lock


@dataclasses.dataclass
class SplitResult:
    """What one (teacher, split) run did, for the closing summary."""

    teacher: str
    split: str
    path: Path
    total: int
    already_done: int = 0
    replaced: int = 0
    written: int = 0
    generated: int = 0
    seconds: float = 0.0
    batch_size: int = 0
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def examples_per_s(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        line = (
            f"{self.teacher}/{self.split}: {self.written} written, {self.already_done} "
            f"already done, of {self.total} -> {self.path}"
        )
        if self.replaced:
            line += f" ({self.replaced} redone: written for other prompts)"
        if self.generated:
            line += (
                f"\n  {self.examples_per_s:.2f} examples/s over {self.seconds:.1f}s "
                f"(batch size {self.batch_size})"
            )
        return line + (f"\n  {counts}" if counts else "")


def make_record(
    example: Example,
    prompt: Prompt,
    generated: Generated | None,
    parsed: Parsed,
    *,
    model: str,
    generation: Mapping[str, Any],
) -> dict[str, Any]:
    """One store line. `error` and `raw` keep failures inspectable and
    re-parseable instead of dropping them."""
    notes = list(parsed.notes)
    if generated is not None and generated.hit_limit:
        notes.append("hit_max_new_tokens")
    return {
        "id": example.id,
        QUESTION_HASH: question_hash(example.question, example.choices, example.answer),
        "rationale": parsed.rationale,
        "teacher_answer": parsed.teacher_answer,
        "prompt_hash": prompt.hash,
        "model": model,
        "generation": dict(generation),
        "error": parsed.error,
        "notes": notes,
        "demo_ids": list(prompt.demo_ids),
        "raw": None if generated is None else generated.text,
    }


def _fit_prompt(
    builder: PromptBuilder, example: Example, encode: Callable[[str], list[int]], limit: int | None
) -> tuple[Prompt, list[int], bool]:
    """The prompt with as many demos as fit `limit`; False when even none fit."""
    prompt = builder.build(example)
    ids = encode(prompt.text)
    n_demos = len(prompt.demo_ids)
    while limit and len(ids) > limit and n_demos > 0:
        n_demos -= 1
        prompt = builder.build(example, n_demos)
        ids = encode(prompt.text)
    return prompt, ids, not limit or len(ids) <= limit


def _check_unique(examples: Sequence[Example], split: str) -> None:
    seen: set[str] = set()
    for row, example in enumerate(examples):
        if example.id in seen:
            raise TeacherError(
                f"split {split!r}, row {row}: id {example.id!r} is not unique; the store is "
                "keyed by id, so every example needs its own"
            )
        seen.add(example.id)


def generate_split(
    *,
    teacher: str,
    split: str,
    examples: Sequence[Example],
    builder: PromptBuilder,
    backend: Callable[[], Backend],
    out_path: Path,
    model: str,
    generation: Mapping[str, Any],
    batch_size: int,
    add_special_tokens: bool,
    progress: bool = True,
    on_prompt_mismatch: str = "refuse",
) -> SplitResult:
    """Generate every missing rationale of `examples` into `out_path`.

    `backend` is called only when something is left to generate, so a
    finished split never loads the model. `on_prompt_mismatch` ("refuse" or
    "regenerate") is what a record written for another prompt does (resume.py).
    """
    _check_unique(examples, split)
    result = SplitResult(teacher, split, out_path, len(examples), batch_size=batch_size)
    with store_lock(out_path):
        done, result.replaced = resume(out_path, examples, builder, model=model,
                                       generation=generation, policy=on_prompt_mismatch)
        todo = [e for e in examples if e.id not in done]
        result.already_done = len(examples) - len(todo)
        if not todo:
            return result
        engine = backend()
        limit = engine.max_prompt_tokens

        def encode(text: str) -> list[int]:
            return engine.encode([text], add_special_tokens)[0]

        prompts = [builder.build(e) for e in todo]
        encoded = engine.encode([p.text for p in prompts], add_special_tokens)
        prepared, too_long = [], []
        for example, prompt, ids in zip(todo, prompts, encoded):
            fits = True
            if limit and len(ids) > limit:
                prompt, ids, fits = _fit_prompt(builder, example, encode, limit)
            (prepared if fits else too_long).append((example, prompt, ids))
        if too_long:
            # Recorded, not skipped: the user sees them and a rerun won't retry.
            failed = Parsed(None, None, None, "prompt_too_long", (f"limit_{limit}_tokens",))
            append_records(
                out_path,
                [make_record(e, p, None, failed, model=model, generation=generation)
                 for e, p, _ in too_long],
            )
            result.written += len(too_long)
            result.counts["error/prompt_too_long"] += len(too_long)
        # Longest first: similar lengths share a batch (little padding) and an
        # out-of-memory batch shows up at the start, not hours in.
        prepared.sort(key=lambda item: -len(item[2]))
        result.seconds = _run_batches(
            prepared, engine, out_path, result, model, generation, batch_size, progress
        )
    return result


def _run_batches(
    prepared: list[tuple[Example, Prompt, list[int]]],
    engine: Backend,
    out_path: Path,
    result: SplitResult,
    model: str,
    generation: Mapping[str, Any],
    batch_size: int,
    progress: bool,
) -> float:
    start = time.perf_counter()
    # A bar on a terminal, rate/ETA lines in a log (progress.py).
    bar = Progress(len(prepared), unit="ex", desc=f"{result.teacher}/{result.split}",
                   enabled=progress)
    with bar:
        for first in range(0, len(prepared), batch_size):
            batch = prepared[first : first + batch_size]
            try:
                outputs = engine.generate([ids for _, _, ids in batch])
            except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
                if "out of memory" not in str(err).lower():
                    raise
                raise TeacherError(
                    f"{result.teacher}/{result.split}: out of memory on a batch of "
                    f"{len(batch)} prompts of up to {len(batch[0][2])} tokens; lower "
                    f"config.teachers.{result.teacher}.batch_size and rerun (the "
                    f"{result.written} lines written are kept)"
                ) from err
            records = []
            for (example, prompt, _), generated in zip(batch, outputs, strict=True):
                parsed = parse_output(
                    generated.text, example.choices, echoes=(prompt.text, prompt.query)
                )
                records.append(
                    make_record(example, prompt, generated, parsed, model=model, generation=generation)
                )
                _count(result.counts, example, parsed)
            append_records(out_path, records)
            result.written += len(records)
            result.generated += len(records)
            bar.update(len(records))
    return time.perf_counter() - start


def _count(counts: collections.Counter, example: Example, parsed: Parsed) -> None:
    if parsed.error:
        counts[f"error/{parsed.error}"] += 1
        return
    counts["rationales"] += 1
    if parsed.teacher_answer is None:
        counts["answer/not_stated"] += 1
    elif parsed.teacher_answer == example.answer:
        counts["answer/agrees_with_gold"] += 1
    else:
        counts["answer/disagrees_with_gold"] += 1
