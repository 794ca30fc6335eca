"""T5 encoder-decoder in Flax Linen, weight-compatible with Hugging Face T5.

Covers T5 v1.0 (relu MLP, LM head tied to the embedding, decoder output
scaled by d_model**-0.5) and v1.1 / FLAN-T5 (gated-gelu MLP with the tanh
gelu, untied LM head, no output scaling). Parameters are float32; matmuls
run in `config.dtype`; softmax, layer norms and logits stay float32.

Every parameter carries logical axis names (`vocab, embed, heads, kv, mlp,
relpos_buckets`, plus `layers` when scanned) and the main activations are
constrained with (`batch, length, embed|heads|mlp`), so `sharding.py` maps
them onto a mesh with one rule table.

The relative position bias is computed once per stack (it belongs to the
first layer in HF checkpoints) and passed to every layer, which is both what
T5 does and what makes the layers identical for remat and scan.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Array = jax.Array
# Large negative instead of -inf: a fully masked row (a pad query) must give
# a finite uniform softmax, not NaN.
_MASK_VALUE = -1e10


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Model shape. Field names follow `transformers.T5Config`."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_decoder_layers: int | None = None
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"  # "relu" (v1.0) or "gated-gelu" (v1.1/FLAN)
    tie_word_embeddings: bool = False
    # Multiply the decoder output by d_model**-0.5 before the LM head. None
    # follows `tie_word_embeddings` (v1.0 scales, v1.1/FLAN does not); HF can
    # also load an untied head with scaling, so the two are kept apart.
    scale_decoder_outputs: bool | None = None
    # Compute dtype of matmuls; parameters are always float32.
    dtype: str = "float32"
    # "none", "full" (recompute each layer) or "dots" (save matmul outputs).
    remat: str = "none"
    scan_layers: bool = False

    def __post_init__(self) -> None:
        if self.feed_forward_proj not in ("relu", "gated-gelu"):
            raise ValueError(
                f"feed_forward_proj must be 'relu' or 'gated-gelu', got {self.feed_forward_proj!r}"
            )
        if self.remat not in ("none", "full", "dots"):
            raise ValueError(f"remat must be 'none', 'full' or 'dots', got {self.remat!r}")
        if self.scan_layers:
            # Scanning stacks the layers' parameters along a new axis, which
            # the HF mapping (models/hf.py) and checkpoints do not handle yet.
            raise ValueError(
                "scan_layers=True is not implemented yet; set config.model.scan_layers=False "
                "(use remat='full' to cut activation memory instead)"
            )
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"T5Config.{name} must be positive, got {getattr(self, name)}")

    @property
    def n_decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def scales_decoder_outputs(self) -> bool:
        if self.scale_decoder_outputs is None:
            return self.tie_word_embeddings
        return self.scale_decoder_outputs

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj == "gated-gelu"

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def replace(self, **kwargs: Any) -> T5Config:
        return dataclasses.replace(self, **kwargs)


# Shapes of the published checkpoints. FLAN-T5 and T5 v1.1 share shapes.
SIZES: dict[str, T5Config] = {
    "flan-t5-small": T5Config(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6),
    "flan-t5-base": T5Config(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
    "flan-t5-large": T5Config(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16),
    "flan-t5-xl": T5Config(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32),
    "t5-small": T5Config(
        d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
        feed_forward_proj="relu", tie_word_embeddings=True,
    ),
    "t5-base": T5Config(
        d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
        feed_forward_proj="relu", tie_word_embeddings=True,
    ),
}


def _constrain(x: Array, names: tuple[str | None, ...]) -> Array:
    # No-op unless the caller set logical axis rules (sharding.py does).
    return nn.with_logical_constraint(x, names)


def _normal(stddev: float) -> Callable[..., Array]:
    return nn.initializers.normal(stddev=stddev)


def _param(
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
        emb = _param(
            self, "rel_embedding", _normal(cfg.d_model**-0.5),
            (cfg.relative_attention_num_buckets, cfg.num_heads), ("relpos_buckets", "heads"),
        )
        bias = jnp.take(emb, bucket, axis=0)  # [..., q, k, heads]
        return jnp.moveaxis(bias, -1, -3)


def _dense(x: Array, w: Array, n: int, dtype: Any) -> Array:
    """Contract the last `n` axes of x with the first `n` of w, as one 2-D matmul.

    Same result as the einsum; the point is the backward pass. The weight
    gradient of a 3-D activation contracts two axes (batch and length), which
    XLA:CPU lowers through extra transposes: a 2-D [tokens, in] @ [in, out]
    dot made the gated MLP's forward+backward 1.5x faster on the CPU
    (docs/performance.md). The reshapes are free (row-major bitcasts).
    """
    lead, w_out = x.shape[: x.ndim - n], w.shape[n:]
    k = int(np.prod(w.shape[:n]))
    y = x.reshape(-1, k).astype(dtype) @ w.reshape(k, -1).astype(dtype)
    return y.reshape(*lead, *w_out)


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
        scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (y * scale).astype(self.dtype)


class Attention(nn.Module):
    """Multi-head attention without 1/sqrt(d) scaling (T5 folds it into init).

    With `decode=True` it keeps a KV cache in the "cache" collection:
    self-attention writes the new key/value at `decode_index`; cross-attention
    projects the encoder output once, on the first call, and reuses it.
    """

    config: T5Config
    cross: bool = False

    @nn.compact
    def __call__(
        self,
        x: Array,
        kv_input: Array,
        bias: Array | None,
        mask: Array | None,
        *,
        decode: bool = False,
        decode_index: Array | None = None,
        max_decode_len: int | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        cfg = self.config
        dt = cfg.compute_dtype
        h, dk, d = cfg.num_heads, cfg.d_kv, cfg.d_model
        wq = _param(self, "query", _normal((d * dk) ** -0.5), (d, h, dk), ("embed", "heads", "kv"))
        wk = _param(self, "key", _normal(d**-0.5), (d, h, dk), ("embed", "heads", "kv"))
        wv = _param(self, "value", _normal(d**-0.5), (d, h, dk), ("embed", "heads", "kv"))
        wo = _param(self, "out", _normal((h * dk) ** -0.5), (h, dk, d), ("heads", "kv", "embed"))

        def project(inp: Array, w: Array) -> Array:
            y = _dense(inp, w, 1, dt)
            return _constrain(y, ("batch", "length", "heads", "kv"))

        q = project(x, wq)
        if decode:
            # Heads-major operands: [batch, heads, length, dk] (see _cached_kv).
            q, k, v = self._cached_kv(q, kv_input, wk, wv, project, decode_index, max_decode_len)
            score_spec, ctx_spec = "bhqk,bhsk->bhqs", "bhqs,bhsk->bqhk"
        else:
            k, v = project(kv_input, wk), project(kv_input, wv)
            score_spec, ctx_spec = "bqhk,bshk->bhqs", "bhqs,bshk->bqhk"
        scores = jnp.einsum(score_spec, q, k).astype(jnp.float32)
        if bias is not None:
            scores = add_shared_bias(scores, bias)
        if mask is not None:
            scores = jnp.where(mask, scores, _MASK_VALUE)
        probs = jax.nn.softmax(scores, axis=-1)
        probs = Dropout(cfg.dropout_rate)(probs, deterministic=not enable_dropout)
        ctx = jnp.einsum(ctx_spec, probs.astype(dt), v)
        out = _dense(ctx, wo, 2, dt)
        return _constrain(out, ("batch", "length", "embed"))

    def _cached_kv(
        self, q: Array, kv_input: Array, wk: Array, wv: Array, project: Callable[..., Array],
        decode_index: Array | None, max_decode_len: int | None,
    ) -> tuple[Array, Array, Array]:
        """The new query and the updated KV cache, all [batch, heads, length, dk].

        The caches are stored heads-major so the per-step score and context
        contractions run on them as they lie. In the [batch, length, heads,
        dk] layout of the projections, XLA:CPU transposed every cache of
        every layer at every step (the whole encoder output twice per layer),
        which cost more than the matmuls.
        """
        dt = self.config.compute_dtype

        def heads_major(y: Array) -> Array:
            return _constrain(jnp.swapaxes(y, 1, 2), ("batch", "heads", "length", "kv"))

        if self.cross:
            # The encoder output does not change while decoding: project once.
            ck = self.variable("cache", "cross_key", lambda: heads_major(project(kv_input, wk)))
            cv = self.variable("cache", "cross_value", lambda: heads_major(project(kv_input, wv)))
        else:
            b, _, h, dk = q.shape
            shape = (b, h, max_decode_len, dk)
            ck = self.variable("cache", "cached_key", jnp.zeros, shape, dt)
            cv = self.variable("cache", "cached_value", jnp.zeros, shape, dt)
            idx = (0, 0, decode_index, 0)
            ck.value = jax.lax.dynamic_update_slice(
                ck.value, heads_major(project(kv_input, wk)).astype(dt), idx)
            cv.value = jax.lax.dynamic_update_slice(
                cv.value, heads_major(project(kv_input, wv)).astype(dt), idx)
        return heads_major(q), ck.value, cv.value


class MLP(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        dt = cfg.compute_dtype
        d, f = cfg.d_model, cfg.d_ff
        x = x.astype(dt)
        if cfg.gated:
            w0 = _param(self, "wi_0", _normal(d**-0.5), (d, f), ("embed", "mlp"))
            w1 = _param(self, "wi_1", _normal(d**-0.5), (d, f), ("embed", "mlp"))
            hidden = jax.nn.gelu(_dense(x, w0, 1, dt), approximate=True) * _dense(x, w1, 1, dt)
        else:
            wi = _param(self, "wi", _normal(d**-0.5), (d, f), ("embed", "mlp"))
            hidden = jax.nn.relu(_dense(x, wi, 1, dt))
        hidden = _constrain(hidden, ("batch", "length", "mlp"))
        hidden = Dropout(cfg.dropout_rate)(hidden, deterministic=not enable_dropout)
        wo = _param(self, "wo", _normal(f**-0.5), (f, d), ("mlp", "embed"))
        return _constrain(_dense(hidden, wo, 1, dt), ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: Array, bias: Array, mask: Array, enable_dropout: bool) -> Array:
        cfg = self.config
        drop = Dropout(cfg.dropout_rate)
        y = LayerNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="pre_attention_layer_norm")(x)
        y = Attention(cfg, name="attention")(y, y, bias, mask, enable_dropout=enable_dropout)
        x = x + drop(y, deterministic=not enable_dropout)
        y = LayerNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="pre_mlp_layer_norm")(x)
        y = MLP(cfg, name="mlp")(y, enable_dropout)
        x = x + drop(y, deterministic=not enable_dropout)
        return _constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(
        self, x: Array, encoded: Array, self_bias: Array, self_mask: Array, cross_mask: Array,
        enable_dropout: bool, decode: bool = False, decode_index: Array | None = None,
        max_decode_len: int | None = None,
    ) -> Array:
        cfg = self.config
        drop = Dropout(cfg.dropout_rate)
        eps, dt = cfg.layer_norm_epsilon, cfg.compute_dtype
        y = LayerNorm(eps, dt, name="pre_self_attention_layer_norm")(x)
        y = Attention(cfg, name="self_attention")(
            y, y, self_bias, self_mask, decode=decode, decode_index=decode_index,
            max_decode_len=max_decode_len, enable_dropout=enable_dropout,
        )
        x = x + drop(y, deterministic=not enable_dropout)
        y = LayerNorm(eps, dt, name="pre_cross_attention_layer_norm")(x)
        y = Attention(cfg, cross=True, name="encoder_decoder_attention")(
            y, encoded, None, cross_mask, decode=decode, enable_dropout=enable_dropout
        )
        x = x + drop(y, deterministic=not enable_dropout)
        y = LayerNorm(eps, dt, name="pre_mlp_layer_norm")(x)
        y = MLP(cfg, name="mlp")(y, enable_dropout)
        x = x + drop(y, deterministic=not enable_dropout)
        return _constrain(x, ("batch", "length", "embed"))


def _remat(layer_cls: type[nn.Module], cfg: T5Config, static_argnums: tuple[int, ...]) -> Any:
    if cfg.remat == "none":
        return layer_cls
    policy = None
    if cfg.remat == "dots":
        policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    # static_argnums count `self` as 0 under nn.remat.
    return nn.remat(layer_cls, policy=policy, static_argnums=static_argnums)


class Encoder(nn.Module):
    config: T5Config
    embed: nn.Module

    @nn.compact
    def __call__(self, tokens: Array, segment_ids: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        x = self.embed(tokens).astype(cfg.compute_dtype)
        x = _constrain(x, ("batch", "length", "embed"))
        x = Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        pos = jnp.arange(tokens.shape[1])
        bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(pos, pos)[None]
        mask = (segment_ids[:, None, :, None] == segment_ids[:, None, None, :]) & (
            segment_ids[:, None, None, :] > 0
        )
        layer_cls = _remat(EncoderLayer, cfg, static_argnums=(4,))
        for i in range(cfg.num_layers):
            x = layer_cls(cfg, name=f"layers_{i}")(x, bias, mask, enable_dropout)
        x = LayerNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="encoder_norm")(x)
        return Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)


class Decoder(nn.Module):
    config: T5Config
    embed: nn.Module

    @nn.compact
    def __call__(
        self, encoded: Array, encoder_segment_ids: Array, tokens: Array, segment_ids: Array,
        enable_dropout: bool = False, decode: bool = False, decode_index: Array | None = None,
        max_decode_len: int | None = None,
    ) -> Array:
        cfg = self.config
        x = self.embed(tokens).astype(cfg.compute_dtype)
        x = _constrain(x, ("batch", "length", "embed"))
        x = Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        relpos = RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")
        if decode:
            # One new token at position `decode_index` against the whole cache.
            key_pos = jnp.arange(max_decode_len)
            self_bias = relpos(decode_index[None], key_pos)[None]
            self_mask = (key_pos <= decode_index)[None, None, None, :]
        else:
            pos = jnp.arange(tokens.shape[1])
            self_bias = relpos(pos, pos)[None]
            causal = pos[None, :] <= pos[:, None]
            self_mask = causal[None, None] & (
                segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
            )
        cross_mask = (segment_ids[:, None, :, None] == encoder_segment_ids[:, None, None, :]) & (
            encoder_segment_ids[:, None, None, :] > 0
        )
        layer_cls = _remat(DecoderLayer, cfg, static_argnums=(6, 7, 9))
        for i in range(cfg.n_decoder_layers):
            x = layer_cls(cfg, name=f"layers_{i}")(
                x, encoded, self_bias, self_mask, cross_mask, enable_dropout, decode,
                decode_index, max_decode_len,
            )
        x = LayerNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="decoder_norm")(x)
        x = Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        if cfg.scales_decoder_outputs:
            x = x * (cfg.d_model**-0.5)
        if cfg.tie_word_embeddings:
            logits = self.embed.attend(x.astype(cfg.compute_dtype))
        else:
            w = _param(
                self, "logits_dense", _normal(cfg.d_model**-0.5),
                (cfg.d_model, cfg.vocab_size), ("embed", "vocab"),
            )
            logits = x.astype(cfg.compute_dtype) @ w.astype(cfg.compute_dtype)
        return _constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class Embed(nn.Module):
    """Token embedding shared by encoder, decoder and (v1.0) the LM head."""

    config: T5Config

    def setup(self) -> None:
        cfg = self.config
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(_normal(1.0), ("vocab", "embed")),
            (cfg.vocab_size, cfg.d_model),
            jnp.float32,
        )

    def __call__(self, tokens: Array) -> Array:
        # A gather cannot keep the table's (vocab, embed) sharding and produce
        # batch-sharded rows; gather the whole table first, as FSDP does for
        # every weight, instead of letting XLA rematerialise it implicitly.
        table = _constrain(self.embedding, (None, None))
        return jnp.take(table, tokens, axis=0)

    def attend(self, x: Array) -> Array:
        return x @ self.embedding.astype(x.dtype).T


def _default_segments(tokens: Array, segment_ids: Array | None) -> Array:
    if segment_ids is None:
        return jnp.ones(tokens.shape, jnp.int32)
    return segment_ids.astype(jnp.int32)


class T5(nn.Module):
    """The student. `__call__` is the teacher-forced forward used in training.

    Segment ids mark padding (0) and packed pairs (1, 2, ...): encoder segment
    i is read only by decoder segment i, and nothing attends across segments.
    """

    config: T5Config

    def setup(self) -> None:
        self.token_embedder = Embed(self.config)
        self.encoder = Encoder(self.config, self.token_embedder)
        self.decoder = Decoder(self.config, self.token_embedder)

    def encode(
        self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        seg = _default_segments(encoder_input_tokens, encoder_segment_ids)
        return self.encoder(encoder_input_tokens, seg, enable_dropout)

    def decode(
        self, encoded: Array, encoder_segment_ids: Array | None, decoder_input_tokens: Array,
        decoder_segment_ids: Array | None = None, enable_dropout: bool = False,
        decode: bool = False, decode_index: Array | None = None,
        max_decode_len: int | None = None,
    ) -> Array:
        enc_seg = _default_segments(encoded[..., 0], encoder_segment_ids)
        dec_seg = _default_segments(decoder_input_tokens, decoder_segment_ids)
        return self.decoder(
            encoded, enc_seg, decoder_input_tokens, dec_seg, enable_dropout, decode,
            decode_index, max_decode_len,
        )

    def __call__(
        self, encoder_input_tokens: Array, decoder_input_tokens: Array,
        encoder_segment_ids: Array | None = None, decoder_segment_ids: Array | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, enable_dropout)
        return self.decode(
            encoded, encoder_segment_ids, decoder_input_tokens, decoder_segment_ids,
            enable_dropout,
        )


def init_params(config: T5Config, rng: Array, batch: int = 1, length: int = 8) -> Any:
    """Random parameters (boxed with logical axis names)."""
    tokens = jnp.ones((batch, length), jnp.int32)
    return T5(config).init(rng, tokens, tokens)["params"]


def abstract_params(config: T5Config) -> Any:
    """Shapes and logical axes of every parameter, without allocating any."""
    return jax.eval_shape(functools.partial(init_params, config), jax.random.key(0))


def count_params(params: Any) -> int:
    leaves = jax.tree.leaves(nn.meta.unbox(params))
    return int(sum(np.prod(x.shape) for x in leaves))
