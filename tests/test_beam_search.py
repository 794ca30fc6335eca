"""Beam search: token for token HF `generate(num_beams=k)`, all k hypotheses and
their scores, on random HF T5 models of three shapes; one compiled program
for every length penalty and early-stopping setting; wired into
Student.generate and the eval config."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from tests.helpers import random_hf_t5
from tinyllm_jax import Student
from tinyllm_jax import setup as setup_lib
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.data.bundle import load_data
from tinyllm_jax.evaluation import decoding
from tinyllm_jax.evaluation.beam_search import beam_search, beam_search_program
from tinyllm_jax.evaluation.decode_options import DecodeOptions
from tinyllm_jax.evaluation.run import evaluate_run_split
from tinyllm_jax.models.t5 import abstract_params
from tinyllm_jax.spec import ConfigError, parse

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

K, T = 3, 10
# (length_penalty, early_stopping): HF's default, and both stopping rules
# with penalties that favour shorter (< 1) and longer (> 1) answers.
SETTINGS = [(1.0, False), (0.6, True), (2.0, False)]
# Slow runs add the other shapes, both rules at more penalties, and "never".
MORE_SETTINGS = [*SETTINGS, (1.0, True), (2.0, True), (0.6, False), (-0.5, False),
                 (-0.5, True), (1.5, "never"), (0.5, "never")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """models[shape] = (HF directory, HF model), each built when first asked for."""
    root = tmp_path_factory.mktemp("beam_t5")

    class Built(dict):
        def __missing__(self, shape):
            directory = random_hf_t5.build(root / shape, shape,
                                           seed=list(random_hf_t5.SHAPES).index(shape))
            model = transformers.T5ForConditionalGeneration.from_pretrained(directory).eval()
            self[shape] = (directory, model)
            return self[shape]

    return Built()


def _inputs(seed: int, vocab: int = 64):
    """4 rows padded to 16, Student.generate's bucket for them (one program for both)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (4, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[:, 9:] = 0
    mask[1, 5:] = 0  # a shorter row
    ids[mask == 0] = 0
    return ids, mask


def _hf(model, ids, mask, *, eos, length_penalty=1.0, early_stopping=False, num_return=K,
        use_cache=True):
    """HF's k hypotheses as [batch, k, T] (pad after the first EOS) and scores."""
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, num_beams=K,
            num_return_sequences=num_return, max_new_tokens=T, eos_token_id=eos,
            pad_token_id=0, decoder_start_token_id=0, length_penalty=length_penalty,
            early_stopping=early_stopping, output_scores=True, return_dict_in_generate=True,
            use_cache=use_cache,
        )
    seqs = out.sequences[:, 1:].numpy()  # drop the decoder start token
    seqs = np.pad(seqs, ((0, 0), (0, T - seqs.shape[1])), constant_values=eos)
    for row in seqs:  # HF fills after EOS with EOS; ours with pad
        ends = np.flatnonzero(row == eos)
        if len(ends):
            row[ends[0] + 1:] = 0
    return seqs.reshape(len(ids), num_return, T), out.sequences_scores.numpy().reshape(
        len(ids), num_return)


def _busy_token(model, ids, mask, use_cache):
    """A token HF's beams often produce mid-sequence: as EOS it ends
    hypotheses at different lengths, so finishing and stopping are exercised."""
    free, _ = _hf(model, ids, mask, eos=1, use_cache=use_cache)
    values, counts = np.unique(free[:, :, 2:T - 2], return_counts=True)
    return int(next(v for v in values[np.argsort(-counts, kind="stable")] if v > 1))


def test_beam_search_equals_hf_generate(models):
    _check_against_hf(models, "v1_tied_relu", SETTINGS)


@pytest.mark.slow
@pytest.mark.parametrize("shape", list(random_hf_t5.SHAPES))
def test_beam_search_equals_hf_generate_every_shape_and_setting(shape, models):
    _check_against_hf(models, shape, MORE_SETTINGS)


