"""Rank classification: score every answer choice by its log-likelihood.

Standard for multiple choice, and it always names one of the options,
unlike free generation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.features import TaskFeature
from tinyllm_jax.evaluation.batching import eval_batches, eval_order
from tinyllm_jax.losses import token_cross_entropy
from tinyllm_jax.models.t5 import T5, T5Config
from tinyllm_jax.progress import Progress
from tinyllm_jax.sharding import global_batch

Array = jax.Array

_KEYS = ("encoder_input_tokens", "encoder_segment_ids", "decoder_input_tokens",
         "decoder_target_tokens", "decoder_segment_ids", "decoder_loss_weights")


@functools.partial(jax.jit, static_argnames=("config",))
def _sequence_logprob(params: Any, batch: dict[str, Array], config: T5Config) -> Array:
    logits = T5(config).apply(
        {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch["encoder_segment_ids"], batch["decoder_segment_ids"],
    )
    nll, _ = token_cross_entropy(logits, batch["decoder_target_tokens"])
    return -jnp.sum(nll * batch["decoder_loss_weights"], axis=-1)


def rank_choices(
    params: Any, config: T5Config, features: Sequence[TaskFeature], examples: Sequence[Example],
    *, tokenizer: Any, mesh: Any, batch_size: int, by_length: bool = True,
    desc: str | None = None,
) -> dict[str, int]:
    """The index of the choice with the highest log-likelihood under the
    answer task, per example id (features without an example are skipped);
    `desc` names the progress display (progress.py), None shows none."""
    by_id = {ex.id: ex for ex in examples}
    pairs, owners = [], []
    for f in features:
        ex = by_id.get(f.example_id)
        if ex is None:
            continue
        for c, choice in enumerate(ex.choices):
            target = np.asarray(tokenizer.encode(choice) + [tokenizer.eos_id], np.int32)
            pairs.append(TaskFeature(f.example_id, 0, f.inputs, target))
            owners.append((f.example_id, c))
    scores = np.zeros(len(pairs), np.float64)
    order = eval_order(pairs, by_length)
    bar = Progress(len(pairs), unit="choice", desc=desc or "", enabled=desc is not None,
                   leave=False)
    with bar:
        for b, eb in enumerate(eval_batches(pairs, batch_size=batch_size, by_length=by_length)):
            arrays = global_batch({k: eb.batch[k] for k in _KEYS}, mesh)
            out = _sequence_logprob(params, arrays, config)
            rows = np.asarray(multihost_utils.process_allgather(out, tiled=True))
            mine = order[b * batch_size : (b + 1) * batch_size]
            scores[mine] = rows[: len(mine)]
            bar.update(len(mine))
    best: dict[str, tuple[float, int]] = {}
    for (ex_id, c), s in zip(owners, scores):
        if ex_id not in best or s > best[ex_id][0]:
            best[ex_id] = (s, c)
    return {k: v[1] for k, v in best.items()}
