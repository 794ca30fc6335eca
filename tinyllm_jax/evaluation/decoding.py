"""Jitted greedy decoding with a KV cache, and the one entry to every decoder.

`decode_rows` runs greedy decoding, beam search (beam_search.py) or
sampling (sampling.py) as `DecodeOptions` ask; `decode_features` decodes an
eval set with it.

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
from tinyllm_jax.evaluation.beam_search import beam_search
from tinyllm_jax.evaluation.decode_options import DecodeOptions
from tinyllm_jax.evaluation.decoder_step import decode_step, encode, token_loop
from tinyllm_jax.evaluation.sampling import sample_decode
from tinyllm_jax.models.t5 import T5Config
from tinyllm_jax.progress import Progress
from tinyllm_jax.sharding import global_batch

Array = jax.Array
GREEDY = DecodeOptions()


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

    return token_loop(step, batch, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id)


def decode_rows(
    params: Any, encoder_input_tokens: Array, encoder_segment_ids: Array, row_ids: Array, *,
    config: T5Config, options: DecodeOptions, max_new_tokens: int, eos_id: int = 1,
    pad_id: int = 0,
) -> Array:
    """int32 [batch, max_new_tokens] continuations decoded as `options` ask (pad
    after EOS); beam search returns each row's best hypothesis. `row_ids`
    [batch] are the rows' global numbers, which seed their sampling streams."""
    if options.mode == "beam":
        return beam_search(
            params, encoder_input_tokens, encoder_segment_ids, config=config,
            max_new_tokens=max_new_tokens, num_beams=options.num_beams,
            length_penalty=options.length_penalty, early_stopping=options.early_stopping,
            eos_id=eos_id, pad_id=pad_id,
        ).sequences[:, 0]
    if options.mode == "sample":
        return sample_decode(
            params, encoder_input_tokens, encoder_segment_ids, row_ids,
            jax.random.key(options.seed), options.temperature, options.top_k, options.top_p,
            config=config, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
        )
    return greedy_decode(params, encoder_input_tokens, encoder_segment_ids, config=config,
                         max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id)


def strip_after_eos(row: Sequence[int] | np.ndarray, eos_id: int = 1) -> list[int]:
    """Tokens before the first EOS."""
    ids = [int(t) for t in row]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def decode_features(
    params: Any, config: T5Config, features: Sequence[TaskFeature], *, mesh: Any,
    batch_size: int, max_new_tokens: int, eos_id: int, pad_id: int = 0, by_length: bool = True,
    options: DecodeOptions = GREEDY, desc: str | None = None,
) -> dict[str, list[int]]:
    """Decoded outputs (greedy unless `options` say otherwise) for answer-task
    features, keyed by example id.

    `by_length` batches the pairs shortest first, each batch padded to its
    own bucketed length (batching.eval_batches): far less encoder and
    cross-attention work on padding, for one compiled program per bucket.
    `desc` names the progress display (progress.py); None shows none.
    """
    outputs: dict[str, list[int]] = {}
    order = [features[i].example_id for i in eval_order(features, by_length)]
    batches = eval_batches(features, batch_size=batch_size, by_length=by_length)
    with Progress(len(order), unit="ex", desc=desc or "", enabled=desc is not None,
                  leave=False) as bar:
        _decode_batches(params, config, batches, order, outputs, bar, mesh=mesh,
                        batch_size=batch_size, max_new_tokens=max_new_tokens, eos_id=eos_id,
                        pad_id=pad_id, options=options)
    return outputs


def _decode_batches(params: Any, config: T5Config, batches: Any, order: list[str],
                    outputs: dict[str, list[int]], bar: Progress, *, mesh: Any, batch_size: int,
                    max_new_tokens: int, eos_id: int, pad_id: int,
                    options: DecodeOptions) -> None:
    for b, eb in enumerate(batches):
        local = {k: eb.batch[k] for k in ("encoder_input_tokens", "encoder_segment_ids")}
        # Global row numbers (this host's contiguous share of batch b).
        first = b * batch_size + jax.process_index() * len(eb.example_ids)
        local["row_ids"] = np.arange(first, first + len(eb.example_ids), dtype=np.int32)
        arrays = global_batch(local, mesh)
        out = decode_rows(
            params, arrays["encoder_input_tokens"], arrays["encoder_segment_ids"],
            arrays["row_ids"], config=config, options=options, max_new_tokens=max_new_tokens,
            eos_id=eos_id, pad_id=pad_id,
        )
        rows = np.asarray(multihost_utils.process_allgather(out, tiled=True))
        # Global row r of batch b is feature b*batch_size + r (hosts hold
        # contiguous shares in process order).
        for r, row in enumerate(rows):
            i = b * batch_size + r
            if i < len(order):
                outputs[order[i]] = strip_after_eos(row, eos_id)
        bar.update(min(batch_size, len(order) - b * batch_size))