def _check_against_hf(models, shape, settings):
    directory, model = models[shape]
    # transformers' KV cache breaks when the stacks differ in depth (see test_decode.py).
    use_cache = shape != "uneven_layers"
    student = Student.load(directory)
    ids, mask = _inputs(seed=len(shape))
    eos = _busy_token(model, ids, mask, use_cache)
    beam_search_program.clear_cache()
    results = []
    for length_penalty, early_stopping in settings:
        ref, ref_scores = _hf(model, ids, mask, eos=eos, length_penalty=length_penalty,
                              early_stopping=early_stopping, use_cache=use_cache)
        ours = beam_search(
            student.params, jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy()),
            config=student.config, max_new_tokens=T, num_beams=K,
            length_penalty=length_penalty, early_stopping=early_stopping, eos_id=eos)
        setting = f"length_penalty={length_penalty}, early_stopping={early_stopping}"
        np.testing.assert_array_equal(np.asarray(ours.sequences), ref, err_msg=setting)
        np.testing.assert_allclose(np.asarray(ours.scores), ref_scores, rtol=1e-4, atol=1e-5,
                                   err_msg=setting)
        results.append(ref)
    # Not vacuous: hypotheses end at EOS and at the length limit, and the
    # settings change the answers.
    ended = np.stack([(r == eos).any(-1) for r in results])
    assert ended.any() and not ended.all()
    assert len({r.tobytes() for r in results}) >= 2
    # Length penalty and early stopping are data: one program for all settings.
    assert beam_search_program._cache_size() == 1


def test_student_generate_ids_is_hf_best_beam_in_any_row(models):
    directory, model = models["v1_tied_relu"]
    student = Student.load(directory)
    ids, mask = _inputs(seed=len("v1_tied_relu"))
    eos = _busy_token(model, ids, mask, use_cache=True)
    student.tokenizer = type("Ids", (), {"eos_id": eos, "pad_id": 0})()
    ref, _ = _hf(model, ids, mask, eos=eos, length_penalty=0.6, num_return=1)
    with torch.no_grad():
        greedy = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=T,
                                eos_token_id=eos, decoder_start_token_id=0, pad_token_id=0)
    expected = [decoding.strip_after_eos(r, eos) for r in ref[:, 0]]
    assert expected != [decoding.strip_after_eos(r, eos) for r in greedy[:, 1:].numpy()], (
        "HF's beam search gave its greedy answers: the comparison would show little")
    seqs = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    kwargs = dict(max_new_tokens=T, num_beams=K, length_penalty=0.6, batch_size=8)
    assert student.generate_ids(seqs, **kwargs) == expected
    # Rows in other places of the batch (and next to other rows) give the same.
    assert student.generate_ids(seqs[::-1], **kwargs) == expected[::-1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_beams=0), "num_beams=0 must be an integer >= 1"),
    (dict(num_beams=2.0), "num_beams=2.0 must be an integer"),
    (dict(num_beams=2, early_stopping="sometimes"), "early_stopping='sometimes' must be True"),
    (dict(num_beams=2, length_penalty=float("nan")), "length_penalty=nan must be a finite"),
    (dict(num_beams=2, do_sample=True), "beam sampling is not implemented"),
])
def test_student_generate_names_bad_beam_options(models, kwargs, message):
    student = Student.load(models["v1_tied_relu"][0])
    with pytest.raises(ValueError, match=message):
        student.generate_ids([[5, 6, 1]], max_new_tokens=4, **kwargs)


def test_eval_config_reaches_the_decoder(monkeypatch):
    """config.train.eval_* -> EvalSpec -> the decoder of evaluate_run_split,
    which training's evaluations and --mode=eval both call."""
    cfg = load_config_file(str(Path(__file__).resolve().parents[1] / "configs" / "tiny.py"))
    cfg.train.eval_num_beams = 2
    cfg.train.eval_length_penalty = 0.5
    cfg.train.eval_early_stopping = True
    cfg.train.rank_choices = False
    cfg.train.eval_max_new_tokens = 3
    spec = parse(cfg)
    assert spec.eval.num_beams == 2 and spec.eval.early_stopping is True
    bundle = load_data(spec.data, ("valid",), model_vocab=spec.model.vocab_size, train=False)
    seen = []

    def spy(params, tokens, segments, row_ids, **kwargs):
        seen.append(kwargs["options"])
        assert row_ids.shape == tokens.shape[:1]
        return jnp.full((len(tokens), kwargs["max_new_tokens"]), kwargs["eos_id"], jnp.int32)

    monkeypatch.setattr(decoding, "decode_rows", spy)
    # The decoders' results are tested above; here only what they are asked.
    # Shapes only: the spy stands in for the one reader of the parameters.
    params = abstract_params(spec.model)
    metrics, rows = evaluate_run_split(spec, spec.model, nn.meta.unbox(params), bundle, "valid",
                                       setup_lib.run_mesh(spec, train=False))
    assert seen and set(seen) == {DecodeOptions(num_beams=2, length_penalty=0.5,
                                                early_stopping=True)}
    assert len(rows) == metrics["examples"] == 16

    cfg.train.eval_num_beams = 0
    cfg.train.eval_top_p = 0.0
    with pytest.raises(ConfigError) as e:
        parse(cfg)
    assert "config.train.eval_num_beams = 0: must be an integer >= 1" in str(e.value)
    assert "config.train.eval_top_p = 0.0: must be a number in (0, 1]" in str(e.value)
