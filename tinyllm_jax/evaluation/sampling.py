"""Jitted sampling with a KV cache: temperature, top-k and top-p (nucleus).

The filters are HF's logits warpers, applied in HF's order (temperature,
then top-k, then top-p), with HF's rules: top-k keeps every token whose
logit is at least the k-th largest (ties kept); top-p drops, in ascending
order of probability, the tokens whose cumulative probability is <= 1 - p,
always keeping the most likely one. HF's random draws cannot be reproduced
in JAX, so the filtered distribution is what is equal to HF's, not the
tokens.

Row r of a call draws step t from `fold_in(fold_in(key, row_ids[r]), t)`:
a seed and a global row number fix a row's tokens, whatever the batch size
or the bucket it was padded into. Temperature, top-k and top-p are data,
so one compiled program per (model config, batch, input length,
max_new_tokens) serves every setting.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from tinyllm_jax.evaluation.decoder_step import decode_step, encode, token_loop
from tinyllm_jax.models.t5 import T5Config

Array = jax.Array


def filter_logits(logits: Array, temperature: Array | float, top_k: Array | int,
                  top_p: Array | float) -> Array:
    """float32 [..., vocab] logits / temperature with the tokens top-k and top-p
    drop set to -inf; top_k=0 and top_p=1 switch those filters off."""
    x = logits.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    vocab = x.shape[-1]
    top_k = jnp.asarray(top_k, jnp.int32)
    k = jnp.clip(top_k, 1, vocab)
    descending = -jnp.sort(-x, axis=-1)
    kth = jnp.take_along_axis(descending, jnp.broadcast_to(k - 1, x.shape[:-1])[..., None],
                              axis=-1)
    x = jnp.where((top_k > 0) & (x < kth), -jnp.inf, x)

    order = jnp.argsort(x, axis=-1)  # ascending, as HF sorts
    ascending = jnp.take_along_axis(x, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(ascending, axis=-1), axis=-1)
    drop_sorted = cumulative <= 1.0 - jnp.asarray(top_p, jnp.float32)
    drop_sorted = drop_sorted.at[..., -1].set(False)  # keep the most likely token
    drop = jnp.take_along_axis(drop_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where((jnp.asarray(top_p) < 1.0) & drop, -jnp.inf, x)


@functools.partial(jax.jit, static_argnames=("config", "max_new_tokens", "eos_id", "pad_id"))
def sample_decode(
    params: Any,
    encoder_input_tokens: Array,
    encoder_segment_ids: Array,
    row_ids: Array,
    key: Array,
    temperature: Array | float = 1.0,
    top_k: Array | int = 0,
    top_p: Array | float = 1.0,
    *,
    config: T5Config,
    max_new_tokens: int,
    eos_id: int = 1,
    pad_id: int = 0,
) -> Array:
    """A sampled continuation of every row: int32 [batch, max_new_tokens], pad
    after EOS. `row_ids` [batch] numbers the rows for their random streams."""
    batch = encoder_input_tokens.shape[0]
    encoded = encode(params, config, encoder_input_tokens, encoder_segment_ids)
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, row_ids)

    def step(cache: Any, tokens: Array, index: Array) -> tuple[Array, Any]:
        logits, cache = decode_step(params, config, encoded, encoder_segment_ids, cache,
                                    tokens, index, max_new_tokens)
        filtered = filter_logits(logits, temperature, top_k, top_p)
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, index)
        drawn = jax.vmap(jax.random.categorical)(keys, filtered)
        return drawn.astype(jnp.int32), cache

    return token_loop(step, batch, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id)
