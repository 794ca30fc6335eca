"""The reference metric (decoded prediction == decoded gold) against the raw-text one."""

from __future__ import annotations

import pytest

from tests.conftest import T5_VOCAB, TINYLLM_DATA
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.data import pipeline
from tinyllm_jax.data.example import Example
from tinyllm_jax.evaluation.scoring import accuracy_report, decoded_gold, survives_round_trip
from tinyllm_jax.spec import BEST_METRICS, ConfigError, parse
from tinyllm_jax.tokenizers import load_tokenizer

needs_vocab = pytest.mark.skipif(not (T5_VOCAB / "tokenizer.json").is_file(),
                                 reason=f"{T5_VOCAB} not present")
needs_data = pytest.mark.skipif(not TINYLLM_DATA.is_dir() or not T5_VOCAB.is_dir(),
                                reason=f"{TINYLLM_DATA} or {T5_VOCAB} not present")


def _example(i: int, answer: str, other: str = "something else") -> Example:
    return Example(id=f"q{i}", question=f"question {i}", choices=(answer, other), answer=answer)


@pytest.fixture(scope="module")
def t5():
    return load_tokenizer(T5_VOCAB)


# Golds that T5's vocabulary cannot spell: doubled spaces fold into one, and
# there is no piece for '{', '}' or '^' (ARC's chemistry and physics answers).
UNSPELLABLE = ["sedimentary rock which is  composed mainly of skeletal fragments",
               "2H_{2}O(l) -> 2H_{2}(g) + O_{2}(g)", "Beat until soft.  Stir in the chips."]


@needs_vocab
def test_golds_outside_the_vocabulary_count_under_the_reference_metric(t5):
    examples = [_example(i, g) for i, g in enumerate(UNSPELLABLE)]
    examples.append(_example(3, "Weld the metal together"))
    examples.append(_example(4, "plants sprouting"))
    for ex in examples[:3]:
        assert not survives_round_trip(ex.answer, t5)
        assert decoded_gold(ex.answer, t5) != ex.answer
    # The student says what the tokenizer can say: its best output is the
    # encoded gold itself; q4 answers wrongly.
    outputs = {ex.id: t5.encode(ex.answer) + [t5.eos_id] for ex in examples[:4]}
    outputs["q4"] = t5.encode("plants wilting") + [t5.eos_id]
    metrics, rows = accuracy_report(outputs, examples, t5)
    assert metrics["accuracy"] == pytest.approx(4 / 5)
    assert metrics["accuracy_strict"] == pytest.approx(1 / 5)
    assert metrics["accuracy_normalized"] == pytest.approx(4 / 5)
    by_id = {r["id"]: r for r in rows}
    for i in range(3):
        row = by_id[f"q{i}"]
        assert row["correct"] and not row["correct_strict"]
        assert row["gold_decoded"] == decoded_gold(UNSPELLABLE[i], t5)
        assert row["gold"] == UNSPELLABLE[i]
    assert by_id["q3"]["correct"] and by_id["q3"]["correct_strict"]
    assert "gold_decoded" not in by_id["q3"]
    assert not by_id["q4"]["correct"] and not by_id["q4"]["correct_normalized"]


@needs_vocab
def test_a_wrong_answer_stays_wrong_after_the_round_trip(t5):
    ex = _example(0, "2AlCl_{3} + 3Mg -> 3MgCl_{2} + 2Al", other="2AlCl_{3} + 3Mg")
    metrics, _ = accuracy_report({"q0": t5.encode("2AlCl_3 + 3Mg")}, [ex], t5)
    assert metrics["accuracy"] == 0.0 and metrics["accuracy_strict"] == 0.0


def test_the_synthetic_golds_all_survive_their_tokenizer():
    """Why the committed synthetic figures are unchanged by the metric change:
    with every gold intact, the two metrics agree on every example."""
    spec = parse(load_config_file("configs/experiments/synthetic.py", "method=both,seed=0"))
    tok = pipeline.tokenizer_for(spec.data)
    for split in ("valid", "test"):
        examples, _ = pipeline.load_examples(spec.data, split)
        assert examples
        assert all(survives_round_trip(ex.answer, tok) for ex in examples), split


# Test golds that do not survive the T5 round trip, counted on the published
# files (the issue quotes PIQA 79/919, 76 of them spacing only, and ARC 15/1165).
REAL_TEST_MISMATCHES = {"obqa": (0, 500), "arc": (15, 1165), "riddle": (0, 510),
                        "piqa": (79, 919), "pubmedqa": (0, 400)}


@needs_data
@pytest.mark.parametrize("dataset", sorted(REAL_TEST_MISMATCHES))
def test_real_test_golds_that_the_t5_vocabulary_changes(dataset, t5):
    cfg = load_config_file(f"configs/{dataset}.py", "teachers=none")
    cfg.data.data_dir = str(TINYLLM_DATA)
    examples, _ = pipeline.load_examples(parse(cfg).data, "test")
    bad = [ex for ex in examples if not survives_round_trip(ex.answer, t5)]
    assert (len(bad), len(examples)) == REAL_TEST_MISMATCHES[dataset]
    if dataset == "piqa":
        spacing = [ex for ex in bad
                   if decoded_gold(ex.answer, t5).split() == ex.answer.split()]
        assert len(spacing) == 76
    if dataset == "arc":
        # 12 chemistry formulas with braces (H_{2}O), 3 powers with a caret (m/s^2).
        assert sum("{" in ex.answer for ex in bad) == 12
        assert sum("^" in ex.answer for ex in bad) == 3


def test_either_exact_match_can_pick_the_best_checkpoint():
    assert {"accuracy", "accuracy_strict"} <= set(BEST_METRICS)
    for metric in ("accuracy", "accuracy_strict"):
        cfg = load_config_file("configs/demo.py")
        cfg.train.best_metric = metric
        assert parse(cfg).eval.best_metric == metric
    cfg = load_config_file("configs/demo.py")
    cfg.train.best_metric = "accuracy_raw"
    with pytest.raises(ConfigError, match="accuracy_strict"):
        parse(cfg)
