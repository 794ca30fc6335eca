"""The synthetic reasoning task: determinism, correctness, teachers, config."""

from __future__ import annotations

import collections
import re

import pytest

from tinyllm_jax.data import synthetic
from tinyllm_jax.data.synthetic import SyntheticConfig, config_from, generate_split
from tinyllm_jax.spec import data_spec

SMALL = SyntheticConfig(train_size=300, valid_size=60, test_size=60)
EXACT = SyntheticConfig(
    train_size=200,
    valid_size=20,
    test_size=20,
    error_rates={"algebra": 0.0, "verbal": 0.0, "steps": 0.0},
    missing_rates={},
)
EQUATION = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.")


def _check_equations(text: str) -> tuple[int, int]:
    """(correct, wrong) equation counts in an algebra rationale."""
    ok = bad = 0
    for a, op, b, c in EQUATION.findall(text):
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        ok, bad = (ok + 1, bad) if value == int(c) else (ok, bad + 1)
    return ok, bad


def test_same_seed_same_examples_other_seed_differs():
    a, _ = generate_split("valid", SMALL)
    b, _ = generate_split("validation", SMALL)  # alias
    assert a == b
    c, _ = generate_split(
        "valid", SyntheticConfig(train_size=300, valid_size=60, test_size=60, seed=1)
    )
    assert [e.question for e in a] != [e.question for e in c]


def test_splits_sized_unique_and_test_stable_under_train_size():
    splits = {s: generate_split(s, SMALL)[0] for s in ("train", "valid", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 300, "valid": 60, "test": 60}
    questions = [e.question for v in splits.values() for e in v]
    assert len(set(questions)) == len(questions)
    assert splits["train"][0].id == "synthetic-train-00000"
    bigger = SyntheticConfig(train_size=500, valid_size=60, test_size=60)
    assert generate_split("test", bigger)[0] == splits["test"]


def test_examples_are_well_formed_and_short():
    examples, _ = generate_split("train", SMALL, teachers=("algebra", "verbal", "steps"))
    for e in examples:
        assert len(e.choices) == 4 and len(set(e.choices)) == 4
        assert e.answer in e.choices
        assert all(c.isdigit() for c in e.choices)
        assert 90 <= len(e.input) <= 220, e.input
        assert e.question.endswith("have now?")


def test_correct_teachers_compute_the_gold_answer():
    examples, report = generate_split("train", EXACT, teachers=("algebra", "verbal", "steps"))
    for e in examples:
        assert set(e.teacher_answers.values()) == {e.answer}
        ok, bad = _check_equations(e.rationales["algebra"])
        assert bad == 0 and ok >= 2
        assert e.rationales["algebra"].endswith(f"The answer is {e.answer}.")
        assert e.rationales["verbal"].endswith(f"So the answer is {e.answer}.")
        assert e.rationales["steps"].endswith(f"Answer: {e.answer}.")
    assert not any(k.endswith("slipped") for k in report.counts)


def test_wrong_teacher_states_a_distractor_with_a_matching_rationale():
    cfg = SyntheticConfig(
        train_size=100, valid_size=10, test_size=10, error_rates={"algebra": 1.0}, missing_rates={}
    )
    examples, report = generate_split("train", cfg, teachers=("algebra",))
    assert report.counts["algebra/slipped"] == 100
    for e in examples:
        stated = e.teacher_answers["algebra"]
        assert stated != e.answer and stated in e.choices
        assert e.rationales["algebra"].endswith(f"The answer is {stated}.")


def test_teachers_are_independent_and_error_sets_nest():
    base = SyntheticConfig(
        train_size=200,
        valid_size=10,
        test_size=10,
        error_rates={"algebra": 0.1, "verbal": 0.2},
        missing_rates={},
    )
    one, _ = generate_split("train", base, teachers=("algebra",))
    two, _ = generate_split("train", base, teachers=("algebra", "verbal"))
    assert [e.rationales["algebra"] for e in one] == [e.rationales["algebra"] for e in two]
    more = SyntheticConfig(
        train_size=200, valid_size=10, test_size=10, error_rates={"algebra": 0.4}, missing_rates={}
    )
    worse, _ = generate_split("train", more, teachers=("algebra",))
    wrong_low = {e.id for e in one if e.teacher_answers["algebra"] != e.answer}
    wrong_high = {e.id for e in worse if e.teacher_answers["algebra"] != e.answer}
    assert wrong_low and wrong_low < wrong_high


def test_missing_rationales_are_none_and_counted():
    cfg = SyntheticConfig(
        train_size=200, valid_size=10, test_size=10, missing_rates={"verbal": 0.5}
    )
    examples, report = generate_split("train", cfg)
    missing = [e for e in examples if e.rationales["verbal"] is None]
    assert 60 < len(missing) < 140
    assert all(e.teacher_answers["verbal"] is None for e in missing)
    assert report.counts["verbal/missing_rationale"] == len(missing)


def test_distractors_do_not_give_the_answer_away():
    # Answer-only guessing must stay weak: the gold value's rank among the
    # sorted choices and its position are both far from fixed.
    examples, _ = generate_split(
        "train", SyntheticConfig(train_size=1000, valid_size=10, test_size=10)
    )
    ranks = collections.Counter(sorted(map(int, e.choices)).index(int(e.answer)) for e in examples)
    positions = collections.Counter(e.answer_index for e in examples)
    assert max(ranks.values()) < 0.5 * len(examples)
    assert max(positions.values()) < 0.3 * len(examples)


def test_config_from_mapping_sequence_and_errors():
    cfg = config_from({"train_size": 10, "error_rates": (0.0, 0.5)}, teachers=("algebra", "verbal"))
    assert cfg.train_size == 10 and cfg.error_rates == {"algebra": 0.0, "verbal": 0.5}
    with pytest.raises(ValueError, match="unknown key"):
        config_from({"train_sise": 10})
    with pytest.raises(ValueError, match="2 rates for 1 teachers"):
        config_from({"error_rates": (0.1, 0.2)}, teachers=("algebra",))
    with pytest.raises(ValueError, match="unknown teacher"):
        generate_split("train", SMALL, teachers=("flan",))
    with pytest.raises(ValueError, match="unknown split"):
        generate_split("dev-test", SMALL)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        generate_split("test", SyntheticConfig(test_size=5, error_rates={"algebra": 2.0}))
    assert set(synthetic.TEACHERS) >= {"algebra", "verbal"}


def test_pipeline_applies_label_options_to_synthetic():
    pipeline = pytest.importorskip("tinyllm_jax.data.pipeline")
    data_cfg = {
        "name": "synthetic",
        "teachers": ("algebra", "verbal"),
        "drop_disagreeing": True,
        "synthetic": {
            "train_size": 200,
            "valid_size": 10,
            "test_size": 10,
            "error_rates": {"algebra": 0.5, "verbal": 0.0},
            "missing_rates": {},
        },
    }
    examples, report = pipeline.load_examples(data_spec(data_cfg), "train")
    masked = report.counts["algebra/masked_disagreeing"]
    assert masked == report.counts["algebra/disagrees_with_gold"] > 40
    assert sum(e.rationales["algebra"] is None for e in examples) == masked
    assert all(e.rationales["verbal"] is not None for e in examples)
