"""TFDS builders: array_record build, read back without TensorFlow, same
examples and counts as read_split."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# TFDS is an optional dependency (the `tfds` extra; the `test` extra has it).
pytest.importorskip("tensorflow_datasets")

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.store import append_records, store_path
from tinyllm_jax.data.tfds_builders import BUILDERS, load_tfds_split
from tinyllm_jax.data.tinyllm import read_split

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "tinyllm"

QUESTIONS = [
    {"id": "b1", "question": "Is aspirin an NSAID?", "choices": ["yes", "no"], "answer": "yes"},
    {"id": "b2", "question": "Is insulin made in the liver?", "choices": ["yes", "no"],
     "answer": "no"},
    {"id": "b3", "question": "Is DNA double stranded?", "choices": ["yes", "no"], "answer": "yes"},
]
FLAN = [("Aspirin inhibits COX enzymes.", "a"), ("The liver makes insulin.", "a"),
        ("", "a")]
LLAMA = ["Aspirin is an NSAID.\nSo the answer is (a).",
         "Insulin comes from the pancreas.\nThe answer is (b).\n# 3. Question:\nnext",
         "DNA has two strands."]


def make_manual_dir(root: Path, name: str = "bioasq") -> Path:
    d = root / name
    (d / "llm").mkdir(parents=True)
    for split in ("train", "test"):
        (d / f"{name}_{split}.json").write_text(json.dumps(QUESTIONS))
        strings = []
        for q, (flan, letter), llama in zip(QUESTIONS, FLAN, LLAMA):
            stated = q["choices"]["ab".index(letter)]
            strings.append(f"{flan} Thus, the answer is ({letter}) {stated}\n\nQ: {q['question']}"
                           f"\nAnswer Choices:\n(a) yes\n(b) no llama rationale: {llama}")
        (d / "llm" / f"{split}_CoT_0.json").write_text(json.dumps(strings))
    # valid: questions only, as a user's own data whose rationales come from a store.
    (d / f"{name}_valid.json").write_text(json.dumps(QUESTIONS[:2]))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One handmade build shared by the tests of this module (builds are the slow part)."""
    tmp = tmp_path_factory.mktemp("tfds")
    manual = make_manual_dir(tmp / "manual")
    data_dir = tmp / "data"
    examples, report = load_tfds_split("bioasq", "train", data_dir, manual, ("flan", "llama"))
    return manual, data_dir, examples, report


def test_roundtrip_matches_read_split(built):
    manual, data_dir, examples, report = built
    expected, expected_report = read_split(manual, "bioasq", "train", ("flan", "llama"))
    assert examples == expected
    assert report.counts == expected_report.counts
    assert examples[1].rationales["llama"] == "Insulin comes from the pancreas.\nThe answer is (b)."
    assert examples[2].rationales["flan"] is None
    assert report.counts["llama/trimmed_runaway"] == 1
    files = sorted(p.name for p in (data_dir / "tinyllm_bioasq" / "1.0.0").iterdir())
    assert "tinyllm_bioasq-train.array_record-00000-of-00001" in files
    assert "tinyllm_bioasq-test.array_record-00000-of-00001" in files


def test_split_without_teacher_files(built, tmp_path):
    manual, data_dir, _, _ = built
    got, report = load_tfds_split("bioasq", "valid", data_dir, None, ())
    assert got == read_split(manual, "bioasq", "valid", ())[0] and len(got) == 2
    assert any("no teacher files" in n for n in report.notes)
    with pytest.raises(DataError, match=r"unknown teacher 'flan' for bioasq/valid"):
        load_tfds_split("bioasq", "valid", data_dir, None, ("flan",))


@pytest.mark.parametrize("teachers,kw", [
    (("llama", "flan"), {"label_source": "teacher", "drop_disagreeing": True}),
    (("flan",), {"drop_disagreeing": True}),
    ((), {}),
])
def test_options_applied_at_load_time(built, teachers, kw):
    manual, data_dir, _, _ = built
    got, got_report = load_tfds_split("bioasq", "test", data_dir, None, teachers, **kw)
    want, want_report = read_split(manual, "bioasq", "test", teachers, **kw)
    assert got == want
    assert got_report.counts == want_report.counts


def test_store_teacher_joined_at_load_time(built, tmp_path):
    manual, data_dir, _, _ = built
    store = tmp_path / "store"
    append_records(store_path(store, "bioasq", "qwen", "train"),
                   [{"id": "b2", "rationale": "Beta cells make it.", "teacher_answer": "no"}])
    kw = {"label_source": "teacher", "store_dir": store}
    got, got_report = load_tfds_split("bioasq", "train", data_dir, None, ("flan", "qwen"), **kw)
    want, want_report = read_split(manual, "bioasq", "train", ("flan", "qwen"), **kw)
    assert got == want and got_report.counts == want_report.counts
    assert got[1].rationales["qwen"] == "Beta cells make it."


def test_build_and_read_without_tensorflow(built, tmp_path):
    """Building and tfds.data_source must work when TensorFlow cannot be imported."""
    manual, _, _, _ = built
    data_dir = tmp_path / "data"
    # Every finder is wrapped to report TensorFlow as not installed, so the
    # check holds on a machine that has it. (A None entry in sys.modules or a
    # finder that raises would not do: TFDS and etils probe with find_spec.)
    script = textwrap.dedent(f"""
        import sys

        class HideTF:
            def __init__(self, inner):
                self.inner = inner

            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow" or name.startswith("tensorflow."):
                    return None
                find = getattr(self.inner, "find_spec", None)
                return None if find is None else find(name, path, target)

        sys.meta_path[:] = [HideTF(f) for f in sys.meta_path]
        import tensorflow_datasets as tfds
        from tinyllm_jax.data.tfds_builders import load_tfds_split

        examples, _ = load_tfds_split("bioasq", "train", {str(data_dir)!r}, {str(manual)!r},
                                      ("flan",))
        ds = tfds.data_source("tinyllm_bioasq", split="train", data_dir={str(data_dir)!r},
                              download=False)
        flags = [bool(x) for x in ds[2]["teachers"]["has_rationale"]]
        print(len(examples), len(ds), ds[1]["id"].decode(), flags)
        assert "tensorflow" not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "3 3 b2 [False, True]"


def test_errors(built, tmp_path):
    _, data_dir, _, _ = built
    with pytest.raises(DataError, match=r"field 'split'.*has no split 'dev'.*\['test', 'train', 'valid'\]"):
        load_tfds_split("bioasq", "dev", data_dir, None, ("flan",))
    with pytest.raises(DataError, match=r"unknown teacher 'gpt'"):
        load_tfds_split("bioasq", "train", data_dir, None, ("gpt",))
    with pytest.raises(DataError, match=r"no TFDS builder for 'squad'"):
        load_tfds_split("squad", "train", data_dir, None, ("flan",))
    with pytest.raises(DataError, match=r"no usable manual_dir for tinyllm_arc"):
        load_tfds_split("arc", "train", tmp_path / "data", tmp_path / "nowhere", ("flan",))
    empty = tmp_path / "manual"
    (empty / "other").mkdir(parents=True)
    with pytest.raises(DataError, match=r"manual: no arc/ directory in the manual dir"):
        load_tfds_split("arc", "train", tmp_path / "data", empty, ("flan",))


def test_every_dataset_has_a_builder():
    assert sorted(BUILDERS) == ["arc", "bioasq", "obqa", "piqa", "pubmedqa", "riddle"]
    assert {b.name for b in BUILDERS.values()} == {f"tinyllm_{n}" for n in BUILDERS}


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent (given to developers and CI only)")
def test_real_arc_valid_roundtrip(tmp_path):
    got, got_report = load_tfds_split("arc", "valid", tmp_path, SHARED_DATA, ("flan", "llama"))
    want, want_report = read_split(SHARED_DATA, "arc", "valid", ("flan", "llama"))
    assert len(got) == 295 and got == want and got_report.counts == want_report.counts


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent (given to developers and CI only)")
def test_real_piqa_train_roundtrip(tmp_path):
    got, got_report = load_tfds_split("piqa", "train", tmp_path, SHARED_DATA, ("flan",))
    want, want_report = read_split(SHARED_DATA, "piqa", "train", ("flan",))
    assert len(got) == 16113 and got == want and got_report.counts == want_report.counts
