"""Tokenized (input, target) pairs, one per example and task.

Task 0 is the answer task: ``answer_prefix + input -> answer text``. Task k
(1-based, in config order) is teacher k's rationale:
``teacher_prefixes[k-1] + input -> rationale``. Inputs and targets both end
with EOS (the T5 convention, and what HF tokenizers produce at export).

Missing rationales: a pair whose rationale is None (or blank) is dropped and
counted, not kept with loss weight 0. A kept-but-masked pair would occupy
packed slots and compute for nothing; dropping gives the same gradient. No
target is ever made up.

Too-long inputs: the question is never silently lost. In order:
1. the full input fits: keep it;
2. shorten the question from the middle (its first third and last two thirds
   of the kept words survive, joined by " ... "), keeping at least
   `MIN_QUESTION_WORDS` words and every choice intact;
3. also cut each choice to its first w words;
4. otherwise drop the pair.
Each outcome is counted per task in the DataReport. Too-long targets are cut
to `max_target_len - 1` tokens plus EOS, and counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from tinyllm_jax.data.example import Example, format_input
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.tokenizers import Tokenizer

ANSWER_TASK = 0
DEFAULT_ANSWER_PREFIX = "predict: "
DEFAULT_TEACHER_PREFIXES = (
    "explain: ",
    "rationale: ",
    "reasoning: ",
    "think: ",
    "because: ",
    "steps: ",
    "solve: ",
    "why: ",
)
MIN_QUESTION_WORDS = 8
_CUT = " ... "


@dataclasses.dataclass(frozen=True)
class TaskFeature:
    """One tokenized (input, target) pair; both arrays are int32 and end with EOS."""

    example_id: str
    task_id: int
    inputs: np.ndarray
    targets: np.ndarray


def teacher_prefixes_for(
    teachers: Sequence[str],
    prefixes: Sequence[str] | None = None,
    answer_prefix: str = DEFAULT_ANSWER_PREFIX,
) -> tuple[str, ...]:
    """One distinct prefix per teacher: the given ones, else the defaults."""
    if prefixes is None or len(prefixes) == 0:
        defaults = list(DEFAULT_TEACHER_PREFIXES)
        defaults += [f"teacher{k}: " for k in range(len(defaults) + 1, len(teachers) + 1)]
        prefixes = defaults[: len(teachers)]
    prefixes = tuple(prefixes)
    if len(prefixes) != len(teachers):
        raise ValueError(
            f"teacher_prefixes: got {len(prefixes)} prefixes {prefixes} for "
            f"{len(teachers)} teachers {tuple(teachers)}; expected one per teacher"
        )
    everything = (answer_prefix, *prefixes)
    if len(set(everything)) != len(everything):
        raise ValueError(
            f"task prefixes must all differ (the model tells tasks apart by them), got "
            f"answer={answer_prefix!r} teachers={prefixes}"
        )
    return prefixes


def task_names(teachers: Sequence[str]) -> tuple[str, ...]:
    """Name of each task id: "answer" for 0, then the teacher names."""
    return ("answer", *teachers)


def _shorten(question: str, keep: int) -> str:
    words = question.split(" ")
    if keep >= len(words):
        return question
    head = keep // 3
    return " ".join(words[:head]) + _CUT + " ".join(words[len(words) - (keep - head) :])


def _cap_choices(choices: Sequence[str], words: int) -> list[str]:
    return [" ".join(c.split(" ")[:words]) for c in choices]


def _largest(lo: int, hi: int, fits: Callable[[int], bool]) -> int | None:
    """Largest k in [lo, hi] with fits(k), assuming fits is monotone; None if none."""
    if lo > hi or not fits(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _fit_input(
    prefix: str, example: Example, tokenizer: Tokenizer, max_len: int
) -> tuple[list[int] | None, str]:
    """Token ids (with EOS) of a too-long input after careful cutting, and how."""
    budget = max_len - 1  # room for EOS

    def ids(question: str, choices: Sequence[str]) -> list[int]:
        return tokenizer.encode(prefix + format_input(question, choices))

    n_words = len(example.question.split(" "))
    min_keep = min(n_words, MIN_QUESTION_WORDS)
    keep = _largest(
        min_keep,
        n_words - 1,
        lambda k: len(ids(_shorten(example.question, k), example.choices)) <= budget,
    )
    if keep is not None:
        return [
            *ids(_shorten(example.question, keep), example.choices),
            tokenizer.eos_id,
        ], "question_truncated"
    longest_choice = max((len(c.split(" ")) for c in example.choices), default=1)
    short_q = _shorten(example.question, min_keep)
    w = _largest(
        1, longest_choice, lambda w: len(ids(short_q, _cap_choices(example.choices, w))) <= budget
    )
    if w is None:
        return None, "dropped_input_too_long"
    capped = _cap_choices(example.choices, w)
    keep = _largest(
        min_keep, n_words, lambda k: len(ids(_shorten(example.question, k), capped)) <= budget
    )
    return [*ids(_shorten(example.question, keep), capped), tokenizer.eos_id], "choices_truncated"


def build_task_features(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    *,
    teachers: Sequence[str],
    answer_prefix: str = DEFAULT_ANSWER_PREFIX,
    teacher_prefixes: Sequence[str] | None = None,
    max_input_len: int = 512,
    max_target_len: int = 256,
    tasks: Sequence[int] | None = None,
) -> tuple[list[TaskFeature], DataReport]:
    """Pairs for every example and task (or only `tasks`), in example order.

    Returns the features and a report with, per task name,
    ``features/<task>/{pairs, dropped_missing_rationale, question_truncated,
    choices_truncated, dropped_input_too_long, target_truncated}``.
    """
    if max_input_len < 2 or max_target_len < 2:
        raise ValueError(
            f"max_input_len and max_target_len must be >= 2 (one token plus EOS), got "
            f"{max_input_len} and {max_target_len}"
        )
    teachers = tuple(teachers)
    prefixes = (answer_prefix, *teacher_prefixes_for(teachers, teacher_prefixes, answer_prefix))
    names = task_names(teachers)
    wanted = tuple(range(len(names))) if tasks is None else tuple(tasks)
    bad = [t for t in wanted if not 0 <= t < len(names)]
    if bad:
        raise ValueError(f"tasks {bad} out of range: task ids are 0..{len(names) - 1} for {names}")
    report = DataReport()
    eos = tokenizer.eos_id

    # Collect every (example, task) pair that has a target, then tokenize in
    # two batched calls: per-pair encode calls dominate otherwise.
    pairs: list[tuple[Example, int, str]] = []
    for ex in examples:
        for task in wanted:
            if task == ANSWER_TASK:
                target = ex.answer
            else:
                target = ex.rationales.get(teachers[task - 1])
            if target is None or not str(target).strip():
                key = "dropped_missing_rationale" if task else "dropped_empty_answer"
                report.add(f"features/{names[task]}/{key}")
                continue
            pairs.append((ex, task, str(target)))

    input_ids = tokenizer.encode_batch([prefixes[t] + ex.input for ex, t, _ in pairs])
    target_ids = tokenizer.encode_batch([tgt for _, _, tgt in pairs])

    features = []
    for (ex, task, _), inp, tgt in zip(pairs, input_ids, target_ids):
        name = names[task]
        if len(inp) + 1 <= max_input_len:
            inp = [*inp, eos]
        else:
            inp, how = _fit_input(prefixes[task], ex, tokenizer, max_input_len)
            report.add(f"features/{name}/{how}")
            if inp is None:
                continue
        if len(tgt) + 1 > max_target_len:
            tgt = tgt[: max_target_len - 1]
            report.add(f"features/{name}/target_truncated")
        features.append(
            TaskFeature(
                example_id=ex.id,
                task_id=task,
                inputs=np.asarray(inp, dtype=np.int32),
                targets=np.asarray([*tgt, eos], dtype=np.int32),
            )
        )
        report.add(f"features/{name}/pairs")
    return features, report


def feature_lengths(features: Sequence[TaskFeature]) -> tuple[np.ndarray, np.ndarray]:
    """Input and target lengths (EOS included) as int arrays."""
    inp = np.fromiter((len(f.inputs) for f in features), dtype=np.int64, count=len(features))
    tgt = np.fromiter((len(f.targets) for f in features), dtype=np.int64, count=len(features))
    return inp, tgt
