"""The two model calls every KV-cache decoder makes: encode once, then one token a step.

Shared by greedy decoding, beam search and sampling so that the three run
exactly the same model computation and differ only in how they pick tokens.
"""

from __future__ import annotations

from typing import Any

import jax

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
