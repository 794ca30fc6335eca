"""The T5 building blocks below the attention layer: parameter declaration
with logical axes, the 2-D matmul, the relative position bias, the shared
bias add, counter-hash dropout and T5's layer norm.

`models/t5.py` calls these through the module (`layers.dense(...)`), so a
benchmark ablation can swap one implementation for another at trace time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tinyllm_jax.models.t5_config import T5Config

Array = jax.Array


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
    # No-op unless the caller set logical axis rules (sharding.py does).
    return nn.with_logical_constraint(x, names)


def normal_init(stddev: float) -> Callable[..., Array]:
    return nn.initializers.normal(stddev=stddev)


def param(
    module: nn.Module, name: str, init: Callable[..., Array], shape: tuple[int, ...],
    axes: tuple[str, ...],
) -> Array:
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


@functools.lru_cache(maxsize=64)
def relative_position_bucket_table(
    bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """Bucket of every relative position in [-max_distance, max_distance].

    Positions further away share the edge buckets, so any relative position
    is looked up after clipping. Computed once in numpy float32 with the same
    operation order as the reference implementation: the log-spaced bucket
    boundaries fall on exact values (e.g. 2.0) where a different rounding
    would move a position into the neighbouring bucket.
    """
    rel = np.arange(-max_distance, max_distance + 1, dtype=np.int64)
    buckets = np.zeros_like(rel)
    n = num_buckets
    if bidirectional:
        n //= 2
        buckets += (rel > 0).astype(np.int64) * n
        dist = np.abs(rel)
    else:
        dist = -np.minimum(rel, 0)
    max_exact = n // 2
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(dist.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(n - max_exact)
        ).astype(np.float32)
    large = max_exact + np.where(np.isfinite(scaled), scaled, 0).astype(np.int64)
    large = np.minimum(large, n - 1)
    buckets += np.where(dist < max_exact, dist, large)
    return buckets.astype(np.int32)


class RelativePositionBias(nn.Module):
    """Per-head additive attention bias from bucketed relative positions."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_pos: Array, key_pos: Array) -> Array:
        """query_pos [..., q], key_pos [..., k] -> bias [..., heads, q, k] float32."""
        cfg = self.config
        table = jnp.asarray(
            relative_position_bucket_table(
                self.bidirectional, cfg.relative_attention_num_buckets,
                cfg.relative_attention_max_distance,
            )
        )
        md = cfg.relative_attention_max_distance
        rel = key_pos[..., None, :] - query_pos[..., :, None]
        bucket = table[jnp.clip(rel, -md, md) + md]
        emb = param(
            self, "rel_embedding", normal_init(cfg.d_model**-0.5),
            (cfg.relative_attention_num_buckets, cfg.num_heads), ("relpos_buckets", "heads"),
        )
        bias = jnp.take(emb, bucket, axis=0)  # [..., q, k, heads]
        return jnp.moveaxis(bias, -1, -3)


def dense(x: Array, w: Array, n: int, dtype: Any) -> Array:
    """Contract the last `n` axes of x with the first `n` of w, as one 2-D matmul.

    Same result as the einsum; the point is the backward pass. The weight
    gradient of a 3-D activation contracts two axes (batch and length), which
    XLA:CPU lowers through extra transposes: a 2-D [tokens, in] @ [in, out]
    dot made the gated MLP's forward+backward 1.5x faster on the CPU
    (docs/performance.md). The reshapes are free (row-major bitcasts).
    """
    lead, w_out = x.shape[: x.ndim - n], w.shape[n:]
    k = int(np.prod(w.shape[:n]))
    y = matmul(x.reshape(-1, k), w.reshape(k, -1), dtype)
    return y.reshape(*lead, *w_out).astype(dtype)


def matmul(x: Array, w: Array, dtype: Any) -> Array:
    """x @ w (x's last axis with w's first) in `dtype`, accumulated in float32."""
    return einsum("...k,kn->...n", x, w, dtype)


def einsum(spec: str, a: Array, b: Array, dtype: Any) -> Array:
    """`jnp.einsum(spec, a, b)` with `dtype` operands, float32 accumulation and result.

    Mixed precision: in bfloat16 the operands are bf16 and products are
    summed in float32 (`preferred_element_type`), the accurate form and, on
    CPUs with AVX512_BF16 / AMX, the fast one (XLA:CPU's bf16 -> bf16 dot
    ran at about a third of the bf16 -> f32 rate on 2048^3). Autodiff's
    transpose would pair the float32 cotangent with a bf16 operand, a mixed
    dot XLA runs in float32; the custom VJP casts the cotangent to bf16 so
    the backward dots (2/3 of the FLOPs) take the same path. Gradients
    come back in the primal dtypes (float32 for the master weights). In
    float32 it is the plain einsum. Every index of an operand must appear in
    the other operand or the output (true of every contraction here).
    """
    if jnp.dtype(dtype) == jnp.float32:
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
    return _mixed_einsum(spec, jnp.dtype(dtype), a, b)


def _transpose_specs(spec: str) -> tuple[str, str]:
    """The einsum specs of the two operands' gradients: (g, b -> a) and (g, a -> b)."""
    ins, out = spec.split("->")
    sa, sb = ins.split(",")
    return f"{out},{sb}->{sa}", f"{out},{sa}->{sb}"


