"""Float32 logits of our Flax T5 vs transformers' PyTorch T5 on the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from tinyllm_jax import Student
from tinyllm_jax.models.layers import relative_position_bucket_table
from tinyllm_jax.models.t5 import abstract_params, count_params
from tinyllm_jax.models.t5_config import SIZES

torch = pytest.importorskip("torch")


def _padded_inputs(seed: int, vocab: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (3, 37), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 21:] = 0  # mixed lengths: three rows, two padded
    mask[2, 6:] = 0
    ids[mask == 0] = 0
    dec = torch.randint(2, vocab, (3, 19), generator=g)
    dec[:, 0] = 0
    return ids, mask, dec


@pytest.mark.parametrize("name", ["v1_tied_relu", "flan_small_shape", "uneven_layers"])
def test_logits_match_hf(name, hf_t5_dirs, hf_t5_models):
    model = hf_t5_models[name]
    student = Student.load(hf_t5_dirs[name])
    cfg = student.config
    assert cfg.tie_word_embeddings == (name == "v1_tied_relu")
    assert cfg.scales_decoder_outputs == (name == "v1_tied_relu")
    assert model.config.scale_decoder_outputs == cfg.scales_decoder_outputs
    ids, mask, dec = _padded_inputs(7, cfg.vocab_size)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.numpy()
    ours = student.logits(ids.numpy(), mask.numpy(), dec.numpy())
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4, np.abs(ours - ref).max()


def test_relative_position_buckets_match_hf():
    from transformers.models.t5.modeling_t5 import T5Attention

    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (16, 20), (8, 9)):
            table = relative_position_bucket_table(bidirectional, buckets, distance)
            rel = torch.arange(-3 * distance, 3 * distance + 1)
            ref = T5Attention._relative_position_bucket(rel, bidirectional, buckets, distance)
            ours = table[np.clip(rel.numpy(), -distance, distance) + distance]
            np.testing.assert_array_equal(ours, ref.numpy())


def test_flan_parameter_counts_without_allocation():
    assert count_params(abstract_params(SIZES["flan-t5-base"])) == 247_577_856
    assert count_params(abstract_params(SIZES["flan-t5-small"])) == 76_961_152


def test_every_parameter_has_logical_axes():
    from flax import linen as nn

    boxed = abstract_params(SIZES["flan-t5-small"].replace(num_layers=1))
    leaves = jax_leaves_with_path(boxed)
    assert leaves
    for path, leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned), path
        assert len(leaf.names) == len(leaf.value.shape), path


def jax_leaves_with_path(tree):
    import jax
    from flax import linen as nn

    return jax.tree_util.tree_leaves_with_path(
        tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
    )


def test_bfloat16_compute_stays_close_and_params_stay_float32(hf_t5_dirs):
    import jax
    import jax.numpy as jnp

    from tinyllm_jax.models.t5 import T5

    student = Student.load(hf_t5_dirs["uneven_layers"])
    ids, mask, dec = _padded_inputs(3, student.config.vocab_size)
    ref = student.logits(ids.numpy(), mask.numpy(), dec.numpy())
    cfg16 = student.config.replace(dtype="bfloat16")
    out = T5(cfg16).apply(
        {"params": student.params}, jnp.asarray(ids.numpy()), jnp.asarray(dec.numpy()),
        jnp.asarray(mask.numpy()),
    )
    assert out.dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(student.params))
    # bf16 has 8 mantissa bits: agreement to a few percent of the logit scale.
    assert np.abs(np.asarray(out) - ref).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_same_logits_and_grads(remat, hf_t5_dirs):
    import jax
    import jax.numpy as jnp

    from tinyllm_jax.models.t5 import T5

    student = Student.load(hf_t5_dirs["uneven_layers"])
    ids, mask, dec = _padded_inputs(5, student.config.vocab_size)
    args = (jnp.asarray(ids.numpy()), jnp.asarray(dec.numpy()), jnp.asarray(mask.numpy()))

    def loss(params, cfg):
        return T5(cfg).apply({"params": params}, *args).mean()

    g0 = jax.grad(loss)(student.params, student.config)
    g1 = jax.grad(loss)(student.params, student.config.replace(remat=remat))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
