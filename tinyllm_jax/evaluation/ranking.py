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
from tinyllm_jax.evaluation.batching import bucket_length, eval_batches, eval_order
from tinyllm_jax.losses import token_cross_entropy
from tinyllm_jax.models.t5 import T5, T5Config
from tinyllm_jax.progress import Progress
from tinyllm_jax.sharding import global_batch

Array = jax.Array

@functools.partial(jax.jit, static_argnames=("config",))
def _choice_logprobs(
    params: Any, encoder_tokens: Array, encoder_segments: Array, decoder_inputs: Array,
    decoder_targets: Array, decoder_weights: Array, config: T5Config,
) -> Array:
    """Log-likelihood [B, C] of C choices per input, the input encoded once.

    The encoder runs on the B inputs; its output is repeated for the C
    choices of each row (a copy, no recompute) and the decoder scores all
    B * C choices in one pass. Re-encoding the input once per choice, as a
    batch of (input, choice) pairs does, costs C encoder passes.
    """
    model = T5(config)
    variables = {"params": params}
    b, c, lt = decoder_inputs.shape
    encoded = model.apply(variables, encoder_tokens, encoder_segments, method=T5.encode)
    logits = model.apply(
        variables, jnp.repeat(encoded, c, axis=0), jnp.repeat(encoder_segments, c, axis=0),
        decoder_inputs.reshape(b * c, lt), (decoder_weights > 0).reshape(b * c, lt).astype(
            jnp.int32), method=T5.decode,
    )
    nll, _ = token_cross_entropy(logits, decoder_targets.reshape(b * c, lt))
    return -jnp.sum(nll * decoder_weights.reshape(b * c, lt), axis=-1).reshape(b, c)


def _choice_arrays(
    choices: Sequence[Sequence[np.ndarray]], num_choices: int, length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoder inputs (shifted right, start token 0), targets, weights: [rows, C, length]."""
    rows = len(choices)
    dec_in = np.zeros((rows, num_choices, length), np.int32)
    dec_tgt = np.zeros((rows, num_choices, length), np.int32)
    weights = np.zeros((rows, num_choices, length), np.float32)
    for r, row in enumerate(choices):
        for c, t in enumerate(row):
            n = len(t)
            dec_tgt[r, c, :n] = t
            dec_in[r, c, 1:n] = t[: n - 1]
            weights[r, c, :n] = 1.0
    return dec_in, dec_tgt, weights


def rank_choices(
    params: Any, config: T5Config, features: Sequence[TaskFeature], examples: Sequence[Example],
    *, tokenizer: Any, mesh: Any, batch_size: int, by_length: bool = True,
    desc: str | None = None,
) -> dict[str, int]:
    """The index of the choice with the highest log-likelihood under the
    answer task, per example id (features without an example are skipped).

    Batches are the inputs' eval batches (length-sorted with `by_length`);
    each input is encoded once and all its choices are scored against that
    encoder output (`_choice_logprobs`), the choices padded to the bucketed
    length of the batch's longest one. Ties go to the first choice. `desc`
    names the progress display (progress.py), None shows none.
    """
    by_id = {ex.id: ex for ex in examples}
    feats = [f for f in features if f.example_id in by_id]
    encoded = {ex.id: [np.asarray(tokenizer.encode(c) + [tokenizer.eos_id], np.int32)
                       for c in ex.choices] for ex in examples}
    order = eval_order(feats, by_length)
    best: dict[str, int] = {}
    bar = Progress(len(feats), unit="ex", desc=desc or "", enabled=desc is not None, leave=False)
    with bar:
        _rank_batches(params, config, feats, encoded, order, best, bar, mesh=mesh,
                      batch_size=batch_size, by_length=by_length)
    return best


def _rank_batches(params: Any, config: T5Config, feats: list[TaskFeature],
                  encoded: dict[str, list[np.ndarray]], order: list[int], best: dict[str, int],
                  bar: Progress, *, mesh: Any, batch_size: int, by_length: bool) -> None:
    for b, eb in enumerate(eval_batches(feats, batch_size=batch_size, by_length=by_length)):
        # Shapes from the whole global batch, so every host builds the same ones.
        ids = [feats[i].example_id for i in order[b * batch_size : (b + 1) * batch_size]]
        num_choices = max(len(encoded[i]) for i in ids)
        length = bucket_length(max(len(t) for i in ids for t in encoded[i]))
        local = [encoded[i] if i else [] for i in eb.example_ids]
        arrays = global_batch({
            "encoder_tokens": eb.batch["encoder_input_tokens"],
            "encoder_segments": eb.batch["encoder_segment_ids"],
            **dict(zip(("decoder_inputs", "decoder_targets", "decoder_weights"),
                       _choice_arrays(local, num_choices, length))),
        }, mesh)
        out = _choice_logprobs(params, **arrays, config=config)
        rows = np.asarray(multihost_utils.process_allgather(out, tiled=True))
        for r, ex_id in enumerate(ids):
            best[ex_id] = int(np.argmax(rows[r, : len(encoded[ex_id])]))
        bar.update(len(ids))