def _dot16(spec: str, a: Array, b: Array) -> Array:
    """einsum of two bf16-valued operands, accumulated in float32.

    Batched contractions (the attention ones: an index in both operands and
    the output) are handed to XLA with the operands widened to float32:
    XLA:CPU's dot thunk has no bf16 x bf16 -> f32 kernel for batched dots
    in some operand layouts ("UNIMPLEMENTED: Unsupported element type for
    DotThunk::Execute"). The widening is exact, so the result is the same
    bf16-input, float32-accumulated product; only its speed differs.
    """
    ins, out = spec.split("->")
    sa, sb = ins.split(",")
    if set(sa) & set(sb) & set(out):
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _mixed_einsum(spec: str, dtype: Any, a: Array, b: Array) -> Array:
    return _dot16(spec, a.astype(dtype), b.astype(dtype))


def _mixed_einsum_fwd(spec: str, dtype: Any, a: Array, b: Array) -> tuple[Array, tuple]:
    a16, b16 = a.astype(dtype), b.astype(dtype)
    y = _dot16(spec, a16, b16)
    # Residuals: the bf16 operands, and zero-size stand-ins carrying the primal dtypes.
    return y, (a16, b16, jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))


def _mixed_einsum_bwd(spec: str, dtype: Any, res: tuple, g: Array) -> tuple[Array, Array]:
    a16, b16, a_dt, b_dt = res
    ga_spec, gb_spec = _transpose_specs(spec.replace("...", "Z"))
    if "..." in spec:  # "...k,kn->...n": flatten the leading axes into one (Z)
        lead = a16.shape[:-1]
        a16 = a16.reshape(-1, a16.shape[-1])
        g = g.reshape(-1, g.shape[-1])
    g16 = g.astype(dtype)
    ga = _dot16(ga_spec, g16, b16)
    gb = _dot16(gb_spec, g16, a16)
    if "..." in spec:
        ga = ga.reshape(*lead, ga.shape[-1])
    return ga.astype(a_dt.dtype), gb.astype(b_dt.dtype)


_mixed_einsum.defvjp(_mixed_einsum_fwd, _mixed_einsum_bwd)


@jax.custom_vjp
def add_shared_bias(scores: Array, bias: Array) -> Array:
    """scores [B, ...] + bias [1, ...] (the relative position bias of every row)."""
    return scores + bias


def _add_shared_bias_fwd(scores: Array, bias: Array) -> tuple[Array, None]:
    return scores + bias, None


def _add_shared_bias_bwd(_: None, g: Array) -> tuple[Array, Array]:
    # The bias gradient sums g over the batch. Autodiff emits a reduce over
    # the leading axis, which XLA:CPU ran ~40x slower than this ones-vector
    # matmul (1.2 s vs 0.03 s for 8 layers of [9, 6, 384, 384] scores).
    # HIGHEST keeps the sum in float32 on TPUs, whose default f32 dot is bf16.
    b = g.shape[0]
    total = jnp.dot(jnp.ones((b,), g.dtype), g.reshape(b, -1),
                    precision=jax.lax.Precision.HIGHEST)
    return g, total.reshape((1, *g.shape[1:]))


add_shared_bias.defvjp(_add_shared_bias_fwd, _add_shared_bias_bwd)


def _mix32(x: Array) -> Array:
    """`lowbias32` (C. Wellons' hash prospector): a uint32 bijection with low bias."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def dropout_keep_mask(key: Array, shape: tuple[int, ...], rate: float) -> Array:
    """Boolean keep-mask with P(keep) = 1 - rate (to within 2**-32).

    Counter-based: element i keeps iff mix(mix(i ^ k0) + k1) >= rate * 2**32,
    with (k0, k1) drawn from `key` by JAX's threefry. Threefry itself costs
    about 40 integer ops per 32 random bits and XLA:CPU fuses (so repeats)
    it into every consumer of the mask: it took half of a FLAN-T5-small train
    step on the CPU (docs/performance.md). Two keyed rounds of a 32-bit
    integer hash cost ~10 ops, vectorise, and need no state. The second round
    makes masks of different keys unrelated rather than index-shifted or
    xor-permuted copies of one sequence. It is not a cryptographic generator
    and does not need to be: dropout needs independent-looking coin flips.
    """
    k = jax.random.bits(key, (2,), jnp.uint32)
    idx = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in range(len(shape) - 1, -1, -1):
        idx = idx + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride *= shape[axis]
    bits = _mix32(_mix32(idx ^ k[0]) + k[1])
    threshold = min(round(rate * 2.0**32), 2**32 - 1)
    return bits >= jnp.uint32(threshold)


class Dropout(nn.Module):
    """Inverted dropout drawing its mask from `dropout_keep_mask` (the "dropout" rng)."""

    rate: float

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        keep = dropout_keep_mask(self.make_rng("dropout"), x.shape, self.rate)
        return jnp.where(keep, x * jnp.asarray(1.0 / (1.0 - self.rate), x.dtype), 0).astype(x.dtype)


class LayerNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction, no bias, in float32."""

    epsilon: float
    dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (y * scale).astype(self.dtype)
