"""`config.model.attention_impl`: every kernel equals the XLA path on packed batches.

Packed rows hold several segments and padding; the three attentions of T5
are covered (encoder self-attention, causal decoder self-attention with the
relative-position bias, cross-attention by segment id). "pallas_flash" runs
the Pallas TPU kernel in interpret mode on the CPU.
"""

from __future__ import annotations

import contextlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from tinyllm_jax import sharding as shard_lib
from tinyllm_jax.configs import base_config, model_config_dict
from tinyllm_jax.models import attention_kernels as ak
from tinyllm_jax.models.t5 import T5, init_params
from tinyllm_jax.models.t5_config import T5Config
from tinyllm_jax.spec import ConfigError, MeshSpec, parse

# Two rows each: segments of different lengths, trailing padding (segment 0).
ENC_SEG = np.array([[1] * 10 + [2] * 9 + [0] * 5, [1] * 20 + [2] * 4], np.int32)
DEC_SEG = np.array([[1] * 7 + [2] * 6 + [0] * 3, [1] * 9 + [2] * 7], np.int32)
HEADS, DK = 2, 8
TOL = 1e-5

CASES = {
    "encoder_self": (ENC_SEG, ENC_SEG, dict(), True),
    "decoder_causal_self": (DEC_SEG, DEC_SEG, dict(causal=True, skip_pad_keys=False), True),
    "cross": (DEC_SEG, ENC_SEG, dict(), False),
}
KERNELS = ("dot_product", "pallas_flash")


@pytest.fixture(autouse=True)
def _rearm_warnings():
    ak.warn_once.cache_clear()
    yield


def _mode(impl: str):
    return ak.pallas_interpret() if impl == "pallas_flash" else contextlib.nullcontext()


def _reference(q, k, v, bias, allowed):
    """T5 attention written out: unscaled scores + bias, masked, softmax, values."""
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    if bias is not None:
        s = s + bias
    s = jnp.where(allowed, s, -1e10)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v)


def _close(got, want, what):
    err = float(jnp.max(jnp.abs(got - want)))
    scale = max(1.0, float(jnp.max(jnp.abs(want))))
    assert err <= TOL * scale, f"{what}: max |diff| {err:.2e} (scale {scale:.2f})"


def test_segment_mask_is_the_models_dense_mask():
    """The masks T5 built inline before the kernels existed, term for term."""
    e, d = jnp.asarray(ENC_SEG), jnp.asarray(DEC_SEG)
    enc = (e[:, None, :, None] == e[:, None, None, :]) & (e[:, None, None, :] > 0)
    pos = jnp.arange(d.shape[1])
    causal = (pos[None, :] <= pos[:, None])[None, None] & (d[:, None, :, None] == d[:, None, None, :])
    cross = (d[:, None, :, None] == e[:, None, None, :]) & (e[:, None, None, :] > 0)
    for (qs, ks, flags, _), want in zip(CASES.values(), (enc, causal, cross)):
        got = ak.SegmentMask(jnp.asarray(qs), jnp.asarray(ks), **flags).dense()
        assert got.shape == want.shape and bool(jnp.all(got == want))


def _inputs(case: str):
    q_seg, kv_seg, flags, has_bias = CASES[case]
    b, lq, lk = q_seg.shape[0], q_seg.shape[1], kv_seg.shape[1]
    keys = jax.random.split(jax.random.key(len(case)), 5)
    q = jax.random.normal(keys[0], (b, lq, HEADS, DK))
    k = jax.random.normal(keys[1], (b, lk, HEADS, DK))
    v = jax.random.normal(keys[2], (b, lk, HEADS, DK))
    bias = jax.random.normal(keys[3], (1, HEADS, lq, lk)) if has_bias else None
    # A cotangent on every row, pads included: their gradient must match too.
    cot = jax.random.normal(keys[4], (b, lq, HEADS, DK))
    mask = ak.SegmentMask(jnp.asarray(q_seg), jnp.asarray(kv_seg), **flags)
    return (q, k, v, bias), cot, mask


# The dot_product case is slow-marked to keep the default suite in budget; the
# whole-model test below covers it in the default suite.
@pytest.mark.parametrize("impl", [pytest.param("dot_product", marks=pytest.mark.slow),
                                  "pallas_flash"])
def test_kernel_matches_reference_forward_and_gradients(impl):
    """Output and d(q, k, v, bias) of the three T5 attentions, in one program."""
    cases = {name: _inputs(name) for name in CASES}

    def both(args_by_case):
        out = {}
        for name, args in args_by_case.items():
            _, cot, mask = cases[name]

            def kernel(*a, mask=mask):
                return ak.attend(impl, *a, mask)

            def reference(*a, mask=mask):
                return _reference(*a, mask.dense())

            for tag, fn in (("kernel", kernel), ("reference", reference)):
                out[name, tag] = jax.value_and_grad(
                    lambda a, fn=fn, cot=cot: jnp.sum(fn(*a) * cot), allow_int=True)(args)
                out[name, tag + " out"] = fn(*args)
        return out

    with _mode(impl):
        res = jax.jit(both)({name: c[0] for name, c in cases.items()})
    for name in CASES:
        _close(res[name, "kernel out"], res[name, "reference out"], f"{impl} {name} output")
        got, want = res[name, "kernel"][1], res[name, "reference"][1]
        for label, g, w in zip("qkvb", got, want):
            if w is not None:
                _close(g, w, f"{impl} {name} d{label}")


