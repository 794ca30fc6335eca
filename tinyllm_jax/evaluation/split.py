"""One split scored the way training and `--mode=eval` score it.

    metrics, rows = evaluate_split(params, config, features, examples, tokenizer, mesh,
                                   batch_size=64, max_new_tokens=max_new_tokens_for(
                                       examples, tokenizer, 0), by_length=True, rank=False)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.features import TaskFeature
from tinyllm_jax.evaluation.decode_options import DecodeOptions
from tinyllm_jax.evaluation.decoding import GREEDY, decode_features
from tinyllm_jax.evaluation.ranking import rank_choices
from tinyllm_jax.evaluation.scoring import accuracy_report
from tinyllm_jax.models.t5 import T5Config


def max_new_tokens_for(examples: Sequence[Example], tokenizer: Any, configured: int) -> int:
    """Decode length: `configured` when > 0, else the longest gold answer + 8
    tokens (room for an EOS and a little more without decoding to the limit)."""
    if configured > 0:
        return int(configured)
    longest = max((len(tokenizer.encode(ex.answer)) for ex in examples), default=8)
    return longest + 8


def evaluate_split(
    params: Any, config: T5Config, features: Sequence[TaskFeature], examples: Sequence[Example],
    tokenizer: Any, mesh: Any, *, batch_size: int, max_new_tokens: int, by_length: bool,
    rank: bool, options: DecodeOptions = GREEDY, desc: str | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, prediction rows) of answer-task `features`: answers decoded
    as `options` ask (greedy by default) with dropout off, plus rank
    classification of the choices with `rank`. `desc` (e.g. "eval valid")
    names the progress displays; None shows none."""
    config = config.replace(dropout_rate=0.0)
    outputs = decode_features(
        params, config, features, mesh=mesh, batch_size=batch_size,
        max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
        by_length=by_length, options=options, desc=desc and f"{desc} generate",
    )
    ranked = None
    if rank:
        ranked = rank_choices(
            params, config, features, examples, tokenizer=tokenizer, mesh=mesh,
            batch_size=batch_size, by_length=by_length, desc=desc and f"{desc} rank",
        )
    return accuracy_report(outputs, examples, tokenizer, ranked)


def generate_rationales(
    params: Any, config: T5Config, examples: Sequence[Example], *, prefix: str, tokenizer: Any,
    mesh: Any, batch_size: int, max_input_len: int, max_new_tokens: int,
    options: DecodeOptions = GREEDY,
) -> dict[str, str]:
    """The student's own rationale for each example under a teacher's prefix,
    keyed by example id (inputs cut to `max_input_len` tokens with EOS)."""
    config = config.replace(dropout_rate=0.0)
    feats = []
    for ex in examples:
        ids = tokenizer.encode(prefix + ex.input)[: max_input_len - 1] + [tokenizer.eos_id]
        feats.append(TaskFeature(ex.id, 0, np.asarray(ids, np.int32),
                                 np.asarray([tokenizer.eos_id], np.int32)))
    outs = decode_features(
        params, config, feats, mesh=mesh, batch_size=batch_size, max_new_tokens=max_new_tokens,
        eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, options=options,
        desc=f"rationales {prefix.strip()}",
    )
    return {k: tokenizer.decode(v) for k, v in outs.items()}
