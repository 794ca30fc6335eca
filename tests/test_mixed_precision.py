"""bf16 mixed precision: bf16 matmul operands, float32 accumulation, float32 master state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tinyllm_jax.models import layers
from tinyllm_jax.models.t5_config import T5Config
from tinyllm_jax.train_step import init_state, make_train_step

TINY = dict(vocab_size=97, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            dropout_rate=0.0)


def _batch(seed: int = 0, rows: int = 3, length: int = 12) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    seg = np.ones((rows, length), np.int32)
    seg[:, length // 2 :] = 2  # two packed segments per row
    seg[0, -3:] = 0  # and some padding
    return {
        "encoder_input_tokens": jnp.asarray(rng.integers(2, 97, (rows, length)), jnp.int32),
        "encoder_segment_ids": jnp.asarray(seg),
        "decoder_input_tokens": jnp.asarray(rng.integers(2, 97, (rows, length)), jnp.int32),
        "decoder_target_tokens": jnp.asarray(rng.integers(2, 97, (rows, length)), jnp.int32),
        "decoder_segment_ids": jnp.asarray(seg),
        "decoder_task_ids": jnp.asarray(seg % 2, jnp.int32),
        "decoder_loss_weights": jnp.asarray(seg > 0, jnp.float32),
    }


def _dots(jaxpr: jax.extend.core.Jaxpr) -> list:
    """(dot_general equation, the operand dtypes before any widening convert) of every dot."""
    out = []
    widened = {v: e.invars[0].aval.dtype for e in jaxpr.eqns
               if e.primitive.name == "convert_element_type"
               and e.invars[0].aval.dtype == jnp.bfloat16 for v in e.outvars}
    for e in jaxpr.eqns:
        if e.primitive.name == "dot_general":
            out.append((e, tuple(str(widened.get(v, v.aval.dtype)) for v in e.invars)))
        for p in e.params.values():
            for sub in (p if isinstance(p, (tuple, list)) else (p,)):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out += _dots(inner)
    return out


def test_bf16_train_step_dots_take_bf16_operands_and_accumulate_in_float32():
    cfg = T5Config(**{**TINY, "num_layers": 1}, dtype="bfloat16")
    tx = optax.adamw(1e-3)
    step = make_train_step(cfg, tx, np.ones(2, np.float32))
    jaxpr = jax.make_jaxpr(step)(init_state(cfg, tx, 0), _batch()).jaxpr
    dots = _dots(jaxpr)
    kinds = {}
    for e, dts in dots:  # a bf16 value widened to float32 (exact) counts as bf16
        key = (dts, str(e.outvars[0].aval.dtype), len(e.params["dimension_numbers"][1][0]) > 0)
        kinds[key] = kinds.get(key, 0) + 1
    # Forward and backward of every matmul, 3 dots each: the projections and
    # MLP (7 per encoder layer, 11 per decoder layer) and the LM head take
    # bf16 operands into float32 dots; the attention scores and contexts
    # (2 and 4) are batched dots, of bf16 values widened to float32.
    assert kinds.pop((("bfloat16", "bfloat16"), "float32", False)) == 3 * (7 + 11 + 1), kinds
    assert kinds.pop((("bfloat16", "bfloat16"), "float32", True)) == 3 * (2 + 4), kinds
    # The only float32 dots left are the ones-vector sums of the shared
    # position-bias gradient (one per self-attention layer) and the loss's
    # per-task sum over the per-token CE and its transpose.
    assert kinds == {(("float32", "float32"), "float32", False): 2 + 2}, kinds


def test_bf16_master_state_stays_float32_and_loss_tracks_float32():
    batch = _batch(1)
    tx = optax.adamw(1e-3)
    losses, states = {}, {}
    tiny = {**TINY, "num_layers": 1}
    for dt in ("float32", "bfloat16"):
        cfg = T5Config(**tiny, dtype=dt)
        step = jax.jit(make_train_step(cfg, tx, np.ones(2, np.float32)))
        state, metrics = step(init_state(cfg, tx, 0), batch)
        losses[dt], states[dt] = float(metrics["loss"]), state
    leaves = jax.tree.leaves((states["bfloat16"].params, states["bfloat16"].opt_state))
    assert all(x.dtype in (jnp.float32, jnp.int32) for x in leaves)
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=1e-2)
    # The first AdamW update is ~lr * sign(grad): the same direction in both.
    d32, d16 = (jax.tree.map(lambda a, b: a - b, states[k].params,
                             init_state(T5Config(**tiny), tx, 0).params) for k in states)
    flat32 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(d32)])
    flat16 = np.concatenate([np.ravel(x) for x in jax.tree.leaves(d16)])
    cos = flat32 @ flat16 / np.linalg.norm(flat32) / np.linalg.norm(flat16)
    assert cos > 0.95


def test_mixed_einsum_gradients_match_float32():
    cases = [("...k,kn->...n", (2, 3, 5), (5, 4)),  # dense layers, the LM head
             ("bqhk,bshk->bhqs", (2, 3, 2, 4), (2, 5, 2, 4)),  # attention scores
             ("bhqs,bshk->bqhk", (2, 2, 3, 5), (2, 5, 2, 4))]  # attention context
    for spec, sa, sb in cases:
        ka, kb = jax.random.split(jax.random.key(0))
        a, b = jax.random.normal(ka, sa), jax.random.normal(kb, sb)

        def f(a, b, dtype, spec=spec):
            return jnp.sum(jnp.sin(layers.einsum(spec, a, b, dtype)))

        v32, g32 = jax.value_and_grad(f, argnums=(0, 1))(a, b, jnp.float32)
        v16, g16 = jax.value_and_grad(f, argnums=(0, 1))(a, b, jnp.bfloat16)
        assert float(v16) == pytest.approx(float(v32), abs=0.1), spec
        for x32, x16 in zip(g32, g16):
            assert x16.dtype == jnp.float32 and x16.shape == x32.shape
            np.testing.assert_allclose(x16, x32, atol=0.1, rtol=0.05, err_msg=spec)
