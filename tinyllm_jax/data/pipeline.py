"""The data side of training, driven by a `DataSpec` (`tinyllm_jax.spec`).

    examples, report = load_examples(spec.data, "train")
    tokenizer = tokenizer_for(spec.data)
    features, freport = build_features(spec.data, examples, tokenizer)
    it = make_iterator(spec.data, features, batch_size=spec.train.batch_size)
    for batch in it: ...                       # it.get_state() goes into checkpoints

The spec was validated once at start-up, so nothing here re-checks ranges
or supplies defaults. The TFDS reader is imported only when asked for: its
dependencies are optional.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tinyllm_jax.data import synthetic
from tinyllm_jax.data.example import Example
from tinyllm_jax.data.features import TaskFeature, build_task_features, feature_lengths
from tinyllm_jax.data.iterator import BatchIterator
from tinyllm_jax.data.labels import apply_label_options
from tinyllm_jax.data.packing import auto_packed_lengths
from tinyllm_jax.data.rationale_then_answer import build_rationale_then_answer_features
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.data.store import has_store_file, read_store, store_path
from tinyllm_jax.data.table import read_table_split
from tinyllm_jax.data.teacher_outputs import store_outputs
from tinyllm_jax.data.tinyllm import read_split
from tinyllm_jax.data.tinyllm_files import Question
from tinyllm_jax.data.tokenizer import load_named_tokenizer
from tinyllm_jax.spec import DataSpec
from tinyllm_jax.tokenizers import Tokenizer


def load_examples(data: DataSpec, split: str) -> tuple[list[Example], DataReport]:
    """One split as Examples: synthetic, your own table, TinyLLM files (+ store) or TFDS."""
    if data.name == "synthetic":
        # Programmatic teachers come from the generator; any other teacher
        # name is read from the rationale store and joined by example id.
        own = tuple(t for t in data.teachers if t in synthetic.TEACHERS)
        stored = tuple(t for t in data.teachers if t not in synthetic.TEACHERS)
        examples, report = synthetic.generate_split(split, data.synthetic, own)
        if stored:
            examples = _join_store(data, examples, stored, split, report)
        # Same label options, same report keys as the TinyLLM reader.
        examples = apply_label_options(
            examples, data.teachers, label_source=data.label_source,
            drop_disagreeing=data.drop_disagreeing, report=report,
        )
    elif data.table.format:
        report = DataReport()
        examples = read_table_split(data.table, data.name, split, data.teachers, report)
        stored = tuple(t for t, c in zip(data.teachers, data.table.rationales) if not c)
        if stored:
            examples = _join_store(data, examples, stored, split, report)
        examples = apply_label_options(
            examples, data.teachers, label_source=data.label_source,
            drop_disagreeing=data.drop_disagreeing, report=report,
        )
        report.add("examples", len(examples))
    else:
        if not data.data_dir:
            raise ValueError(
                f"config.data.data_dir is not set: dataset {data.name!r} is read from a TinyLLM "
                "data root (or use name='synthetic', or config.data.table for your own files)"
            )
        store_dir = data.rationale_store or None
        if data.use_tfds:
            try:
                from tinyllm_jax.data.tfds_builders import load_tfds_split
            except ImportError as e:
                # A ValueError: the command line reports it as one line.
                raise ValueError(f"config.data.use_tfds=True: {e}") from None

            examples, report = load_tfds_split(
                data.name, split, data.tfds_data_dir, data.data_dir, data.teachers,
                label_source=data.label_source, drop_disagreeing=data.drop_disagreeing,
                store_dir=store_dir, store_mismatch=data.store_mismatch,
            )
        else:
            examples, report = read_split(
                data.data_dir, data.name, split, data.teachers, label_source=data.label_source,
                drop_disagreeing=data.drop_disagreeing, store_dir=store_dir,
                store_mismatch=data.store_mismatch,
            )
    return _train_prefix(data, split, examples, report)


def _train_prefix(
    data: DataSpec, split: str, examples: list[Example], report: DataReport
) -> tuple[list[Example], DataReport]:
    """Data-efficiency runs train on the first `train_fraction` of train."""
    if split != "train" or data.train_fraction == 1.0:
        return examples, report
    keep = max(1, round(data.train_fraction * len(examples)))
    report.add("train_fraction_dropped", len(examples) - keep)
    return examples[:keep], report


def _join_store(
    data: DataSpec, examples: list[Example], teachers: tuple[str, ...], split: str,
    report: DataReport,
) -> list[Example]:
    """Add rationale-store teachers to generated or table examples, in config order."""
    questions = [Question(e.id, e.question, e.choices, e.answer, i) for i, e in enumerate(examples)]
    outputs = {}
    for t in teachers:
        path = store_path(data.rationale_store, data.name, t, split)
        if not has_store_file(path):
            raise ValueError(f"{path}: no rationale store file for teacher {t!r}, split {split!r}")
        outputs[t] = store_outputs(t, read_store(path), questions, f"{data.name}/{split}", report,
                                   mismatch=data.store_mismatch)
    joined = []
    for i, e in enumerate(examples):
        rationales = {**e.rationales, **{t: outputs[t][i].rationale for t in teachers}}
        answers = {**e.teacher_answers, **{t: outputs[t][i].answer for t in teachers}}
        joined.append(dataclasses.replace(
            e, rationales={t: rationales[t] for t in data.teachers if t in rationales},
            teacher_answers={t: answers[t] for t in data.teachers if t in answers},
        ))
    return joined


def tokenizer_for(data: DataSpec) -> Tokenizer:
    return load_named_tokenizer(data.tokenizer)


def build_features(
    data: DataSpec,
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    *,
    tasks: Sequence[int] | None = None,
) -> tuple[list[TaskFeature], DataReport]:
    """Tokenized pairs for every task (or `tasks`), with the spec's prefixes/limits;
    in `student_mode="rationale_then_answer"` that mode's one-task pairs."""
    if data.student_mode == "rationale_then_answer":
        return build_rationale_then_answer_features(
            examples, tokenizer, teachers=data.teachers, answer_prefix=data.answer_prefix,
            max_input_len=data.max_input_len, max_target_len=data.max_target_len, tasks=tasks,
        )
    return build_task_features(
        examples, tokenizer, teachers=data.teachers, answer_prefix=data.answer_prefix,
        teacher_prefixes=data.teacher_prefixes or None, max_input_len=data.max_input_len,
        max_target_len=data.max_target_len, tasks=tasks,
    )


def row_lengths(data: DataSpec, features: Sequence[TaskFeature]) -> tuple[int, int]:
    """(input, target) row lengths: packed (fixed or chosen from the data) or the limits."""
    if not data.packing:
        return data.max_input_len, data.max_target_len
    li, lt = feature_lengths(features)
    return auto_packed_lengths(
        li, lt, packed_input_len=data.packed_input_len or None,
        packed_target_len=data.packed_target_len or None, seed=data.seed,
    )


def make_iterator(
    data: DataSpec,
    features: Sequence[TaskFeature],
    *,
    batch_size: int,
    seed: int | None = None,
    num_epochs: int | None = None,
    lengths: tuple[int, int] | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
) -> BatchIterator:
    """The resumable training iterator; `lengths` overrides `row_lengths`."""
    input_len, target_len = lengths or row_lengths(data, features)
    return BatchIterator(
        features, batch_size=batch_size, input_len=input_len, target_len=target_len,
        packing=data.packing, seed=data.seed if seed is None else seed, num_epochs=num_epochs,
        process_index=process_index, process_count=process_count,
    )

