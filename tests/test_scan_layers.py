"""config.model.scan_layers: the scanned stacks compute what the unrolled ones
do (logits, a train step, greedy KV-cache decoding), and HF and Orbax
checkpoints load into either layout whichever layout wrote them."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from tinyllm_jax import memory as memory_lib
from tinyllm_jax import setup as setup_lib
from tinyllm_jax import sharding as shard_lib
from tinyllm_jax.checkpoint import Checkpointer, run_meta
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.evaluation.decoding import greedy_decode
from tinyllm_jax.models import layer_stacking, layers
from tinyllm_jax.models.hf import hf_state_dict, load_hf_checkpoint, save_hf_checkpoint
from tinyllm_jax.models.t5 import T5, T5Config, abstract_params, init_params
from tinyllm_jax.spec import ConfigError, MeshSpec, parse
from tinyllm_jax.student import Student
from tinyllm_jax.train_step import init_state, make_train_step, state_from_params

from .conftest import REPO

# Encoder and decoder of different depths, so each stack's length is its own.
CFG = T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=2,
               num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
               dropout_rate=0.0)
TOL = dict(rtol=1e-5, atol=1e-5)


@functools.cache
def _params(cfg: T5Config = CFG):
    init = jax.jit(init_params, static_argnums=0)
    return nn.meta.unbox(init(cfg, jax.random.key(3)))


def _forward(cfg: T5Config, params, b, **kwargs) -> np.ndarray:
    fn = jax.jit(lambda p, b: T5(cfg).apply(
        {"params": p}, b["encoder_input_tokens"], b["decoder_input_tokens"],
        b["encoder_segment_ids"], b["decoder_segment_ids"], **kwargs))
    return np.asarray(fn(params, b))


def _batch(rows: int = 4, n_in: int = 12, n_out: int = 10) -> dict[str, jnp.ndarray]:
    """Packed rows: two segments, then padding, in every row."""
    rng = np.random.default_rng(0)

    def segments(n: int) -> np.ndarray:
        cut = rng.integers(2, n - 3, size=rows)
        seg = np.where(np.arange(n)[None] < cut[:, None], 1, 2).astype(np.int32)
        seg[:, -2:] = 0
        return seg

    enc_seg, dec_seg = segments(n_in), segments(n_out)
    return {
        "encoder_input_tokens": jnp.asarray(rng.integers(2, 97, (rows, n_in)) * (enc_seg > 0)),
        "encoder_segment_ids": jnp.asarray(enc_seg),
        "decoder_input_tokens": jnp.asarray(rng.integers(2, 97, (rows, n_out)) * (dec_seg > 0)),
        "decoder_target_tokens": jnp.asarray(rng.integers(2, 97, (rows, n_out)) * (dec_seg > 0)),
        "decoder_segment_ids": jnp.asarray(dec_seg),
        "decoder_task_ids": jnp.asarray(rng.integers(0, 2, (rows, n_out)), jnp.int32),
        "decoder_loss_weights": jnp.asarray(dec_seg > 0, jnp.float32),
    }


def _flat(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in
            jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_trees_equal(a, b, **tol) -> None:
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        if tol:
            np.testing.assert_allclose(fa[k], fb[k], err_msg=k, **tol)
        else:
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_scanned_parameters_are_the_unrolled_ones_stacked():
    unrolled = _params()
    stacked = layer_stacking.stack_layers(unrolled)
    # Same tree, shapes and logical names as the scanned model's own init.
    boxed = abstract_params(CFG.replace(scan_layers=True))
    assert jax.tree.map(np.shape, stacked) == jax.tree.map(np.shape, nn.meta.unbox(boxed))
    query = boxed["encoder"]["layers"]["attention"]["query"]
    assert query.names == ("layers", "embed", "heads", "kv") and query.value.shape == (3, 32, 4, 8)
    assert boxed["decoder"]["layers"]["mlp"]["wo"].value.shape[0] == 2
    # The layers axis stays unsharded in the logical rules.
    assert dict(shard_lib.LOGICAL_RULES)["layers"] is None
    _assert_trees_equal(layer_stacking.unstack_layers(stacked), unrolled)
    assert layer_stacking.layout_of(stacked) is True and layer_stacking.layout_of(unrolled) is False
    with pytest.raises(layer_stacking.LayoutError, match="not numbered"):
        broken = dict(unrolled, encoder=dict(unrolled["encoder"]))
        del broken["encoder"]["layers_1"]
        layer_stacking.stack_layers(broken)


def test_logits_equal_the_unrolled_model():
    params, b = _params(), _batch()
    ref = _forward(CFG, params, b)
    got = _forward(CFG.replace(scan_layers=True), layer_stacking.stack_layers(params), b)
    np.testing.assert_allclose(got, ref, **TOL)


# The per-layer remat policies ("full", "dots") run with the slow tests.
@pytest.mark.parametrize("remat", ["none", pytest.param("full", marks=pytest.mark.slow),
                                   pytest.param("dots", marks=pytest.mark.slow)])
def test_one_train_step_equals_the_unrolled_model(remat):
    tx = optax.adamw(1e-2, weight_decay=0.01)
    coefs = np.asarray([1.0, 0.5], np.float32)
    params, b = _params(), _batch()
    results = []
    for scanned in (False, True):
        cfg = CFG.replace(scan_layers=scanned, remat=remat)
        p = layer_stacking.to_layout(params, scanned)
        step = jax.jit(make_train_step(cfg, tx, coefs))
        state, metrics = step(state_from_params(p, tx, 0), b)
        results.append((layer_stacking.convert_state(state, scanned=False), metrics))
    (s0, m0), (s1, m1) = results
    for key in ("loss", "grad_norm", "per_task_ce"):
        np.testing.assert_allclose(np.asarray(m1[key]), np.asarray(m0[key]), err_msg=key, **TOL)
    _assert_trees_equal(s1.params, s0.params, **TOL)
    _assert_trees_equal(s1.opt_state, s0.opt_state, **TOL)


@pytest.mark.slow
def test_each_scanned_layer_draws_its_own_dropout_mask():
    """split_rngs: with one key for all layers, every layer would drop the
    same MLP units (the same zero pattern at every depth)."""
    cfg = CFG.replace(scan_layers=True, dropout_rate=0.5)
    params, b = _params(cfg), _batch()
    fn = jax.jit(lambda p, key: T5(cfg).apply(
        {"params": p}, b["encoder_input_tokens"], b["decoder_input_tokens"],
        b["encoder_segment_ids"], b["decoder_segment_ids"], enable_dropout=True,
        rngs={"dropout": key}, mutable=["intermediates"],
        capture_intermediates=lambda m, _: isinstance(m, layers.Dropout)))
    logits, state = fn(params, jax.random.key(0))
    assert np.isfinite(np.asarray(logits)).all()
    for stack, n in (("encoder", 3), ("decoder", 2)):
        (hidden,) = state["intermediates"][stack]["layers"]["mlp"]["Dropout_0"]["__call__"]
        dropped = np.asarray(hidden) == 0
        assert dropped.shape[0] == n and 0.3 < dropped.mean() < 0.7
        for i in range(1, n):
            assert (dropped[i] != dropped[0]).mean() > 0.2, (stack, i)


def test_greedy_kv_cache_decode_equals_the_unrolled_model():
    params = _params()
    b = _batch(rows=3)
    outs = []
    for scanned in (False, True):
        outs.append(np.asarray(greedy_decode(
            layer_stacking.to_layout(params, scanned), b["encoder_input_tokens"],
            b["encoder_segment_ids"], config=CFG.replace(scan_layers=scanned),
            max_new_tokens=9, eos_id=1,
        )))
    np.testing.assert_array_equal(outs[1], outs[0])
    assert len(np.unique(outs[0])) > 1  # a real continuation, not one repeated token


def test_hf_round_trip_through_the_scanned_layout_is_exact(hf_t5_dirs, tmp_path):
    import safetensors.numpy

    directory = hf_t5_dirs["uneven_layers"]
    cfg, params = load_hf_checkpoint(directory, scan_layers=True)
    assert cfg.scan_layers and params["encoder"]["layers"]["mlp"]["wo"].shape[0] == 3
    assert params["decoder"]["layers"]["mlp"]["wo"].shape[0] == 1
    original = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    exported = hf_state_dict(cfg, params)
    assert set(exported) <= set(original)
    for name, value in exported.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    out = save_hf_checkpoint(tmp_path / "export", cfg, params)
    cfg2, params2 = load_hf_checkpoint(out, scan_layers=True)
    assert cfg2 == cfg
    _assert_trees_equal(params2, params)
    # The scanned student computes what the unrolled one does.
    _, unrolled = load_hf_checkpoint(directory)
    b = _batch()
    ids = b["encoder_input_tokens"] % cfg.vocab_size
    dec = b["decoder_input_tokens"] % cfg.vocab_size
    got = Student(cfg, params).logits(ids, b["encoder_segment_ids"] > 0, dec)
    ref = Student(cfg.replace(scan_layers=False), unrolled).logits(
        ids, b["encoder_segment_ids"] > 0, dec)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), **TOL)


def _abstract_state(cfg: T5Config, tx):
    mesh = shard_lib.make_mesh(MeshSpec(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    abstract, _ = setup_lib.state_shardings(cfg, tx, mesh)
    return abstract


@pytest.mark.parametrize("saved_scanned", [
    pytest.param(False, id="unrolled->scanned"),
    pytest.param(True, id="scanned->unrolled", marks=pytest.mark.slow)])
def test_orbax_checkpoint_restores_in_the_other_layout(saved_scanned, tmp_path):
    tx = optax.adamw(1e-3)
    saved_cfg = CFG.replace(scan_layers=saved_scanned)
    state = jax.jit(lambda: init_state(saved_cfg, tx, 5))()
    meta = run_meta(saved_cfg, teachers=("a",), tokenizer="byte", dataset="x", vocab=97)
    ckpt = Checkpointer(tmp_path, async_save=False)
    ckpt.save(4, state, {"seed": 0, "epoch": 0, "position": 4}, meta, force=True)
    ckpt.wait()

    want_cfg = CFG.replace(scan_layers=not saved_scanned)
    abstract = _abstract_state(want_cfg, tx)
    expected = layer_stacking.convert_state(state, scanned=not saved_scanned)
    # As a resume reads it: the newest intact step, checked against its checksums.
    found = ckpt.restore_intact(abstract, expected_meta=run_meta(
        want_cfg, teachers=("a",), tokenizer="byte", dataset="x", vocab=97))
    assert found.step == 4 and not found.unverified
    _assert_trees_equal(found.state, expected)
    leaf = found.state.params["decoder"]["layers" if not saved_scanned else "layers_1"]
    assert jax.tree.leaves(leaf)[0].sharding == jax.tree.leaves(
        abstract.params["decoder"]["layers" if not saved_scanned else "layers_1"])[0].sharding
    restored, data, _ = ckpt.restore(4, abstract)  # the path of tests/helpers/run_steps.py
    assert data["position"] == 4
    _assert_trees_equal(restored.params, expected.params)
    ckpt.close()

    # Student.from_workdir builds the unrolled model from the run description.
    student = Student.from_workdir(tmp_path, which="latest", tokenizer="unused")
    assert not student.config.scan_layers
    _assert_trees_equal(student.params, layer_stacking.to_layout(state.params, False))


def test_memory_estimate_is_the_same_for_both_layouts():
    def total(cfg: T5Config) -> int:
        mesh = shard_lib.make_mesh(MeshSpec(data=1, fsdp=1, tensor=1), jax.devices()[:1])
        abstract, shardings = setup_lib.state_shardings(cfg, optax.adamw(1e-3), mesh)
        rows = memory_lib.parameter_rows(cfg, shardings.params, dict(mesh.shape))
        return memory_lib.estimate(cfg, abstract, rows, dict(mesh.shape), batch_size=4,
                                   input_len=16, target_len=8).total

    assert total(CFG.replace(scan_layers=True)) == total(CFG)


def test_config_accepts_scan_layers_and_refuses_it_with_adafactor():
    cfg = load_config_file(REPO / "configs" / "tiny.py")
    cfg.model.scan_layers = True
    assert parse(cfg).model.scan_layers
    cfg.optimizer.name = "adafactor"
    with pytest.raises(ConfigError, match="scan_layers = True: not supported with"):
        parse(cfg)
