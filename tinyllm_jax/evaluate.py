"""Answer accuracy: greedy-decode the `predict:` task and compare with gold.

`accuracy` is the reference code's metric (decoded text == gold choice text).
`accuracy_normalized` forgives case, whitespace, trailing punctuation and
answers given as the option letter ("(b)", "b") or as "(b) text".
`accuracy_ranked` (rank classification) scores every choice by its
log-likelihood under the answer task and takes the best one.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from tinyllm_jax.data.example import LETTERS, Example
from tinyllm_jax.decode import greedy_decode, strip_after_eos
from tinyllm_jax.losses import token_cross_entropy
from tinyllm_jax.models.t5 import T5, T5Config
from tinyllm_jax.sharding import global_batch

Array = jax.Array
_SPACE = re.compile(r"\s+")
_LETTER = re.compile(r"^\(?([a-z])\)?(?:\s+(.*))?$")


def normalize(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower()).strip(string.punctuation + " ")


def is_correct(prediction: str, example: Example) -> tuple[bool, bool]:
    """(exact, normalized) match of a decoded answer with the gold choice."""
    exact = prediction.strip() == example.answer.strip()
    pred, gold = normalize(prediction), normalize(example.answer)
    if exact or pred == gold:
        return exact, True
    m = _LETTER.match(pred)
    if m:
        idx = LETTERS.index(m.group(1))
        if idx < len(example.choices) and example.choices[idx] == example.answer:
            rest = m.group(2)
            return False, rest is None or normalize(rest) == gold
    return False, False


def decode_features(
    params: Any, config: T5Config, features: Sequence[Any], *, mesh: Any, batch_size: int,
    max_new_tokens: int, eos_id: int, pad_id: int = 0, by_length: bool = True,
) -> dict[str, list[int]]:
    """Greedy outputs for answer-task features, keyed by example id.

    `by_length` batches the pairs shortest first, each batch padded to its
    own bucketed length (pipeline.eval_batches): far less encoder and
    cross-attention work on padding, for one compiled program per bucket.
    """
    from tinyllm_jax.data.pipeline import eval_batches, eval_order

    outputs: dict[str, list[int]] = {}
    order = [features[i].example_id for i in eval_order(features, by_length)]
    batches = eval_batches(features, batch_size=batch_size, by_length=by_length)
    for b, eb in enumerate(batches):
        arrays = global_batch(
            {k: eb.batch[k] for k in ("encoder_input_tokens", "encoder_segment_ids")}, mesh
        )
        out = greedy_decode(
            params, arrays["encoder_input_tokens"], arrays["encoder_segment_ids"],
            config=config, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
        )
        rows = np.asarray(multihost_utils.process_allgather(out, tiled=True))
        # Global row r of batch b is feature b*batch_size + r (hosts hold
        # contiguous shares in process order).
        for r, row in enumerate(rows):
            i = b * batch_size + r
            if i < len(order):
                outputs[order[i]] = strip_after_eos(row, eos_id)
    return outputs


@functools.partial(jax.jit, static_argnames=("config",))
def _sequence_logprob(params: Any, batch: dict[str, Array], config: T5Config) -> Array:
    logits = T5(config).apply(
        {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
        batch["encoder_segment_ids"], batch["decoder_segment_ids"],
    )
    nll, _ = token_cross_entropy(logits, batch["decoder_target_tokens"])
    return -jnp.sum(nll * batch["decoder_loss_weights"], axis=-1)


def rank_choices(
    params: Any, config: T5Config, features: Sequence[Any], examples: Sequence[Example], *,
    tokenizer: Any, mesh: Any, batch_size: int, by_length: bool = True,
) -> dict[str, int]:
    """Rank classification: the choice with the highest log-likelihood under
    the answer task, per example id. Standard for multiple choice, and it
    always names one of the options, unlike free generation."""
    from tinyllm_jax.data.features import TaskFeature
    from tinyllm_jax.data.pipeline import eval_batches, eval_order

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
    keys = ("encoder_input_tokens", "encoder_segment_ids", "decoder_input_tokens",
            "decoder_target_tokens", "decoder_segment_ids", "decoder_loss_weights")
    order = eval_order(pairs, by_length)
    for b, eb in enumerate(eval_batches(pairs, batch_size=batch_size, by_length=by_length)):
        arrays = global_batch({k: eb.batch[k] for k in keys}, mesh)
        out = _sequence_logprob(params, arrays, config)
        rows = np.asarray(multihost_utils.process_allgather(out, tiled=True))
        mine = order[b * batch_size : (b + 1) * batch_size]
        scores[mine] = rows[: len(mine)]
    best: dict[str, tuple[float, int]] = {}
    for (ex_id, c), s in zip(owners, scores):
        if ex_id not in best or s > best[ex_id][0]:
            best[ex_id] = (s, c)
    return {k: v[1] for k, v in best.items()}


def accuracy_report(
    outputs: dict[str, list[int]], examples: Sequence[Example], tokenizer: Any,
    ranked: dict[str, int] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    rows, exact, norm, rank = [], 0, 0, 0
    for ex in examples:
        if ex.id not in outputs:
            continue
        pred = tokenizer.decode(outputs[ex.id])
        e, n = is_correct(pred, ex)
        exact += e
        norm += n
        row = {
            "id": ex.id, "input": ex.input, "gold": ex.answer, "prediction": pred,
            "correct": e, "correct_normalized": n, "label_source": ex.label_source,
        }
        if ranked is not None and ex.id in ranked:
            choice = ex.choices[ranked[ex.id]]
            row.update(ranked_choice=choice, correct_ranked=choice == ex.answer)
            rank += choice == ex.answer
        rows.append(row)
    total = max(len(rows), 1)
    chance = float(np.mean([1.0 / len(ex.choices) for ex in examples])) if examples else 0.0
    report = {
        "accuracy": exact / total, "accuracy_normalized": norm / total,
        "examples": float(len(rows)), "chance": chance,
    }
    if ranked is not None:
        report["accuracy_ranked"] = rank / total
    return report, rows


def generate_rationales(
    params: Any, config: T5Config, examples: Sequence[Example], *, prefix: str, tokenizer: Any,
    mesh: Any, batch_size: int, max_input_len: int, max_new_tokens: int,
) -> dict[str, str]:
    """The student's own rationale for each example under a teacher's prefix."""
    from tinyllm_jax.data.features import TaskFeature

    feats = []
    for ex in examples:
        ids = tokenizer.encode(prefix + ex.input)[: max_input_len - 1] + [tokenizer.eos_id]
        feats.append(TaskFeature(ex.id, 0, np.asarray(ids, np.int32),
                                 np.asarray([tokenizer.eos_id], np.int32)))
    outs = decode_features(
        params, config, feats, mesh=mesh, batch_size=batch_size, max_new_tokens=max_new_tokens,
        eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
    )
    return {k: tokenizer.decode(v) for k, v in outs.items()}


def warm_params(params: Any) -> Any:
    """Params as jax arrays (restored numpy trees are accepted too)."""
    return jax.tree.map(jnp.asarray, params)
