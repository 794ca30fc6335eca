"""The paper's in-context example generator: each teacher writes its own demos.

With `config.prompt.generate_demos`, a first pass has each teacher write a
rationale for a few demo questions, zero-shot and teacher-forced with the gold
answer; the main pass then shows those questions with the teacher's own
rationales as its in-context examples, instead of rationales sampled from the
published files. The pass's output is an ordinary store file,
`<out_dir>/<dataset>/<teacher>/demos.jsonl`, with the provenance of every line
(model, prompt hash, question hash, generation settings): a rerun resumes it
like any split, and a changed model or setting is refused there as well.

The demo questions are k + 1 questions of `demo_split`, drawn with
`prompt.seed` (one spare, so a target that is itself a demo still gets k). A
demo whose teacher stated another answer than the gold one, or wrote none, is
not shown (prompts.demo_rationale), so a target may get fewer than k.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.store import read_store
from tinyllm_jax.teachers.config import PromptSettings, TeacherError
from tinyllm_jax.teachers.generate import SplitResult
from tinyllm_jax.teachers.prompts import PromptBuilder

DEMO_PASS = "demos"  # the store file's "split" name


def demo_questions(pool: Sequence[Example], settings: PromptSettings) -> list[Example]:
    """k + 1 questions of the demo split, reproducible from `settings.seed`."""
    n = min(settings.k + 1, len(pool))
    picked = random.Random(f"{settings.seed}/demo-generator").sample(range(len(pool)), n)
    return [pool[i] for i in sorted(picked)]


def zero_shot_settings(settings: PromptSettings) -> PromptSettings:
    """The first pass: no demos, the gold answer given."""
    return dataclasses.replace(settings, k=0, teacher_forcing=True, generate_demos=False)


def with_own_rationales(questions: Sequence[Example], teacher: str, path: Path
                        ) -> list[Example]:
    """`questions` carrying only `teacher`'s rationale (and stated answer) from
    its demo store file; a question without a stored rationale carries None."""
    by_id = {r.id: r.data for r in read_store(path).records}
    missing = [q.id for q in questions if q.id not in by_id]
    if missing:
        raise TeacherError(f"{path}: no record for demo question(s) {missing}; rerun to finish "
                           "the demo pass")
    return [dataclasses.replace(q, rationales={teacher: by_id[q.id].get("rationale")},
                                teacher_answers={teacher: by_id[q.id].get("teacher_answer")})
            for q in questions]


def generate_demos(
    *, teacher: str, questions: Sequence[Example], settings: PromptSettings, template: str,
    tokenizer: Any, instruction: str, system_prompt: str, out_path: Path,
    run_split: Callable[..., SplitResult],
) -> tuple[SplitResult, list[Example]]:
    """Run (or resume) the demo pass into `out_path`; returns its result and
    the demo questions with the teacher's rationales. `run_split` is
    generate_split with the teacher's backend and settings bound."""
    builder = PromptBuilder(zero_shot_settings(settings), [], template=template,
                            tokenizer=tokenizer, instruction=instruction,
                            system_prompt=system_prompt)
    result = run_split(split=DEMO_PASS, examples=list(questions), builder=builder,
                       out_path=out_path)
    return result, with_own_rationales(questions, teacher, out_path)


def main_pass_settings(settings: PromptSettings, teacher: str) -> PromptSettings:
    """The main pass shows the teacher's own demo rationales."""
    return dataclasses.replace(settings, demo_rationale=teacher)

