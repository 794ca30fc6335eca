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

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tinyllm_jax.models import attention_kernels, layers
from tinyllm_jax.models.t5_config import T5Config

Array = jax.Array
# Large negative instead of -inf: a fully masked row (a pad query) must give
# a finite uniform softmax, not NaN.
_MASK_VALUE = -1e10


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
        mask: attention_kernels.SegmentMask | Array | None,
        *,
        decode: bool = False,
        decode_index: Array | None = None,
        max_decode_len: int | None = None,
        enable_dropout: bool = False,
    ) -> Array:
        cfg = self.config
        dt = cfg.compute_dtype
        h, dk, d = cfg.num_heads, cfg.d_kv, cfg.d_model
        wq = layers.param(self, "query", layers.normal_init((d * dk) ** -0.5), (d, h, dk), ("embed", "heads", "kv"))
        wk = layers.param(self, "key", layers.normal_init(d**-0.5), (d, h, dk), ("embed", "heads", "kv"))
        wv = layers.param(self, "value", layers.normal_init(d**-0.5), (d, h, dk), ("embed", "heads", "kv"))
        wo = layers.param(self, "out", layers.normal_init((h * dk) ** -0.5), (h, dk, d), ("heads", "kv", "embed"))

        def project(inp: Array, w: Array) -> Array:
            y = layers.dense(inp, w, 1, dt)
            return layers.constrain(y, ("batch", "length", "heads", "kv"))

        q = project(x, wq)
        if decode:
            # Heads-major operands: [batch, heads, length, dk] (see _cached_kv).
            q, k, v = self._cached_kv(q, kv_input, wk, wv, project, decode_index, max_decode_len)
            score_spec, ctx_spec = "bhqk,bhsk->bhqs", "bhqs,bhsk->bqhk"
        else:
            k, v = project(kv_input, wk), project(kv_input, wv)
            score_spec, ctx_spec = "bqhk,bshk->bhqs", "bhqs,bshk->bqhk"
        if attention_kernels.uses_kernel(cfg.attention_impl, decode):
            ctx = attention_kernels.attend(cfg.attention_impl, q, k, v, bias, mask,
                                           dropout_active=enable_dropout and cfg.dropout_rate > 0)
            return layers.constrain(layers.dense(ctx, wo, 2, dt), ("batch", "length", "embed"))
        mask = attention_kernels.dense_mask(mask)
        # bf16 operands, float32 accumulation and scores; softmax in float32.
        scores = layers.einsum(score_spec, q, k, dt)
        if bias is not None:
            scores = layers.add_shared_bias(scores, bias)
        if mask is not None:
            scores = jnp.where(mask, scores, _MASK_VALUE)
        probs = jax.nn.softmax(scores, axis=-1)
        probs = layers.Dropout(cfg.dropout_rate)(probs, deterministic=not enable_dropout)
        ctx = layers.einsum(ctx_spec, probs, v, dt).astype(dt)
        out = layers.dense(ctx, wo, 2, dt)
        return layers.constrain(out, ("batch", "length", "embed"))

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
            return layers.constrain(jnp.swapaxes(y, 1, 2), ("batch", "heads", "length", "kv"))

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
            w0 = layers.param(self, "wi_0", layers.normal_init(d**-0.5), (d, f), ("embed", "mlp"))
            w1 = layers.param(self, "wi_1", layers.normal_init(d**-0.5), (d, f), ("embed", "mlp"))
            hidden = jax.nn.gelu(layers.dense(x, w0, 1, dt), approximate=True) * layers.dense(x, w1, 1, dt)
        else:
            wi = layers.param(self, "wi", layers.normal_init(d**-0.5), (d, f), ("embed", "mlp"))
            hidden = jax.nn.relu(layers.dense(x, wi, 1, dt))
        hidden = layers.constrain(hidden, ("batch", "length", "mlp"))
        hidden = layers.Dropout(cfg.dropout_rate)(hidden, deterministic=not enable_dropout)
        wo = layers.param(self, "wo", layers.normal_init(f**-0.5), (f, d), ("mlp", "embed"))
        return layers.constrain(layers.dense(hidden, wo, 1, dt), ("batch", "length", "embed"))


class EncoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(self, x: Array, bias: Array, mask: Array, enable_dropout: bool) -> Array:
        cfg = self.config
        drop = layers.Dropout(cfg.dropout_rate)
        y = layers.LayerNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="pre_attention_layer_norm")(x)
        y = Attention(cfg, name="attention")(y, y, bias, mask, enable_dropout=enable_dropout)
        x = x + drop(y, deterministic=not enable_dropout)
        y = layers.LayerNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="pre_mlp_layer_norm")(x)
        y = MLP(cfg, name="mlp")(y, enable_dropout)
        x = x + drop(y, deterministic=not enable_dropout)
        return layers.constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    config: T5Config

    @nn.compact
    def __call__(
        self, x: Array, encoded: Array, self_bias: Array, self_mask: Array, cross_mask: Array,
        enable_dropout: bool, decode: bool = False, decode_index: Array | None = None,
        max_decode_len: int | None = None,
    ) -> Array:
        cfg = self.config
        drop = layers.Dropout(cfg.dropout_rate)
        eps, dt = cfg.layer_norm_epsilon, cfg.compute_dtype
        y = layers.LayerNorm(eps, dt, name="pre_self_attention_layer_norm")(x)
        y = Attention(cfg, name="self_attention")(
            y, y, self_bias, self_mask, decode=decode, decode_index=decode_index,
            max_decode_len=max_decode_len, enable_dropout=enable_dropout,
        )
        x = x + drop(y, deterministic=not enable_dropout)
        y = layers.LayerNorm(eps, dt, name="pre_cross_attention_layer_norm")(x)
        y = Attention(cfg, cross=True, name="encoder_decoder_attention")(
            y, encoded, None, cross_mask, decode=decode, enable_dropout=enable_dropout
        )
        x = x + drop(y, deterministic=not enable_dropout)
        y = layers.LayerNorm(eps, dt, name="pre_mlp_layer_norm")(x)
        y = MLP(cfg, name="mlp")(y, enable_dropout)
        x = x + drop(y, deterministic=not enable_dropout)
        return layers.constrain(x, ("batch", "length", "embed"))


def _remat_policy(cfg: T5Config) -> Callable[..., bool] | None:
    if cfg.remat == "dots":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    return None


def _remat(layer_cls: type[nn.Module], cfg: T5Config, static_argnums: tuple[int, ...]) -> Any:
    if cfg.remat == "none":
        return layer_cls
    # static_argnums count `self` as 0 under nn.remat.
    return nn.remat(layer_cls, policy=_remat_policy(cfg), static_argnums=static_argnums)


# --- scanned stacks (config.scan_layers) ---------------------------------------
# The scan body must map (carry, *broadcast) -> (carry, per-step output) and
# take only arrays, so these subclasses hold the Python switches as fields
# and call the unchanged layer. Their parameters live exactly where the
# layer's do, with a leading `layers` axis (models/layer_stacking.py converts
# between that and the unrolled `layers_{i}` layout).


class _ScanEncoderLayer(EncoderLayer):
    enable_dropout: bool = False

    @nn.compact
    def __call__(self, x: Array, bias: Array, mask: Array) -> tuple[Array, None]:  # type: ignore[override]
        return EncoderLayer.__call__(self, x, bias, mask, self.enable_dropout), None


class _ScanDecoderLayer(DecoderLayer):
    enable_dropout: bool = False
    decode: bool = False
    max_decode_len: int | None = None

    @nn.compact
    def __call__(  # type: ignore[override]
        self, x: Array, encoded: Array, self_bias: Array, self_mask: Array, cross_mask: Array,
        decode_index: Array | None,
    ) -> tuple[Array, None]:
        y = DecoderLayer.__call__(
            self, x, encoded, self_bias, self_mask, cross_mask, self.enable_dropout,
            self.decode, decode_index, self.max_decode_len,
        )
        return y, None


