"""Greedy decoding: token-for-token equal to HF generate, fixed shapes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from tinyllm_jax import Student
from tinyllm_jax.evaluation.batching import bucket_length, pad_batch
from tinyllm_jax.evaluation.decoding import greedy_decode, strip_after_eos

torch = pytest.importorskip("torch")
MAX_NEW = 24


def _hf_generate(model, ids, mask, eos_id, use_cache):
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
            max_new_tokens=MAX_NEW, min_new_tokens=0, eos_token_id=eos_id, pad_token_id=0,
            decoder_start_token_id=0, use_cache=use_cache,
        ).numpy()
    out = out[:, 1:]  # drop the decoder start token
    return np.pad(out, ((0, 0), (0, MAX_NEW - out.shape[1])))


@pytest.mark.parametrize("name", ["v1_tied_relu", "flan_small_shape", "uneven_layers"])
def test_greedy_matches_hf_generate(name, hf_t5_dirs, hf_t5_models):
    model = hf_t5_models[name]
    # transformers' KV cache breaks when the stacks differ in depth (see DESIGN.md).
    use_cache = name != "uneven_layers"
    student = Student.load(hf_t5_dirs[name])
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(2, student.config.vocab_size, (5, 14), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0
    mask[4, 3:] = 0
    ids[mask == 0] = 0
    # Choose as EOS a token HF emits mid-sequence in row 0, so that stopping
    # and padding after EOS are exercised for real.
    free = _hf_generate(model, ids, mask, eos_id=1, use_cache=use_cache)
    eos = int(free[0, 4])
    ref = _hf_generate(model, ids, mask, eos_id=eos, use_cache=use_cache)
    assert (ref == eos).any(axis=1).sum() >= 1
    ours = greedy_decode(
        student.params, jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy()),
        config=student.config, max_new_tokens=MAX_NEW, eos_id=eos,
    )
    np.testing.assert_array_equal(np.asarray(ours), ref)


def test_no_recompilation_for_same_bucket(hf_t5_dirs):
    student = Student.load(hf_t5_dirs["v1_tied_relu"])
    greedy_decode.clear_cache()
    rng = np.random.default_rng(0)
    for n in (3, 9, 14):  # different lengths, all inside the 16-token bucket
        seqs = [list(rng.integers(2, 300, size=n)) for _ in range(4)]
        tokens, seg = pad_batch(seqs, bucket_length(n), 4)
        greedy_decode(student.params, jnp.asarray(tokens), jnp.asarray(seg),
                      config=student.config, max_new_tokens=8)
    assert greedy_decode._cache_size() == 1


def test_generate_ids_batches_and_strips_eos(hf_t5_dirs):
    student = Student.load(hf_t5_dirs["v1_tied_relu"])
    rng = np.random.default_rng(1)
    seqs = [list(rng.integers(2, 300, size=int(n))) for n in rng.integers(3, 30, size=7)]
    whole = student.generate_ids(seqs, max_new_tokens=6, batch_size=8)
    split = student.generate_ids(seqs, max_new_tokens=6, batch_size=3)
    assert whole == split
    assert all(len(s) <= 6 for s in whole)
    assert strip_after_eos(np.array([5, 6, 1, 0, 0])) == [5, 6]
