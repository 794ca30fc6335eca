"""Jitted greedy decoding with a KV cache.

One compiled program per (model config, batch size, input length,
max_new_tokens): the token loop is a `lax.while_loop` over a fixed-size
cache, so nothing recompiles per token, and callers pad batches to the
`batching.bucket_length` shapes so nothing recompiles per batch either. The
loop stops early once every row has produced EOS.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from tinyllm_jax.data.features import TaskFeature
from tinyllm_jax.evaluation.batching import eval_batches, eval_order
from tinyllm_jax.evaluation.decoder_step import decode_step, encode
from tinyllm_jax.models.t5 import T5Config
from tinyllm_jax.sharding import global_batch

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
    batch = encoder_input_tokens.shape[0]
    encoded = encode(params, config, encoder_input_tokens, encoder_segment_ids)

    def step(cache: Any, tokens: Array, index: Array) -> tuple[Array, Any]:
        logits, cache = decode_step(params, config, encoded, encoder_segment_ids, cache,
                                    tokens, index, max_new_tokens)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), cache

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


def strip_after_eos(row: Sequence[int] | np.ndarray, eos_id: int = 1) -> list[int]:
    """Tokens before the first EOS."""
    ids = [int(t) for t in row]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def decode_features(
    params: Any, config: T5Config, features: Sequence[TaskFeature], *, mesh: Any,
    batch_size: int, max_new_tokens: int, eos_id: int, pad_id: int = 0, by_length: bool = True,
) -> dict[str, list[int]]:
    """Greedy outputs for answer-task features, keyed by example id.

    `by_length` batches the pairs shortest first, each batch padded to its
    own bucketed length (batching.eval_batches): far less encoder and
    cross-attention work on padding, for one compiled program per bucket.
    """
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
