"""Scoring a rationale-then-answer student (`config.data.student_mode`).

    metrics, rows = evaluate_rationale_then_answer(params, config, features, examples,
                                                   tokenizer, mesh, batch_size=64,
                                                   max_new_tokens=96, by_length=True, rank=True)

1. Greedy decoding from the input alone, up to `max_new_tokens` (which must
   hold rationale + separator + answer).
2. The answer is parsed from the generated text (`answer_parsing`) and scored
   with `scoring.accuracy_report` exactly as a multi-task answer is (it is
   passed re-encoded, so the report decodes the answer span alone). A
   generation without the separator scores as wrong; `no_separator` counts
   them (also as a share, `no_separator_fraction`).
3. Choice ranking scores only the answer span: each choice's log-likelihood
   as the continuation of the student's *own* generated rationale and the
   separator, ``encode(rationale) + encode(SEPARATOR)`` (the token layout of
   the training targets), with loss weight 0 on that prefix. The generated
   rationale is what the student has at test time; conditioning on a gold
   (teacher) rationale would hand it the teacher's reasoning, and the teacher's
   stated answer with it. Without a separator the whole generation is the
   rationale.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from tinyllm_jax.data.example import Example
from tinyllm_jax.data.features import ANSWER_TASK, TaskFeature
from tinyllm_jax.data.iterator import process_layout
from tinyllm_jax.data.rationale_then_answer import SEPARATOR
from tinyllm_jax.evaluation.answer_parsing import ParsedGeneration, parse_generation
from tinyllm_jax.evaluation.batching import eval_batches, eval_order
from tinyllm_jax.evaluation.decoding import decode_features
from tinyllm_jax.evaluation.scoring import accuracy_report
from tinyllm_jax.losses import token_cross_entropy
from tinyllm_jax.models.t5 import T5, T5Config
from tinyllm_jax.sharding import global_batch

Array = jax.Array

_KEYS = ("encoder_input_tokens", "encoder_segment_ids", "decoder_input_tokens",
         "decoder_target_tokens", "decoder_segment_ids", "decoder_loss_weights")


@functools.partial(jax.jit, static_argnames=("config",))
def _weighted_logprob(params: Any, batch: dict[str, Array], config: T5Config) -> Array:
    logits = T5(config).apply(
        {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch["encoder_segment_ids"], batch["decoder_segment_ids"],
    )
    nll, _ = token_cross_entropy(logits, batch["decoder_target_tokens"])
    return -jnp.sum(nll * batch["decoder_loss_weights"], axis=-1)


def rank_answer_spans(
    params: Any, config: T5Config, features: Sequence[TaskFeature], examples: Sequence[Example],
    parsed: Mapping[str, ParsedGeneration], *, tokenizer: Any, mesh: Any, batch_size: int,
    by_length: bool = True,
) -> dict[str, int]:
    """Index of the most likely choice per example id, scoring each choice's
    tokens (and EOS) after the example's generated rationale and the separator."""
    by_id = {ex.id: ex for ex in examples}
    separator = tokenizer.encode(SEPARATOR)
    pairs, owners, prefix_lens = [], [], []
    for f in features:
        ex, gen = by_id.get(f.example_id), parsed.get(f.example_id)
        if ex is None or gen is None:
            continue
        prefix = tokenizer.encode(gen.rationale) + separator
        for c, choice in enumerate(ex.choices):
            target = np.asarray(prefix + tokenizer.encode(choice) + [tokenizer.eos_id], np.int32)
            pairs.append(TaskFeature(f.example_id, ANSWER_TASK, f.inputs, target))
            owners.append((f.example_id, c))
            prefix_lens.append(len(prefix))
    if not pairs:
        return {}
    index, count = process_layout(None, None)
    local = batch_size // count
    scores = np.zeros(len(pairs), np.float64)
    order = eval_order(pairs, by_length)
    for b, eb in enumerate(eval_batches(pairs, batch_size=batch_size, by_length=by_length)):
        mine = order[b * batch_size : (b + 1) * batch_size]
        # Zero the weights of this host's rows over their rationale prefix.
        weights = eb.batch["decoder_loss_weights"].copy()
        for r, i in enumerate(mine[index * local : (index + 1) * local]):
            weights[r, : prefix_lens[i]] = 0
        arrays = global_batch({**{k: eb.batch[k] for k in _KEYS},
                               "decoder_loss_weights": weights}, mesh)
        out = _weighted_logprob(params, {k: arrays[k] for k in _KEYS}, config)
        rows = np.asarray(multihost_utils.process_allgather(out, tiled=True))
        scores[mine] = rows[: len(mine)]
    best: dict[str, tuple[float, int]] = {}
    for (ex_id, c), s in zip(owners, scores):
        if ex_id not in best or s > best[ex_id][0]:
            best[ex_id] = (s, c)
    return {k: v[1] for k, v in best.items()}


def evaluate_rationale_then_answer(
    params: Any, config: T5Config, features: Sequence[TaskFeature], examples: Sequence[Example],
    tokenizer: Any, mesh: Any, *, batch_size: int, max_new_tokens: int, by_length: bool,
    rank: bool,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, prediction rows) of a rationale-then-answer student; see the module doc."""
    config = config.replace(dropout_rate=0.0)
    generated = decode_features(
        params, config, features, mesh=mesh, batch_size=batch_size,
        max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
        by_length=by_length,
    )
    texts = {k: tokenizer.decode(v) for k, v in generated.items()}
    parsed = {k: parse_generation(t) for k, t in texts.items()}
    # The answer span as tokens, so accuracy_report scores it like any answer.
    answers = {k: tokenizer.encode(p.answer) if p.answer else [] for k, p in parsed.items()}
    ranked = None
    if rank:
        ranked = rank_answer_spans(params, config, features, examples, parsed,
                                   tokenizer=tokenizer, mesh=mesh, batch_size=batch_size,
                                   by_length=by_length)
    metrics, rows = accuracy_report(answers, examples, tokenizer, ranked)
    missing = 0
    for row in rows:
        p = parsed[row["id"]]
        row.update(generation=texts[row["id"]], rationale=p.rationale,
                   separator_found=p.answer is not None)
        missing += p.answer is None
    metrics["no_separator"] = float(missing)
    metrics["no_separator_fraction"] = missing / max(len(rows), 1)
    return metrics, rows
