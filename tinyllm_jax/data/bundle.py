"""The data of one run, read once: tokenizer, training pairs and eval splits."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from tinyllm_jax.data import pipeline
from tinyllm_jax.data.example import Example
from tinyllm_jax.data.features import ANSWER_TASK, TaskFeature
from tinyllm_jax.data.overlaps import split_overlaps
from tinyllm_jax.data.report import DataReport
from tinyllm_jax.spec import DataSpec


@dataclasses.dataclass
class DataBundle:
    tokenizer: Any
    train_features: list[TaskFeature]
    eval_features: dict[str, list[TaskFeature]]
    eval_examples: dict[str, list[Example]]
    teachers: tuple[str, ...]
    report: DataReport | None


def load_data(data: DataSpec, splits: Sequence[str], *, model_vocab: int,
              train: bool = True) -> DataBundle:
    """Tokenised training pairs (all tasks) and answer-task pairs of each eval split.

    `model_vocab` is the student's vocabulary size: a tokenizer with more ids
    than the embedding table has rows would index past it."""
    tokenizer = pipeline.tokenizer_for(data)
    if tokenizer.vocab_size > model_vocab:
        raise ValueError(
            f"tokenizer {data.tokenizer!r} has {tokenizer.vocab_size} ids but the model's "
            f"vocabulary (config.model.vocab_size) is {model_vocab}; raise the model vocabulary"
        )
    report = None
    train_features: list[TaskFeature] = []
    train_examples: list[Example] = []
    if train:
        # load_examples applies data.train_fraction to the train split.
        train_examples, report = pipeline.load_examples(data, "train")
        train_features, freport = pipeline.build_features(data, train_examples, tokenizer)
        report.merge(freport)
    eval_features, eval_examples = {}, {}
    for split in splits:
        examples, _ = pipeline.load_examples(data, split)
        feats, _ = pipeline.build_features(data, examples, tokenizer, tasks=(ANSWER_TASK,))
        eval_features[split], eval_examples[split] = feats, examples
    if report is not None:
        # Shared ids and eval questions seen in training, in the report
        # printed at start-up (counted, not fatal).
        report.merge(split_overlaps({"train": train_examples, **eval_examples}))
    return DataBundle(tokenizer, train_features, eval_features, eval_examples, data.teachers,
                      report)