def _scanned(body: type[nn.Module], cfg: T5Config, length: int, n_broadcast: int) -> Any:
    """`body` scanned `length` times: parameters and KV caches stacked on
    axis 0 (logical name `layers`, unsharded), a fresh dropout key per layer,
    and the remat policy applied to each layer (inside the loop), so the
    backward pass keeps one layer's residuals at a time."""
    if cfg.remat != "none":
        # Scan already stops XLA from merging the recomputation with the
        # forward pass, which is what prevent_cse guards against unrolled.
        body = nn.remat(body, policy=_remat_policy(cfg), prevent_cse=False)
    return nn.scan(
        body,
        # "intermediates": values sown or captured inside a layer, one per layer.
        variable_axes={"params": 0, "cache": 0, "intermediates": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * n_broadcast,
        length=length,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )


class Encoder(nn.Module):
    config: T5Config
    embed: nn.Module

    @nn.compact
    def __call__(self, tokens: Array, segment_ids: Array, enable_dropout: bool = False) -> Array:
        cfg = self.config
        x = self.embed(tokens).astype(cfg.compute_dtype)
        x = layers.constrain(x, ("batch", "length", "embed"))
        x = layers.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        pos = jnp.arange(tokens.shape[1])
        bias = layers.RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(pos, pos)[None]
        mask = attention_kernels.SegmentMask(segment_ids, segment_ids)
        if cfg.scan_layers:
            stack = _scanned(_ScanEncoderLayer, cfg, cfg.num_layers, n_broadcast=2)
            x, _ = stack(cfg, enable_dropout=enable_dropout, name="layers")(x, bias, mask)
        else:
            layer_cls = _remat(EncoderLayer, cfg, static_argnums=(4,))
            for i in range(cfg.num_layers):
                x = layer_cls(cfg, name=f"layers_{i}")(x, bias, mask, enable_dropout)
        x = layers.LayerNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="encoder_norm")(x)
        return layers.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)


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
        x = layers.constrain(x, ("batch", "length", "embed"))
        x = layers.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        relpos = layers.RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")
        if decode:
            # One new token at position `decode_index` against the whole cache.
            key_pos = jnp.arange(max_decode_len)
            self_bias = relpos(decode_index[None], key_pos)[None]
            self_mask = (key_pos <= decode_index)[None, None, None, :]
        else:
            pos = jnp.arange(tokens.shape[1])
            self_bias = relpos(pos, pos)[None]
            self_mask = attention_kernels.SegmentMask(
                segment_ids, segment_ids, causal=True, skip_pad_keys=False)
        cross_mask = attention_kernels.SegmentMask(segment_ids, encoder_segment_ids)
        if cfg.scan_layers:
            stack = _scanned(_ScanDecoderLayer, cfg, cfg.n_decoder_layers, n_broadcast=5)
            x, _ = stack(
                cfg, enable_dropout=enable_dropout, decode=decode, max_decode_len=max_decode_len,
                name="layers",
            )(x, encoded, self_bias, self_mask, cross_mask, decode_index)
        else:
            layer_cls = _remat(DecoderLayer, cfg, static_argnums=(6, 7, 9))
            for i in range(cfg.n_decoder_layers):
                x = layer_cls(cfg, name=f"layers_{i}")(
                    x, encoded, self_bias, self_mask, cross_mask, enable_dropout, decode,
                    decode_index, max_decode_len,
                )
        x = layers.LayerNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="decoder_norm")(x)
        x = layers.Dropout(cfg.dropout_rate)(x, deterministic=not enable_dropout)
        if cfg.scales_decoder_outputs:
            x = x * (cfg.d_model**-0.5)
        if cfg.tie_word_embeddings:
            logits = self.embed.attend(x.astype(cfg.compute_dtype))
        else:
            w = layers.param(
                self, "logits_dense", layers.normal_init(cfg.d_model**-0.5),
                (cfg.d_model, cfg.vocab_size), ("embed", "vocab"),
            )
            logits = layers.matmul(x, w, cfg.compute_dtype)
        return layers.constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))


class Embed(nn.Module):
    """Token embedding shared by encoder, decoder and (v1.0) the LM head."""

    config: T5Config

    def setup(self) -> None:
        cfg = self.config
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(layers.normal_init(1.0), ("vocab", "embed")),
            (cfg.vocab_size, cfg.d_model),
            jnp.float32,
        )

    def __call__(self, tokens: Array) -> Array:
        # A gather cannot keep the table's (vocab, embed) sharding and produce
        # batch-sharded rows; gather the whole table first, as FSDP does for
        # every weight, instead of letting XLA rematerialise it implicitly.
        table = layers.constrain(self.embedding, (None, None))
        return jnp.take(table, tokens, axis=0)

    def attend(self, x: Array) -> Array:
        return layers.matmul(x, self.embedding.T, x.dtype)


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
