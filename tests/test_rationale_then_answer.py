"""The rationale-then-answer student mode: targets, answer parsing, ranking
on the answer span, and a tiny training run in this mode."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyllm_jax.data import pipeline
from tinyllm_jax.data.example import Example
from tinyllm_jax.data.rationale_then_answer import (
    SEPARATOR,
    build_rationale_then_answer_features,
    rationale_then_answer_target,
)
from tinyllm_jax.evaluation.answer_parsing import parse_generation
from tinyllm_jax.spec import ConfigError, data_spec
from tinyllm_jax.tokenizers import ByteTokenizer

REPO = Path(__file__).resolve().parents[1]
TEACHERS = ("algebra", "verbal")


def _data(**extra):
    return data_spec({
        "name": "synthetic", "teachers": TEACHERS, "student_mode": "rationale_then_answer",
        "synthetic": {"train_size": 12, "valid_size": 4, "test_size": 4,
                      "missing_rates": {"verbal": 0.3}},
        **extra,
    })


def test_training_targets_are_rationale_separator_answer_one_per_teacher_rationale():
    data, tok = _data(), ByteTokenizer()
    examples, _ = pipeline.load_examples(data, "train")
    feats, report = pipeline.build_features(data, examples, tok)
    rationales = [(ex, t) for ex in examples for t in TEACHERS if ex.rationales.get(t)]
    missing = sum(1 for ex in examples for t in TEACHERS if not ex.rationales.get(t))
    assert missing > 0  # the missing-rate path is exercised
    assert len(feats) == len(rationales)
    assert report.counts["features/answer/dropped_missing_rationale"] == missing
    assert report.counts["features/answer/rationale_then_answer_pairs"] == len(feats)
    for f, (ex, t) in zip(feats, rationales):
        assert f.example_id == ex.id and f.task_id == 0
        want = (tok.encode(ex.rationales[t].strip()) + tok.encode(SEPARATOR)
                + tok.encode(ex.answer) + [tok.eos_id])
        assert f.targets.tolist() == want
        assert f.inputs.tolist() == tok.encode(data.answer_prefix + ex.input) + [tok.eos_id]
    # Eval pairs: one per example, the answer alone behind the separator.
    evals, _ = pipeline.build_features(data, examples, tok, tasks=(0,))
    assert [f.example_id for f in evals] == [ex.id for ex in examples]
    assert evals[0].targets.tolist() == (tok.encode(SEPARATOR) + tok.encode(examples[0].answer)
                                         + [tok.eos_id])
    with pytest.raises(ValueError, match="one task"):
        pipeline.build_features(data, examples, tok, tasks=(1,))


def test_too_long_targets_lose_rationale_never_the_answer():
    tok = ByteTokenizer()
    tail = len(SEPARATOR) + len("42") + 1
    ids, cut = rationale_then_answer_target("x" * 50, "42", tok, max_target_len=tail + 5)
    assert cut and len(ids) == tail + 5
    assert tok.decode(ids) == "xxxxx" + SEPARATOR + "42"
    ids, cut = rationale_then_answer_target("abc", "42", tok, max_target_len=tail + 5)
    assert not cut and tok.decode(ids) == "abc" + SEPARATOR + "42"
    assert rationale_then_answer_target("abc", "42", tok, max_target_len=tail - 1) == (None, False)
    ex = Example("e0", "q?", ("42", "7"), "42", {"algebra": "y" * 40})
    feats, report = build_rationale_then_answer_features(
        [ex], tok, teachers=("algebra",), answer_prefix="predict: ", max_input_len=128,
        max_target_len=tail + 3)
    assert len(feats) == 1 and report.counts["features/answer/rationale_truncated"] == 1
    feats, report = build_rationale_then_answer_features(
        [ex], tok, teachers=("algebra",), answer_prefix="predict: ", max_input_len=128,
        max_target_len=tail - 1)
    assert feats == [] and report.counts["features/answer/dropped_answer_too_long"] == 1


@pytest.mark.parametrize("text, rationale, answer", [
    ("3 * 4 = 12. So the answer is: 12", "3 * 4 = 12.", "12"),
    ("no separator at all, The answer is 12.", "no separator at all, The answer is 12.", None),
    # The last separator wins: a rationale may contain the phrase itself.
    ("So the answer is: 3. Wait. So the answer is: 5 ", "So the answer is: 3. Wait.", "5"),
    ("7 + 1 = 8. So the answer is:", "7 + 1 = 8.", ""),  # separator, nothing after: wrong
    ("so the answer is: 8", "so the answer is: 8", None),  # matched exactly, case included
    ("So the answer is 8.", "So the answer is 8.", None),  # the teachers' phrase, no colon
    ("", "", None),
    ("So the answer is:(b) cats", "", "(b) cats"),
])
def test_parse_generation_edge_cases(text, rationale, answer):
    parsed = parse_generation(text)
    assert parsed.rationale == rationale and parsed.answer == answer


def test_spec_validates_student_mode():
    with pytest.raises(ConfigError, match=r"config.data.student_mode = 'cot'.*one of"):
        _data(student_mode="cot")
    with pytest.raises(ConfigError, match="needs at least one teacher"):
        data_spec({"name": "synthetic", "teachers": (), "student_mode": "rationale_then_answer"})
    assert data_spec({"name": "synthetic"}).student_mode == "multitask"


def test_ranking_scores_the_answer_span_after_the_generated_rationale():
    from tinyllm_jax.evaluation.batching import pad_batch
    from tinyllm_jax.evaluation.rationale_then_answer import rank_answer_spans
    from tinyllm_jax.models.t5 import T5, T5Config
    from tinyllm_jax.sharding import make_mesh
    from tinyllm_jax.spec import MeshSpec

    tok = ByteTokenizer()
    config = T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                      num_heads=2, dropout_rate=0.0)
    data = _data()
    examples, _ = pipeline.load_examples(data, "test")
    examples = examples[:3]
    feats, _ = pipeline.build_features(data, examples, tok, tasks=(0,))
    # Made-up generations: one with the separator, one without, one repeating it.
    texts = ["1 + 2 = 3. " + SEPARATOR + " 3", "a rationale but no separator",
             f"{SEPARATOR} 4. {SEPARATOR} 5"]
    parsed = {ex.id: parse_generation(t) for ex, t in zip(examples, texts)}
    model = T5(config)
    one = jnp.ones((1, 8), jnp.int32)
    params = model.init(jax.random.PRNGKey(3), one, one, one, one)["params"]
    ranked = rank_answer_spans(params, config, feats, examples, parsed, tokenizer=tok,
                               mesh=make_mesh(MeshSpec()), batch_size=16)
    assert set(ranked) == {ex.id for ex in examples}
    # Every (example, choice) as one padded batch, scored here by hand.
    inputs, targets, starts, owners = [], [], [], []
    for f, ex in zip(feats, examples):
        prefix = tok.encode(parsed[ex.id].rationale) + tok.encode(SEPARATOR)
        for c, choice in enumerate(ex.choices):
            inputs.append(f.inputs.tolist())
            targets.append(prefix + tok.encode(choice) + [tok.eos_id])
            starts.append(len(prefix))
            owners.append((ex.id, c))
    enc, enc_seg = pad_batch(inputs, max(map(len, inputs)), len(inputs))
    tgt, dec_seg = pad_batch(targets, max(map(len, targets)), len(targets))
    dec_in = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)
    logits = model.apply({"params": params}, jnp.asarray(enc), jnp.asarray(dec_in),
                         jnp.asarray(enc_seg), jnp.asarray(dec_seg))
    logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1))
    best: dict[str, tuple[float, int]] = {}
    for r, (ex_id, c) in enumerate(owners):
        span = range(starts[r], len(targets[r]))  # the choice and EOS, not the rationale
        score = sum(float(logp[r, t, tgt[r, t]]) for t in span)
        if ex_id not in best or score > best[ex_id][0]:
            best[ex_id] = (score, c)
    assert ranked == {k: v[1] for k, v in best.items()}


@pytest.fixture(scope="module")
def rta_run(tmp_path_factory):
    from tinyllm_jax.configs import load_config_file
    from tinyllm_jax.train import train_and_evaluate

    cfg = load_config_file(REPO / "configs" / "tiny.py", "steps=4")
    cfg.data.student_mode = "rationale_then_answer"
    cfg.train.eval_every = 0  # the final test evaluation only
    cfg.train.eval_max_new_tokens = 0  # rationale + answer: up to max_target_len
    workdir = tmp_path_factory.mktemp("rta")
    return cfg, workdir, train_and_evaluate(cfg, str(workdir))


@pytest.mark.slow  # a few minutes on the loaded 2-core machine (compiles train + eval)
def test_tiny_training_run_reports_parsed_answers_and_accuracy(rta_run):
    _, workdir, summary = rta_run
    assert summary["status"] == "completed"
    for key in ("test_accuracy", "test_accuracy_ranked", "test_no_separator_fraction"):
        assert 0.0 <= summary[key] <= 1.0
    rows = [json.loads(line) for line in (workdir / "predictions_test.jsonl").open()]
    assert len(rows) == summary["test_examples"] == 16
    assert summary["test_no_separator"] == sum(not r["separator_found"] for r in rows)
    for r in rows:
        parsed = parse_generation(r["generation"])
        assert r["separator_found"] == (parsed.answer is not None)
        assert r["prediction"] == (parsed.answer or "")
        assert r["correct"] == (r["prediction"] == r["gold"])
    assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(summary["test_accuracy"])
    # The generation was allowed rationale + answer, not just an answer's length.
    assert max(len(r["generation"]) for r in rows) > 20


def test_results_table_of_the_grid(tmp_path):
    from experiments.grids import synthetic_rationale_then_answer
    from experiments.rationale_then_answer_table import table

    names = [n for n, _, _ in synthetic_rationale_then_answer()]
    assert len(names) == len(set(names)) == 12
    for seed, acc in ((0, 0.3), (1, 0.5)):
        d = tmp_path / f"synthetic-rta-3ep-s{seed}"
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"wall_s": 10.0}))
        (d / "summary.json").write_text(json.dumps(
            {"step": 79, "test_accuracy": acc, "test_accuracy_ranked": acc,
             "test_no_separator_fraction": 0.1, "test_chance": 0.25}))
    text = table(tmp_path)
    assert ("| rationale-then-answer | 3ep | 79 | 2 | 40.0 ± 14.1 | 40.0 ± 14.1 | 10.0 ± 0.0 "
            "| 25.0 | 10 |") in text
    assert "multi-task" not in text  # no finished runs, no row
