"""Analytic FLOP count of a T5 encoder-decoder train step.

A multiply-add is 2 FLOPs. With d = d_model, a = num_heads * d_kv (the
attention width, 384 != d_model in FLAN-T5-small), f = d_ff, m = 3 matrices
d x f for gated-gelu (wi_0, wi_1, wo) or 2 for relu, V = vocab size, E / D
encoder / decoder layers, one (input, target) pair with n input and t target
tokens costs, forward:

    encoder, per layer:  n * (8*d*a + 2*m*d*f)            q, k, v, o and the MLP
                       + 4*a*n*n                           scores q.k and probs.v
    decoder, per layer:  t * (8*d*a + 4*d*a + 2*m*d*f)     self q,k,v,o; cross q,o; MLP
                       + n * 4*d*a                         cross k, v over the encoder output
                       + 4*a*t*(t+1)/2                     causal self-attention
                       + 4*a*t*n                           cross-attention
    LM head:             t * 2*d*V

and a train step 3x the forward (the backward pass costs two forwards:
gradients for activations and for weights). Embedding lookups, norms,
softmax and the optimizer are not counted (they are not matmuls), which is
the usual convention for MFU.

`pair_flops` counts only what one pair needs (attention inside its own
segment): it is the "model FLOPs on real tokens" of the MFU numerator,
identical for every system that trains on the same pairs. `row_flops`
counts what a dense implementation executes for one row of a padded or
packed batch (attention over the whole row, pads included); the benchmark
uses it to pick packed row shapes and to report how much work padding adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Forward + backward = 3 forwards' worth of matmul FLOPs.
TRAIN_FACTOR = 3


def _dims(cfg: Any) -> tuple[int, int, int, int, int, int, int]:
    d, a, f = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff
    m = 3 if cfg.feed_forward_proj == "gated-gelu" else 2
    dec = cfg.num_layers if cfg.num_decoder_layers is None else cfg.num_decoder_layers
    return d, a, f, m, cfg.vocab_size, cfg.num_layers, dec


def forward_flops(
    cfg: Any, n: np.ndarray | int, t: np.ndarray | int, *, causal_full: bool = False
) -> np.ndarray:
    """Forward FLOPs of pairs (or rows) with n input and t target tokens.

    `causal_full=True` counts the decoder self-attention over the full t x t
    square, which is what a dense masked implementation executes.
    """
    n = np.asarray(n, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    d, a, f, m, v, enc_layers, dec_layers = _dims(cfg)
    enc = enc_layers * (n * (8 * d * a + 2 * m * d * f) + 4 * a * n * n)
    self_keys = t * t if causal_full else t * (t + 1) / 2
    dec = dec_layers * (
        t * (12 * d * a + 2 * m * d * f) + n * 4 * d * a + 4 * a * self_keys + 4 * a * t * n
    )
    return enc + dec + t * 2 * d * v


def pair_flops(cfg: Any, input_lens: Sequence[int], target_lens: Sequence[int]) -> float:
    """Train-step model FLOPs of these pairs: real tokens, per-segment attention."""
    return float(TRAIN_FACTOR * forward_flops(cfg, input_lens, target_lens).sum())


def row_flops(cfg: Any, input_len: int, target_len: int) -> float:
    """Train-step FLOPs a dense implementation executes for one padded row."""
    return float(TRAIN_FACTOR * forward_flops(cfg, input_len, target_len, causal_full=True))