TINY = T5Config(vocab_size=50, d_model=32, d_kv=DK, d_ff=64, num_layers=1, num_heads=HEADS,
                relative_attention_num_buckets=8, relative_attention_max_distance=16,
                dropout_rate=0.0)


def _model_batch():
    rng = np.random.default_rng(0)
    enc = np.where(ENC_SEG > 0, rng.integers(2, TINY.vocab_size, ENC_SEG.shape), 0)
    dec = np.where(DEC_SEG > 0, rng.integers(2, TINY.vocab_size, DEC_SEG.shape), 0)
    return enc, dec


def _model_loss(p, cfg):
    enc, dec = _model_batch()
    weights = jnp.asarray(DEC_SEG > 0, jnp.float32)[..., None]
    logits = T5(cfg).apply({"params": p}, enc, dec, ENC_SEG, DEC_SEG)
    return jnp.sum(jnp.square(logits) * weights) * 1e-2, logits


_model_step = jax.jit(jax.value_and_grad(_model_loss, has_aux=True), static_argnums=1)


@pytest.fixture(scope="module")
def xla_model_run():
    """Parameters, and logits and gradients of the default XLA path (compiled once)."""
    params = nn.meta.unbox(init_params(TINY, jax.random.key(0)))
    (_, logits), grads = _model_step(params, TINY)
    return params, logits, grads


@pytest.mark.parametrize("impl", KERNELS)
def test_t5_logits_and_gradients_match_xla_path(impl, xla_model_run):
    """The whole model (encoder, causal decoder, cross-attention) on a packed
    batch: logits and every parameter's gradient, the relative-position
    embedding tables included, equal the default XLA path."""
    params, want_logits, want = xla_model_run
    step = _model_step
    with _mode(impl):
        (_, got_logits), got = step(params, TINY.replace(attention_impl=impl))
    _close(got_logits, want_logits, f"{impl} logits")
    flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
    for path, g in jax.tree_util.tree_leaves_with_path(got):
        _close(g, flat_want[path], f"{impl} d{jax.tree_util.keystr(path)}")
    for stack in ("encoder", "decoder"):
        table = got[stack]["relpos_bias"]["rel_embedding"]
        assert float(jnp.max(jnp.abs(table))) > 0, f"{stack} relpos gradient is zero"


def _attention_args(d: int = DK):
    (q, k, v, bias), _, mask = _inputs("encoder_self")
    if d != DK:
        q, k, v = (jax.random.normal(jax.random.key(i), (*x.shape[:3], d))
                   for i, x in enumerate((q, k, v)))
    return q, k, v, bias, mask


def test_pallas_flash_off_tpu_says_so_and_computes_the_same(caplog):
    q, k, v, bias, mask = _attention_args()
    with caplog.at_level(logging.WARNING, logger=ak.__name__):
        got = jax.jit(lambda *a: ak.attend("pallas_flash", *a))(q, k, v, bias, mask)
    assert "compiled for TPU" in caplog.text and f"{jax.default_backend()} backend" in caplog.text
    _close(got, _reference(q, k, v, bias, mask.dense()), "fallback output")


def test_pallas_flash_unsupported_head_dim_falls_back_with_the_reason(caplog):
    q, k, v, bias, mask = _attention_args(d=136)
    with caplog.at_level(logging.WARNING, logger=ak.__name__), ak.pallas_interpret():
        got = ak.attend("pallas_flash", q, k, v, bias, mask)
    assert "falls back to the XLA attention: head dim d_kv=136" in caplog.text
    _close(got, _reference(q, k, v, bias, mask.dense()), "fallback output")


def test_kernels_name_the_attention_dropout_they_skip(caplog):
    q, k, v, bias, mask = _attention_args()
    with caplog.at_level(logging.WARNING, logger=ak.__name__):
        ak.attend("dot_product", q, k, v, bias, mask, dropout_active=True)
    assert "no dropout to the attention probabilities" in caplog.text


def test_pallas_flash_runs_per_device_under_a_mesh():
    """Under `jax.set_mesh` the kernel is wrapped in shard_map over batch and
    heads (XLA cannot partition a Pallas call); values are unchanged."""
    q, k, v, bias, mask = _attention_args()
    mesh = shard_lib.make_mesh(MeshSpec())
    with jax.set_mesh(mesh), nn.logical_axis_rules(shard_lib.LOGICAL_RULES), ak.pallas_interpret():
        fn = jax.jit(lambda *a: ak.attend("pallas_flash", *a))
        assert "shard_map" in str(jax.make_jaxpr(fn)(q, k, v, bias, mask))
        got = fn(q, k, v, bias, mask)
    _close(got, _reference(q, k, v, bias, mask.dense()), "sharded output")


def test_config_field_is_checked_and_reaches_the_model():
    c = base_config(dataset="synthetic", teachers=(), size="tiny", tokenizer="synthetic")
    assert c.model.attention_impl == "xla"
    c.model.attention_impl = "pallas_flash"
    assert parse(c).model.attention_impl == "pallas_flash"
    c.model.attention_impl = "flash"
    with pytest.raises(ConfigError) as e:
        parse(c)
    assert ("config.model.attention_impl = 'flash': must be one of "
            "['xla', 'dot_product', 'pallas_flash']") in str(e.value)
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        T5Config(attention_impl="flash")
    assert model_config_dict("tiny").attention_impl == "xla"
