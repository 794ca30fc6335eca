"""Pairs of the rationale-then-answer student mode (`config.data.student_mode`).

In this mode the student has one task and one prefix (`config.data.answer_prefix`):
it writes a teacher's rationale, then a fixed separator, then the answer:

    predict: <question and choices>  ->  <rationale> So the answer is: <answer>

Training pairs: one per (example, teacher rationale), so with k teachers an
example appears up to k times, each time with another teacher's reasoning in
front of the same answer. An example with no usable rationale from any
teacher yields no pair (counted as `features/answer/dropped_missing_rationale`
per missing rationale): no reasoning is made up. All pairs carry task id 0,
so the loss is `answer_weight` times the token CE of the whole target.

Target tokens are ``encode(rationale) + encode(SEPARATOR) + encode(answer) +
[EOS]``, each piece encoded on its own, so the separator is always the same
token run and the answer span starts right after it. A target that does not
fit `max_target_len` loses rationale tokens from the end, never the separator
or the answer (counted as `rationale_truncated`); when even separator + answer
do not fit, the pair is dropped (`dropped_answer_too_long`).

Eval pairs (answer task only) hold one pair per example whose target is
``encode(SEPARATOR) + encode(answer) + [EOS]``: eval decodes from the input
alone, and the target only sets row lengths, so no eval example needs a
rationale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.features import ANSWER_TASK, TaskFeature, build_task_features
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.tokenizers import Tokenizer

STUDENT_MODES = ("multitask", "rationale_then_answer")
# Between rationale and answer. The colon sets it apart from the synthetic
# teachers' own closing "So the answer is 14." and from most LLM phrasings.
SEPARATOR = "So the answer is:"


def rationale_then_answer_target(
    rationale: str, answer: str, tokenizer: Tokenizer, max_target_len: int
) -> tuple[list[int] | None, bool]:
    """(target ids with EOS, whether the rationale was cut); None when the
    separator and answer alone exceed `max_target_len`."""
    rationale_ids = tokenizer.encode(rationale.strip())
    tail = tokenizer.encode(SEPARATOR) + tokenizer.encode(answer.strip())
    room = max_target_len - 1 - len(tail)  # EOS
    if room < 0:
        return None, False
    cut = len(rationale_ids) > room
    return [*rationale_ids[:room], *tail, tokenizer.eos_id], cut


def build_rationale_then_answer_features(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    *,
    teachers: Sequence[str],
    answer_prefix: str,
    max_input_len: int = 512,
    max_target_len: int = 256,
    tasks: Sequence[int] | None = None,
) -> tuple[list[TaskFeature], DataReport]:
    """Training pairs (`tasks=None`) or eval pairs (`tasks=(0,)`); see the
    module docstring."""
    eval_only = tasks is not None
    if eval_only and tuple(tasks) != (ANSWER_TASK,):
        raise ValueError(f"rationale_then_answer has one task (id {ANSWER_TASK}): ask for "
                         f"tasks=None (training pairs) or ({ANSWER_TASK},) (eval), got {tasks}")
    # The inputs (with the careful cutting of too-long questions) are the
    # answer task's; their targets are replaced below.
    answer_feats, report = build_task_features(
        examples, tokenizer, teachers=teachers, answer_prefix=answer_prefix,
        max_input_len=max_input_len, max_target_len=max_target_len, tasks=(ANSWER_TASK,),
    )
    by_id = {ex.id: ex for ex in examples}
    out: list[TaskFeature] = []
    for f in answer_feats:
        ex = by_id[f.example_id]
        texts = [""] if eval_only else [ex.rationales.get(t) for t in teachers]
        for rationale in texts:
            if rationale is None or (not eval_only and not rationale.strip()):
                report.add("features/answer/dropped_missing_rationale")
                continue
            target, cut = rationale_then_answer_target(rationale, ex.answer, tokenizer,
                                                       max_target_len)
            if target is None:
                report.add("features/answer/dropped_answer_too_long")
                continue
            if cut:
                report.add("features/answer/rationale_truncated")
            out.append(TaskFeature(f.example_id, ANSWER_TASK, f.inputs,
                                   np.asarray(target, np.int32)))
    report.add("features/answer/rationale_then_answer_pairs", len(out))
    return out, report
