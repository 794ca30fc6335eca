"""Jitted greedy decoding with a KV cache.

One compiled program per (model config, batch size, input length,
max_new_tokens): the token loop is a `lax.while_loop` over a fixed-size
cache, so nothing recompiles per token, and callers pad batches to a few
bucket shapes so nothing recompiles per batch either. The loop stops early
once every row has produced EOS.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tinyllm_jax.models.t5 import T5, T5Config

Array = jax.Array


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "eos_id", "pad_id"))
def greedy_decode(
    params: Any,
    encoder_input_tokens: Array,
    encoder_segment_ids: Array,
    *,
    config: T5Config,
    max_new_tokens: int,
    eos_id: int = 1,
    pad_id: int = 0,
) -> Array:
    """Greedy continuation of every row: int32 [batch, max_new_tokens].

    Tokens after a row's EOS are `pad_id`, as in HF `generate` (which also
    prepends the decoder start token; this does not).
    """
    model = T5(config)
    variables = {"params": params}
    batch = encoder_input_tokens.shape[0]
    encoded = model.apply(
        variables, encoder_input_tokens, encoder_segment_ids, method=T5.encode
    )

    def step(cache: Any, tokens: Array, index: Array) -> tuple[Array, Any]:
        state = {**variables, "cache": cache} if cache is not None else variables
        logits, mutated = model.apply(
            state, encoded, encoder_segment_ids, tokens[:, None], None, False, True,
            index, max_new_tokens, mutable=["cache"], method=T5.decode,
        )
        return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), mutated["cache"]

    # The first step creates the cache (and projects the encoder output once
    # for cross-attention); the loop then reuses it with fixed shapes.
    start = jnp.zeros((batch,), jnp.int32)  # T5's decoder start token is pad (0)
    first, cache = step(None, start, jnp.int32(0))
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = first == eos_id

    def cond(carry: tuple) -> Array:
        i, _, _, _, done = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry: tuple) -> tuple:
        i, prev, cache, out, done = carry
        nxt, cache = step(cache, prev, i)
        nxt = jnp.where(done, pad_id, nxt)
        out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, i))
        return i + 1, nxt, cache, out, done | (nxt == eos_id)

    _, _, _, out, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), first, cache, out, done))
    return out


def bucket(n: int, minimum: int = 16) -> int:
    """Next power of two >= n (and >= minimum): the padded shape for n."""
    size = minimum
    while size < n:
        size *= 2
    return size


def pad_batch(
    sequences: list[list[int]], length: int, rows: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token lists into [rows, length] tokens and 0/1 segment ids."""
    tokens = np.full((rows, length), pad_id, np.int32)
    segments = np.zeros((rows, length), np.int32)
    for r, seq in enumerate(sequences):
        seq = seq[:length]
        tokens[r, : len(seq)] = seq
        segments[r, : len(seq)] = 1
    return tokens, segments


def strip_after_eos(row: np.ndarray, eos_id: int = 1) -> list[int]:
    """Tokens before the first EOS."""
    ids = [int(t) for t in row]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids
