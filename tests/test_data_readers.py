"""TinyLLM-layout reader, label options and the rationale store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.rationale_cleaning import clean_llama_rationale
from tinyllm_jax.data.stated_answers import stated_letter
from tinyllm_jax.data.store import (
    append_records,
    read_store,
    repair_partial_tail,
    store_path,
    stored_ids,
)
from tinyllm_jax.data.tinyllm import read_split
from tinyllm_jax.data.tinyllm_files import read_teacher_rows, teacher_chunk_paths

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyllm"
_skip_without_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent (given to developers and CI only)"
)


def needs_shared(test):
    return pytest.mark.shared_data(_skip_without_shared(test))


COUNTS = {
    "obqa": (4957, 500, 500),
    "arc": (1117, 295, 1165),
    "riddle": (3510, 511, 510),
    "piqa": (16113, 919, 919),
    "pubmedqa": (500, 100, 400),
}


# ---------------------------------------------------------------- handmade data


def teacher_string(q: dict, flan: str, letter: str | None, llama: str | None) -> str:
    """One string in the published format (no answer sentence when letter is None)."""
    text = flan
    if letter is not None:
        text += f" Thus, the answer is ({letter}) {q['choices']['abcde'.index(letter)]}"
    text += f"\n\nQ: {q['question']}\nAnswer Choices:\n"
    text += "\n".join(f"({'abcde'[i]}) {c}" for i, c in enumerate(q["choices"]))
    return text if llama is None else f"{text} llama rationale: {llama}"


QUESTIONS = [
    {"id": "q0", "question": "What melts ice?", "choices": ["heat", "cold", "dark"],
     "answer": "heat"},
    {"id": "q1", "question": "What do plants need?", "choices": ["sand", "light", "noise"],
     "answer": "light"},
    {"id": "q2", "question": "Where do fish live?", "choices": ["trees", "air", "water"],
     "answer": "water"},
]


def write_dataset(root: Path, name: str = "mini", split: str = "train", *, as_array: bool = False,
                  strings: list[str] | None = None, questions: list[dict] = QUESTIONS) -> Path:
    d = root / name
    (d / "llm").mkdir(parents=True, exist_ok=True)
    qfile = d / f"{name}_{split}.json"
    if as_array:
        qfile.write_text(json.dumps(questions, indent=2))
    else:
        qfile.write_text("".join(json.dumps(q) + "\n" for q in questions))
    if strings is None:
        strings = [
            teacher_string(QUESTIONS[0], "Heat raises the temperature.", "a",
                           "Let's think step by step. Heat melts ice.\nSo the answer is (a)."),
            # FLAN disagrees with gold here; LLaMA runs away into a new block.
            teacher_string(QUESTIONS[1], "Plants grow in sand.", "a",
                           "Plants need light.\nThe answer is (b).\n# 17. Question:\nWhat is 2+2?"),
            teacher_string(QUESTIONS[2], "Fish swim in water.", "c", "Let'"),
        ]
    (d / "llm" / f"{split}_CoT_0.json").write_text(json.dumps(strings))
    return root


def test_jsonl_and_array_question_files_read_the_same(tmp_path):
    a, _ = read_split(write_dataset(tmp_path / "a"), "mini", "train", ("flan", "llama"))
    b, _ = read_split(write_dataset(tmp_path / "b", as_array=True), "mini", "train",
                      ("flan", "llama"))
    assert a == b
    assert [e.id for e in a] == ["q0", "q1", "q2"]


def test_parsing_rationales_answers_and_counts(tmp_path):
    examples, report = read_split(write_dataset(tmp_path), "mini", "train", ("flan", "llama"))
    e0, e1, e2 = examples
    # The answer sentence is not part of the FLAN rationale target.
    assert e0.rationales["flan"] == "Heat raises the temperature."
    assert e0.teacher_answers == {"flan": "heat", "llama": "heat"}
    assert e1.teacher_answers["flan"] == "sand"
    assert e1.rationales["llama"] == "Plants need light.\nThe answer is (b)."
    assert e1.teacher_answers["llama"] == "light"
    assert e2.rationales["llama"] is None  # a torn prompt echo is no rationale
    assert e1.answer == "light" and e1.label_source == "gold"
    assert report.counts["flan/disagrees_with_gold"] == 1
    assert report.counts["llama/trimmed_runaway"] == 1
    assert report.counts["llama/empty_rationale"] == 1
    assert report.counts["examples"] == 3


def test_label_source_teacher_and_drop_disagreeing(tmp_path):
    root = write_dataset(tmp_path)
    # flan order first: the tie on q1 (flan "sand" vs llama "light") goes to flan.
    ex, rep = read_split(root, "mini", "train", ("flan", "llama"), label_source="teacher",
                         drop_disagreeing=True)
    assert ex[1].answer == "sand" and ex[1].label_source == "teacher"
    assert ex[1].rationales["flan"] is not None and ex[1].rationales["llama"] is None
    assert rep.counts["relabelled_from_teacher"] == 1
    assert rep.counts["label_tie_broken_by_teacher_order"] == 1
    assert rep.counts["llama/masked_disagreeing"] == 1
    # llama first: the same tie now keeps the gold answer and masks flan instead.
    ex, rep = read_split(root, "mini", "train", ("llama", "flan"), label_source="teacher",
                         drop_disagreeing=True)
    assert ex[1].answer == "light" and rep.counts["relabelled_from_teacher"] == 0
    assert ex[1].rationales["flan"] is None
    # Gold labels: flan's "sand" on q1 is masked, llama's "light" kept.
    ex, rep = read_split(root, "mini", "train", ("flan", "llama"), drop_disagreeing=True)
    assert ex[1].answer == "light" and ex[1].rationales["flan"] is None
    assert rep.counts["flan/masked_disagreeing"] == 1


def test_teacher_label_keeps_gold_without_any_stated_answer(tmp_path):
    strings = [teacher_string(q, "Because.", None, "No idea.") for q in QUESTIONS]
    root = write_dataset(tmp_path, strings=strings)
    ex, rep = read_split(root, "mini", "train", ("flan", "llama"), label_source="teacher")
    assert [e.answer for e in ex] == ["heat", "light", "water"]
    assert rep.counts["label_kept_gold_no_teacher_answer"] == 3
    assert all(e.label_source == "gold" for e in ex)


def test_majority_of_three_teachers_overrides_order(tmp_path):
    root = write_dataset(tmp_path)
    store = tmp_path / "store"
    append_records(store_path(store, "mini", "qwen", "train"), [
        {"id": "q1", "rationale": "Light feeds plants.", "teacher_answer": "light"},
        {"id": "q0", "rationale": "Heat melts.", "teacher_answer": "(a)"},
    ])
    ex, rep = read_split(root, "mini", "train", ("flan", "llama", "qwen"),
                         label_source="teacher", store_dir=store)
    # q1: llama + qwen say "light" against flan's "sand".
    assert ex[1].answer == "light" and rep.counts["relabelled_from_teacher"] == 0
    assert ex[0].teacher_answers["qwen"] == "heat"
    assert ex[2].rationales["qwen"] is None
    assert rep.counts["qwen/missing_rationale"] == 1


def test_store_teacher_replaces_builtin_and_counts_errors(tmp_path):
    root = write_dataset(tmp_path)
    store = tmp_path / "store"
    path = store_path(store, "mini", "flan", "train")
    append_records(path, [
        {"id": "q0", "rationale": "Warmth melts ice.", "teacher_answer": "heat"},
        {"id": "q1", "rationale": None, "teacher_answer": None, "error": "prompt_too_long"},
        {"id": "q2", "rationale": "  ", "teacher_answer": "c"},
    ])
    with path.open("a") as f:
        f.write('{"id": "q')  # a write torn by a crash
    ex, rep = read_split(root, "mini", "train", ("flan",), store_dir=store)
    assert ex[0].rationales["flan"] == "Warmth melts ice."
    assert ex[2].rationales["flan"] is None and ex[2].teacher_answers["flan"] == "water"
    assert rep.counts["flan/generation_error"] == 1
    assert rep.counts["flan/empty_rationale"] == 1
    assert rep.counts["flan/store_partial_last_line"] == 1


def test_teacher_chunks_sort_numerically(tmp_path):
    llm = tmp_path / "mini" / "llm"
    llm.mkdir(parents=True)
    for k in range(12):
        (llm / f"train_CoT_{k}.json").write_text("[]")
    (llm / "valid_CoT_0.json").write_text("[]")
    names = [p.name for p in teacher_chunk_paths(tmp_path, "mini", "train")]
    assert names == [f"train_CoT_{k}.json" for k in range(12)]


def test_llama_cleaning_rules():
    c = clean_llama_rationale(" Step one.\nStep one.\n\nStep one.\nDone.\nQ: What is next?\n")
    assert c.text == "Step one.\n\nDone." and c.trimmed and c.collapsed
    assert clean_llama_rationale(" Let's think step by step.\n").text is None
    assert clean_llama_rationale(" Fine reasoning.").text == "Fine reasoning."


@pytest.mark.parametrize("text,letter,ambiguous", [
    ("So the answer is (c) mirror.", "c", False),
    ("Hence, the answer is b.", "b", False),
    ("Option (a) is correct.", "a", False),
    ("reasoning\nAnswer:\nd", "d", False),
    ("The answer is a dictionary.", None, False),
    ("The answer is (a). No, the answer is (b).", None, True),
    ("The answer is (e).", None, False),  # only four choices
])
def test_stated_letter(text, letter, ambiguous):
    assert stated_letter(text, 4) == (letter, ambiguous)


# ---------------------------------------------------------------- store


def test_store_append_and_read_roundtrip(tmp_path):
    path = tmp_path / "s" / "t.jsonl"
    assert stored_ids(path) == set()
    assert append_records(path, [{"id": "a", "rationale": "x\ny"}, {"id": 7, "rationale": None}]) == 2
    store = read_store(path)
    assert [(r.line, r.id) for r in store.records] == [(1, "a"), (2, "7")]
    assert store.records[0].data["rationale"] == "x\ny" and store.partial_tail is None
    assert stored_ids(path) == {"a", "7"}


def test_store_torn_tail_is_reported_then_repaired_on_append(tmp_path):
    path = tmp_path / "t.jsonl"
    append_records(path, [{"id": "a"}])
    with path.open("a") as f:
        f.write('{"id": "b", "rati')
    store = read_store(path)
    assert store.ids() == {"a"} and store.partial_tail == '{"id": "b", "rati'
    append_records(path, [{"id": "b"}])
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_store_keeps_an_unterminated_but_complete_record(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')
    assert read_store(path).ids() == {"a", "b"}
    assert repair_partial_tail(path) == 0
    append_records(path, [{"id": "c"}])
    assert read_store(path).ids() == {"a", "b", "c"}


def test_store_rejects_a_bad_batch_without_writing(tmp_path):
    path = tmp_path / "t.jsonl"
    append_records(path, [{"id": "a"}])
    with pytest.raises(DataError, match=r"row 1.*'id'"):
        append_records(path, [{"id": "b"}, {"rationale": "no id"}])
    with pytest.raises(DataError, match="not JSON-serialisable"):
        append_records(path, [{"id": "c", "x": {1, 2}}])
    assert path.read_text() == '{"id": "a"}\n'


# ---------------------------------------------------------------- real data


@needs_shared
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_real_splits_load_with_published_counts(name):
    for split, expected in zip(("train", "valid", "test"), COUNTS[name]):
        examples, report = read_split(SHARED_DATA, name, split, ("flan", "llama"))
        assert len(examples) == expected == report.counts["examples"]
        assert len({e.id for e in examples}) == expected
        for e in examples:
            assert e.answer in e.choices
            assert set(e.rationales) == {"flan", "llama"}
        # FLAN was prompted with the gold answer: it always states one.
        assert report.counts["flan/no_stated_answer"] == 0
        assert report.counts["flan/empty_rationale"] == 0


@needs_shared
def test_real_riddle_train_flan_agrees_with_gold_up_to_whitespace():
    examples, report = read_split(SHARED_DATA, "riddle", "train", ("flan",))
    assert report.counts["flan/disagrees_with_gold"] == 0
    # The "82 disagreements" quoted for this split are gold answers whose
    # text carries blanks the teacher's restatement drops: a raw string
    # comparison sees 82 mismatches, a choice-level one none.
    padded = [e for e in examples if e.answer != e.answer.strip()]
    assert len(padded) == 82
    assert all(e.teacher_answers["flan"] == e.answer for e in padded)


@needs_shared
def test_real_piqa_has_no_llama_and_train_is_recovered():
    examples, report = read_split(SHARED_DATA, "piqa", "train", ("flan", "llama"))
    assert report.counts["recovered_from_teacher_files"] == 16113
    assert report.counts["llama/missing_rationale"] == 16113
    assert examples[0].id == "piqa-train-0" and examples[-1].id == "piqa-train-16112"
    assert all(e.label_source == "teacher" and e.rationales["llama"] is None for e in examples)
    assert all(e.answer == e.teacher_answers["flan"] and len(e.choices) == 2 for e in examples)
    _, valid = read_split(SHARED_DATA, "piqa", "valid", ("llama",))
    assert valid.counts["llama/missing_rationale"] == 919


@needs_shared
def test_real_arc_test_prompt_remnant_is_not_a_choice():
    rows = read_teacher_rows(SHARED_DATA, "arc", "test")
    assert all(not r.choices[-1].startswith("A:") and "\n" not in r.choices[-1] for r in rows)


@needs_shared
def test_real_options_are_consistent():
    examples, report = read_split(SHARED_DATA, "riddle", "train", ("flan", "llama"),
                                  label_source="teacher", drop_disagreeing=True)
    masked = sum(e.rationales["llama"] is None and e.teacher_answers["llama"] is not None
                 for e in examples)
    assert masked == report.counts["llama/masked_disagreeing"] > 0
    assert report.counts["relabelled_from_teacher"] == 0  # two teachers: ties go to flan
    assert all(e.label_source == "teacher" for e in examples)


# ---------------------------------------------------------------- split overlaps


def test_split_overlaps_counts_shared_ids_and_repeated_questions():
    from tinyllm_jax.data.example import Example
    from tinyllm_jax.data.overlaps import split_overlaps

    def ex(i, q, choices=("a", "b")):
        return Example(id=i, question=q, choices=choices, answer=choices[0])

    splits = {
        "test": [ex("t1", "What is red?"), ex("x", "Other?"), ex("t3", "Blue  sky? ")],
        "train": [ex("x", "Which?"), ex("r1", "What is red?"), ex("r2", "Blue sky?")],
        "valid": [ex("v1", "What is red?", ("a", "c")), ex("v2", "New one?")],
    }
    report = split_overlaps(splits)
    assert dict(report.counts) == {
        "overlap/ids_train_and_test": 1,
        # Same question but other choices is another question.
        "overlap/test_rows_same_as_train": 2,
    }
    assert any("'t1', 't3'" in n and "memorisation" in n for n in report.notes)
    assert not split_overlaps({"train": splits["train"], "valid": splits["valid"]}).counts


def test_data_report_at_training_start_shows_overlaps(tmp_path):
    from tinyllm_jax.data.bundle import load_data
    from tinyllm_jax.spec import data_spec

    questions = {
        "train": QUESTIONS,
        # q2 again under a new id, and q0's id for another question.
        "valid": [dict(QUESTIONS[2], id="v9"),
                  {"id": "q0", "question": "New?", "choices": ["x", "y"], "answer": "x"}],
    }
    d = tmp_path / "obqa"
    d.mkdir()
    for split, qs in questions.items():
        (d / f"obqa_{split}.json").write_text("".join(json.dumps(q) + "\n" for q in qs))
    spec = data_spec({"name": "obqa", "data_dir": str(tmp_path), "teachers": (),
                      "tokenizer": "byte", "max_input_len": 64, "max_target_len": 16})
    bundle = load_data(spec, ("valid",), model_vocab=1 << 16)
    assert bundle.report.counts["overlap/ids_train_and_valid"] == 1
    assert bundle.report.counts["overlap/valid_rows_same_as_train"] == 1
    assert "overlap/valid_rows_same_as_train: 1" in bundle.report.format("training data")
