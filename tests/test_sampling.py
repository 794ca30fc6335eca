"""Sampling: the filtered distribution equals a NumPy reference (and HF's
warpers), draws follow it, a seed fixes the tokens, top_k=1 is greedy.

Every decoder call here has the same shapes (4 rows padded to 16, 10 new
tokens), so one compiled program serves the module: the filters and the
seed are data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import random_hf_t5
from tinyllm_jax import Student
from tinyllm_jax.evaluation.decoding import strip_after_eos
from tinyllm_jax.evaluation.sampling import filter_logits, sample_decode

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

T = 10
# (temperature, top_k, top_p): no filter, each filter alone, all three, and
# filters wider than the vocabulary.
FILTERS = [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 10, 1.0), (1.0, 0, 0.9), (0.5, 20, 0.8),
           (2.0, 1, 1.0), (1.0, 100, 0.3), (0.9, 5, 0.05)]


def reference_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float
                    ) -> np.ndarray:
    """HF's warpers (temperature, top-k, top-p) written out in float64 NumPy."""
    out = []
    for row in np.asarray(logits, np.float64):
        x = row / temperature
        if top_k > 0:
            kth = np.sort(x)[::-1][min(top_k, len(x)) - 1]
            x = np.where(x < kth, -np.inf, x)
        if top_p < 1.0:
            order = np.argsort(x, kind="stable")
            p = np.exp(x[order] - x.max())
            cumulative = np.cumsum(p / p.sum())
            drop = cumulative <= 1.0 - top_p
            drop[-1] = False  # the most likely token always stays
            x = x.copy()
            x[order[drop]] = -np.inf
        p = np.exp(x - x.max())
        out.append(p / p.sum())
    return np.stack(out)


@pytest.mark.parametrize("temperature, top_k, top_p", FILTERS)
def test_filtered_distribution_matches_numpy_and_hf(temperature, top_k, top_p):
    logits = np.random.default_rng(7).normal(0.0, 2.0, size=(6, 64)).astype(np.float32)
    ours = np.asarray(jax.nn.softmax(filter_logits(jnp.asarray(logits), temperature, top_k,
                                                   top_p), axis=-1))
    ref = reference_probs(logits, temperature, top_k, top_p)
    np.testing.assert_array_equal(ours > 0, ref > 0)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    if top_k:
        assert ((ref > 0).sum(-1) <= top_k).all()
    if top_p < 1:
        assert ((ref > 0).sum(-1) < 64).all()

    warpers = transformers.LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(transformers.TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(transformers.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(transformers.TopPLogitsWarper(top_p))
    hf = torch.softmax(warpers(None, torch.from_numpy(logits)), -1).numpy()
    np.testing.assert_allclose(ours, hf, atol=1e-6)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = random_hf_t5.build(tmp_path_factory.mktemp("sample_t5") / "m", "v1_tied_relu")
    student = Student.load(directory)
    student.tokenizer = type("Ids", (), {"eos_id": 1, "pad_id": 0})()
    sample_decode.clear_cache()  # this module's calls share one program (checked below)
    return student, transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()


def _seqs(seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 64, size=int(n)).tolist() for n in (9, 5, 12, 7)]


def test_a_seed_fixes_the_sample(model):
    student, _ = model
    kwargs = dict(max_new_tokens=T, batch_size=8, do_sample=True, temperature=1.5, top_k=0)
    first = student.generate_ids(_seqs(0), seed=3, **kwargs)
    assert student.generate_ids(_seqs(0), seed=3, **kwargs) == first
    assert student.generate_ids(_seqs(0), seed=4, **kwargs) != first
    assert all(len(s) <= T for s in first)


def test_top_k_1_is_greedy(model):
    student, hf = model
    seqs = _seqs(1)
    ids = torch.zeros((4, 16), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
    with torch.no_grad():
        greedy = hf.generate(input_ids=ids, attention_mask=(ids > 0).long(), max_new_tokens=T,
                             eos_token_id=1, decoder_start_token_id=0, pad_token_id=0)
    expected = [strip_after_eos(r) for r in greedy[:, 1:].numpy()]
    for seed, temperature in ((0, 1.0), (5, 2.5)):
        assert student.generate_ids(seqs, max_new_tokens=T, do_sample=True, top_k=1,
                                    temperature=temperature, seed=seed) == expected


def test_draws_follow_the_filtered_distribution(model):
    """1024 first tokens of one input (256 calls x 4 rows, each row its own
    stream) against the reference distribution of HF's logits."""
    student, hf = model
    temperature, top_k, top_p = 0.8, 12, 0.9
    seq = _seqs(2)[2]
    tokens = np.zeros((4, 16), np.int32)
    tokens[:, : len(seq)] = seq
    segments = (tokens > 0).astype(np.int32)
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([seq]), decoder_input_ids=torch.zeros((1, 1),
                                                                                 dtype=torch.long)
                    ).logits[:, 0].numpy()
    probs = reference_probs(logits, temperature, top_k, top_p)[0]
    kept = probs > 0
    assert 2 < kept.sum() < top_k, "the filters should cut but leave a choice"
    draws = []
    key = jax.random.key(11)
    for call in range(256):
        # The arguments Student.generate_ids passes: the same compiled program.
        out = sample_decode(student.params, jnp.asarray(tokens), jnp.asarray(segments),
                            jnp.arange(4, dtype=jnp.int32) + 4 * call, key, temperature,
                            top_k, top_p, config=student.config, max_new_tokens=T, eos_id=1,
                            pad_id=0)
        draws += np.asarray(out)[:, 0].tolist()
    assert sample_decode._cache_size() == 1
    counts = np.bincount(draws, minlength=len(probs))
    assert not counts[~kept].any(), "a filtered-out token was drawn"
    freq = counts / len(draws)
    sigma = np.sqrt(probs * (1 - probs) / len(draws))
    assert (np.abs(freq - probs) <= 4.5 * sigma + 1e-3).all(), (freq[kept], probs[kept])


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=0.0), "temperature=0.0 must be a finite number > 0"),
    (dict(top_k=-1), "top_k=-1 must be an integer >= 0"),
    (dict(top_p=0.0), r"top_p=0.0 must be a number in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p=1.5 must be a number in \(0, 1\]"),
    (dict(seed=-1), "seed=-1 must be an integer from 0"),
    (dict(do_sample="yes"), "do_sample='yes' must be True or False"),
])
def test_student_generate_names_bad_sampling_options(model, kwargs, message):
    student, _ = model
    kwargs.setdefault("do_sample", True)
    with pytest.raises(ValueError, match=message):
        student.generate_ids([[5, 6, 1]], max_new_tokens=4, **kwargs)
