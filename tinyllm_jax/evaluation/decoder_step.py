"""The two model calls every KV-cache decoder makes: encode once, then one token a step.

Shared by greedy decoding, beam search and sampling so that the three run
exactly the same model computation and differ only in how they pick tokens;
`token_loop` is the one-hypothesis-per-row loop of greedy decoding and
sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from tinyllm_jax.models.t5 import T5, T5Config

Array = jax.Array


def encode(params: Any, config: T5Config, tokens: Array, segment_ids: Array) -> Array:
    """Encoder output [batch, length, d_model] of padded inputs."""
    return T5(config).apply({"params": params}, tokens, segment_ids, method=T5.encode)


def decode_step(
    params: Any, config: T5Config, encoded: Array, encoder_segment_ids: Array, cache: Any,
    tokens: Array, index: Array, max_decode_len: int,
) -> tuple[Array, Any]:
    """(float32 next-token logits [batch, vocab], updated cache) for `tokens` [batch]
    written at decoder position `index`.

    `cache=None` creates the cache: the self-attention buffers of
    `max_decode_len` positions and the cross-attention keys and values,
    projected from `encoded` once here and reused by every later step.
    """
    variables: dict[str, Any] = {"params": params}
    if cache is not None:
        variables["cache"] = cache
    logits, mutated = T5(config).apply(
        variables, encoded, encoder_segment_ids, tokens[:, None], None, False, True,
        index, max_decode_len, mutable=["cache"], method=T5.decode,
    )
    return logits[:, -1], mutated["cache"]


def token_loop(
    step: Callable[[Any, Array, Array], tuple[Array, Any]], batch: int, *,
    max_new_tokens: int, eos_id: int, pad_id: int,
) -> Array:
    """int32 [batch, max_new_tokens]: `step(cache, previous tokens, index) ->
    (next tokens, cache)` run from T5's decoder start token (pad, 0), pad
    after each row's EOS, stopping once every row has produced EOS.

    The first step creates the cache (and projects the encoder output once
    for cross-attention); the `lax.while_loop` then reuses it with fixed
    shapes, so nothing recompiles per token.
    """
    start = jnp.zeros((batch,), jnp.int32)
    first, cache = step(None, start, jnp.int32(0))
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)

    def cond(carry: tuple) -> Array:
        i, _, _, _, done = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry: tuple) -> tuple:
        i, prev, cache, out, done = carry
        nxt, cache = step(cache, prev, i)
        nxt = jnp.where(done, pad_id, nxt)
        out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, i))
        return i + 1, nxt, cache, out, done | (nxt == eos_id)

    carry = (jnp.int32(1), first, cache, out, first == eos_id)
    return jax.lax.while_loop(cond, body, carry)[3]
