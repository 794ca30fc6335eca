"""Jitted beam search with a KV cache, token for token HF `generate(num_beams=k)`.

It follows the vectorised beam search of transformers 5 (`_beam_search` in
generation/utils.py) step for step, because that is the behaviour users
compare against, heuristics included:

- each step keeps the 2k best (beam, token) continuations of the row;
  those ending in EOS (or reaching `max_new_tokens`) among the first k are
  offered to the k finished slots with the score
  `sum log p / generated_length ** length_penalty` (the length counts EOS);
  the k best of the others continue;
- `early_stopping=True` closes a row once its k finished slots are full;
  `False` closes it once the best running beam, divided by its current
  length ** length_penalty, cannot beat the worst finished one; `"never"`
  uses `max_new_tokens ** length_penalty` there when length_penalty > 0.

A closed row adds no more finished beams, so each row's result does not
depend on the other rows of its batch (padded rows included). One compiled
program per (model config, batch, input length, max_new_tokens, num_beams):
the token loop is a `lax.while_loop`, and the length penalty and early
stopping enter as data.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tinyllm_jax.evaluation.decoder_step import decode_step, encode
from tinyllm_jax.models.t5 import T5Config

Array = jax.Array
# HF's "impossible" score: added, not assigned, so the order among masked
# candidates is HF's too.
_NEG = -1.0e9
EARLY_STOPPING = (False, True, "never")


class BeamOutput(NamedTuple):
    """The k finished hypotheses of every row, best first."""

    sequences: Array  # int32 [batch, num_beams, max_new_tokens]; pad after EOS
    scores: Array  # float32 [batch, num_beams]: length-penalised log-probabilities


class _Beams(NamedTuple):
    running: Array  # int32 [batch, k, T]
    running_scores: Array  # float32 [batch, k]: summed log-probabilities
    finished: Array  # int32 [batch, k, T]
    finished_scores: Array  # float32 [batch, k]
    is_finished: Array  # bool [batch, k]: the slot holds a real hypothesis
    improvable: Array  # bool [batch, 1]: the row is still open
    all_hit: Array  # bool []: every kept continuation of every row ended


def _gather(x: Array, index: Array) -> Array:
    """x[b, index[b, j], ...] for x [batch, n, ...] and index [batch, m]."""
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def _length_divisors(max_new_tokens: int, length_penalty: float, early_stopping: Any
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per step i: the finished-score divisor and the open-row heuristic's divisor.

    Computed in double precision and rounded to float32, as HF's Python
    scalars are when they divide a float32 tensor.
    """
    finish = [(i + 1) ** length_penalty for i in range(max_new_tokens)]
    if early_stopping == "never" and length_penalty > 0.0:
        hope = [max_new_tokens**length_penalty] * max_new_tokens
    else:
        hope = finish
    return np.asarray(finish, np.float32), np.asarray(hope, np.float32)


def _select(beams: _Beams, log_probs: Array, i: Array, divisors: tuple[Array, Array], *,
            num_beams: int, eos_id: int, max_new_tokens: int, stop_when_full: Array,
            ) -> tuple[_Beams, Array]:
    """One beam step from the next-token log-probs [batch, k, vocab] of the
    running beams; also returns each new running beam's source beam [batch, k]."""
    batch, k, vocab = log_probs.shape
    keep = 2 * k  # one EOS id: 2k continuations always leave k that did not end
    finish_div, hope_div = divisors
    total = (log_probs + beams.running_scores[:, :, None]).reshape(batch, k * vocab)
    top_scores, top_index = jax.lax.top_k(total, keep)
    source, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
    top_seqs = _gather(beams.running, source).at[:, :, i].set(token)
    hit = (token == eos_id) | (i == max_new_tokens - 1)

    # The k best continuations that did not end run on.
    masked = top_scores + hit.astype(jnp.float32) * _NEG
    _, nxt = jax.lax.top_k(masked, num_beams)
    running, running_scores = _gather(top_seqs, nxt), _gather(masked, nxt)

    # Ended ones among the first k compete with the finished slots.
    just = hit & (jnp.arange(keep) < num_beams)[None, :]
    offered = top_scores / finish_div[i]
    full = jnp.all(beams.is_finished, axis=-1, keepdims=True) & stop_when_full
    offered = offered + full.astype(jnp.float32) * _NEG
    offered = offered + (~beams.improvable).astype(jnp.float32) * _NEG
    offered = offered + (~just).astype(jnp.float32) * _NEG
    merged = jnp.concatenate([beams.finished_scores, offered], axis=1)
    _, best = jax.lax.top_k(merged, num_beams)
    finished = _gather(jnp.concatenate([beams.finished, top_seqs], axis=1), best)
    finished_scores = _gather(merged, best)
    is_finished = _gather(jnp.concatenate([beams.is_finished, just], axis=1), best)

    # Is the row still open: could its best running beam beat the worst finished one?
    hope = running_scores[:, :1] / hope_div[i]
    worst = jnp.where(is_finished, jnp.min(finished_scores, axis=1, keepdims=True), _NEG)
    improvable = beams.improvable & jnp.any(hope > worst, axis=-1, keepdims=True)
    return _Beams(running, running_scores, finished, finished_scores, is_finished,
                  improvable, jnp.all(hit)), _gather(source, nxt)


def _reorder_cache(cache: Any, source: Array) -> Any:
    """The self-attention caches of the beams each new beam continues.

    Rows are batch-major (row b*k + j is beam j of input b), so the gather
    stays within an input's rows and keeps the batch sharding. The
    cross-attention caches are the same for every beam of an input and are
    left as they are.
    """
    batch, k = source.shape

    def reorder(path: tuple, x: Array) -> Array:
        if getattr(path[-1], "key", None) not in ("cached_key", "cached_value"):
            return x
        rows = x.reshape((batch, k) + x.shape[1:])
        return _gather(rows, source).reshape(x.shape)

    return jax.tree_util.tree_map_with_path(reorder, cache)


def beam_search(
    params: Any,
    encoder_input_tokens: Array,
    encoder_segment_ids: Array,
    *,
    config: T5Config,
    max_new_tokens: int,
    num_beams: int,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    eos_id: int = 1,
    pad_id: int = 0,
) -> BeamOutput:
    """The `num_beams` best finished continuations of every row (HF's beam search).

    Sequences hold the generated tokens only (HF's also start with the
    decoder start token) and `pad_id` after EOS (HF fills those with EOS).
    `length_penalty` and `early_stopping` are data, not part of the program:
    changing them compiles nothing new.
    """
    if early_stopping not in EARLY_STOPPING or not isinstance(early_stopping, bool | str):
        raise ValueError(f"beam_search: early_stopping must be True, False or 'never', got "
                         f"{early_stopping!r}")
    finish_div, hope_div = _length_divisors(max_new_tokens, float(length_penalty),
                                            early_stopping)
    return beam_search_program(
        params, encoder_input_tokens, encoder_segment_ids, jnp.asarray(finish_div),
        jnp.asarray(hope_div), jnp.bool_(early_stopping is True), config=config,
        max_new_tokens=max_new_tokens, num_beams=num_beams, eos_id=eos_id, pad_id=pad_id)


@functools.partial(jax.jit, static_argnames=(
    "config", "max_new_tokens", "num_beams", "eos_id", "pad_id"))
def beam_search_program(
    params: Any, encoder_input_tokens: Array, encoder_segment_ids: Array, finish_div: Array,
    hope_div: Array, stop_when_full: Array, *, config: T5Config, max_new_tokens: int,
    num_beams: int, eos_id: int, pad_id: int,
) -> BeamOutput:
    """The compiled beam search behind `beam_search`, with the length penalty as
    per-step divisors and early stopping as `stop_when_full` plus `hope_div`."""
    batch, k, steps = encoder_input_tokens.shape[0], num_beams, max_new_tokens
    encoded = jnp.repeat(encode(params, config, encoder_input_tokens, encoder_segment_ids),
                         k, axis=0)
    segments = jnp.repeat(encoder_segment_ids, k, axis=0)
    select = functools.partial(_select, divisors=(finish_div, hope_div), num_beams=k,
                               eos_id=eos_id, max_new_tokens=steps,
                               stop_when_full=stop_when_full)
    def step(cache: Any, tokens: Array, i: Array) -> tuple[Array, Any]:
        logits, cache = decode_step(params, config, encoded, segments, cache, tokens, i, steps)
        return jax.nn.log_softmax(logits, axis=-1).reshape(batch, k, -1), cache

    empty = jnp.full((batch, k, steps), pad_id, jnp.int32)
    # Only beam 0 is live at the start, so the first step does not pick the
    # same token k times.
    scores0 = jnp.zeros((batch, k), jnp.float32).at[:, 1:].set(_NEG)
    beams = _Beams(empty, scores0, empty, jnp.full((batch, k), _NEG, jnp.float32),
                   jnp.zeros((batch, k), bool), jnp.ones((batch, 1), bool), jnp.bool_(False))
    # The first step creates the cache; the loop reuses it with fixed shapes.
    start = jnp.zeros((batch * k,), jnp.int32)  # T5's decoder start token is pad (0)
    log_probs, cache = step(None, start, jnp.int32(0))
    beams, source = select(beams, log_probs, jnp.int32(0))
    cache = _reorder_cache(cache, source)

    def is_open(b: _Beams) -> Array:
        # HF's stopping rule over the whole batch; closed rows no longer change.
        full = jnp.all(b.is_finished) & stop_when_full
        return jnp.any(b.improvable) & ~full & ~b.all_hit

    def cond(carry: tuple) -> Array:
        i, _, b = carry
        return (i < steps) & is_open(b)

    def body(carry: tuple) -> tuple:
        i, cache, b = carry
        log_probs, cache = step(cache, b.running[:, :, i - 1].reshape(-1), i)
        b, source = select(b, log_probs, i)
        return i + 1, _reorder_cache(cache, source), b

    _, _, beams = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, beams))
    return BeamOutput(beams.finished, beams.finished_scores)
