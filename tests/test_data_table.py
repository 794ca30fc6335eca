"""Your own data (config.data.table): the four formats, the column mapping, bad rows,
the config checks, and the README's worked example run as documented."""

from __future__ import annotations

import csv
import importlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tinyllm_jax.configs import load_config_file
from tinyllm_jax.data.errors import DataError
from tinyllm_jax.data.pipeline import load_examples
from tinyllm_jax.data.provenance import question_hash
from tinyllm_jax.data.store import append_records, store_path
from tinyllm_jax.spec import ConfigError, data_spec, parse
from tinyllm_jax.tokenizers import T5_VOCAB_ENV, TokenizerError, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
ROWS = [
    {"id": "q1", "question": "What do plants need?", "choices": ["sunlight", "sand", "salt"],
     "answer": "sunlight", "gpt": "Plants use sunlight.", "llm2": "Light feeds plants."},
    {"id": "q2", "question": "Which is a mammal?", "choices": ["shark", "whale"],
     "answer": "whale", "gpt": "", "llm2": "Whales nurse their young."},
    {"id": "q3", "question": "What melts ice?", "choices": ["cold", "shade", "heat", "night"],
     "answer": "heat", "gpt": "Heat adds energy.", "llm2": "Warmth melts it."},
]


def data_config(tmp_path: Path, fmt: str, **table) -> dict:
    base = {"format": fmt, "path": str(tmp_path), "train": f"train.{fmt}",
            "rationales": ("gpt", "llm2"), "id": "id"}
    base.update(table)
    return {"name": "mine", "teachers": ("gpt", "llm2"), "tokenizer": "byte", "table": base}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    return path


def read(tmp_path: Path, fmt: str, split: str = "train", **table):
    return load_examples(data_spec(data_config(tmp_path, fmt, **table)), split)


def test_every_format_gives_the_same_examples(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_csv(tmp_path / "train.csv", ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "train.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(
        str(tmp_path / "hf"))
    results = {fmt: read(tmp_path, fmt) for fmt in ("jsonl", "csv", "parquet")}
    results["hf"] = load_examples(data_spec(data_config(
        tmp_path, "hf", path=str(tmp_path / "hf"), train="")), "train")
    first, report = results["jsonl"]
    assert [e.id for e in first] == ["q1", "q2", "q3"]
    assert first[2].choices == ("cold", "shade", "heat", "night") and first[2].answer == "heat"
    assert first[0].rationales == {"gpt": "Plants use sunlight.", "llm2": "Light feeds plants."}
    assert first[1].rationales["gpt"] is None  # empty cell: no rationale task
    assert report.counts["gpt/missing_rationale"] == 1 and report.counts["examples"] == 3
    for fmt, (examples, _) in results.items():
        assert examples == first, fmt


def test_choices_in_columns_and_answers_as_letter_or_index(tmp_path):
    rows = [{"q": "Pick B", "A": "one", "B": "two", "C": "", "label": "B", "n": 1},
            {"q": "Pick C", "A": "x", "B": "y", "C": "z", "label": "(c)", "n": 2}]
    write_csv(tmp_path / "train.csv", rows)
    spec = dict(question="q", choices=("A,B,C",), rationales=(), id="")
    cfg = data_config(tmp_path, "csv", answer="label", **spec)
    cfg["teachers"] = ()
    examples, report = load_examples(data_spec(cfg), "train")
    assert [e.choices for e in examples] == [("one", "two"), ("x", "y", "z")]
    assert [e.answer for e in examples] == ["two", "z"]
    assert [e.id for e in examples] == ["mine-train-0", "mine-train-1"]
    assert report.counts["answer_read_as/letter"] == 2
    cfg["table"].update(answer="n", answer_format="index")
    assert [e.answer for e in load_examples(data_spec(cfg), "train")[0]] == ["two", "z"]


def test_teacher_without_a_column_comes_from_the_rationale_store(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    store = tmp_path / "store"
    path = store_path(store, "mine", "llm2", "train")
    path.parent.mkdir(parents=True)
    # What the teachers command writes: one record per question, keyed by id.
    append_records(path, [
        {"id": r["id"], "rationale": f"stored {r['id']}", "teacher_answer": r["answer"],
         "question_hash": question_hash(r["question"], r["choices"], r["answer"])}
        for r in ROWS])
    cfg = data_config(tmp_path, "jsonl", rationales=("gpt", ""))
    cfg["rationale_store"] = str(store)
    examples, _ = load_examples(data_spec(cfg), "train")
    assert [e.rationales["llm2"] for e in examples] == ["stored q1", "stored q2", "stored q3"]
    assert examples[0].rationales["gpt"] == "Plants use sunlight."


@pytest.mark.parametrize("row, field, message", [
    ({"choices": ["a", "b"], "answer": "c"}, "answer", "answer 'c' is not one of the 2 options"),
    ({"choices": ["only"]}, "choices", "1 option(s)"),
    ({"choices": "red, blue"}, "choices", "is not a JSON list"),
    ({"question": ""}, "question", "empty value"),
    ({"id": "q1"}, "id", "duplicate id 'q1'"),
    ({"extra": 1, "gpt": None, "question": None}, "question", "empty value"),
])
def test_a_bad_row_names_file_row_and_field(tmp_path, row, field, message):
    bad = {**ROWS[1], **row}
    path = write_jsonl(tmp_path / "train.jsonl", [ROWS[0], ROWS[2], bad])
    with pytest.raises(DataError) as e:
        read(tmp_path, "jsonl")
    assert (e.value.path, e.value.line, e.value.row, e.value.field) == (str(path), 3, 2, field)
    assert message in str(e.value)
    assert str(e.value).startswith(f"{path}, line 3, row 2, field {field!r}: ")


def test_missing_column_and_broken_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{k: v for k, v in ROWS[0].items() if k != "llm2"}])
    with pytest.raises(DataError, match=r"row 0, field 'llm2': no such column \(expected one of"):
        read(tmp_path, "jsonl")
    (tmp_path / "train.jsonl").write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2, row 1: malformed JSON line"):
        read(tmp_path, "jsonl")
    write_csv(tmp_path / "train.csv", ROWS)
    with (tmp_path / "train.csv").open("a") as f:
        f.write("q9,just two cells\n")
    with pytest.raises(DataError, match=r"line 5, row 3: 2 cells but the header has 6 columns"):
        read(tmp_path, "csv")
    with pytest.raises(DataError, match=r"valid.jsonl: file not found"):
        read(tmp_path, "jsonl", split="valid", valid="valid.jsonl")
    (tmp_path / "train.parquet").write_text("not parquet")
    if importlib.util.find_spec("pyarrow"):
        with pytest.raises(DataError, match="not a readable Parquet file"):
            read(tmp_path, "parquet")


def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "train.parquet").write_bytes(b"PAR1")
    real = importlib.import_module

    def no_pyarrow(name, *a, **k):
        if name.startswith(("pyarrow", "datasets")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", no_pyarrow)
    with pytest.raises(DataError, match=r"needs the optional package 'pyarrow'.*tinyllm_jax\[data\]"):
        read(tmp_path, "parquet")
    with pytest.raises(DataError, match=r"optional package 'datasets'.*tinyllm_jax\[data\]"):
        read(tmp_path, "hf", path="some/hub-id", train="")


def test_hf_split_names_and_a_single_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                          "validation": datasets.Dataset.from_list(ROWS[:1])}).save_to_disk(
        str(tmp_path / "dd"))
    examples, _ = read(tmp_path, "hf", split="valid", path=str(tmp_path / "dd"), train="")
    assert [e.id for e in examples] == ["q1"]
    with pytest.raises(DataError, match=r"field 'table.test': no split for 'test'"):
        read(tmp_path, "hf", split="test", path=str(tmp_path / "dd"), train="")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(DataError, match="one Dataset without splits"):
        read(tmp_path, "hf", path=str(tmp_path / "one"), train="")


def _problems(**changes) -> str:
    cfg = load_config_file(REPO / "configs" / "own_data.py",
                           "teachers=gpt,size=tiny,tokenizer=byte,steps=4")
    for key, value in changes.items():
        *sections, field = key.split("__")
        node = cfg
        for name in sections:
            node = node[name]
        node[field] = value
    with pytest.raises(ConfigError) as e:
        parse(cfg)
    return str(e.value)


def test_config_checks_name_the_field():
    assert "config.data.table.rationales = ('a', 'b'): must name one column per teacher" in \
        _problems(data__table__rationales=("a", "b"))
    assert "config.data.table.format = 'xlsx': must be one of" in _problems(data__table__format="xlsx")
    assert "config.data.table.test = '': the run reads the 'test' split" in \
        _problems(train__final_eval_split="test")
    assert "'train'] set but config.data.table.format is ''" in _problems(data__table__format="")
    assert "mapped to more than one of" in _problems(data__table__question="gpt")


def test_t5_vocabulary_only_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(T5_VOCAB_ENV, str(tmp_path / "absent"))
    with pytest.raises(TokenizerError, match=r"\$TINYLLM_T5_VOCAB=.*is not a directory"):
        load_tokenizer("t5")
    # No code path looks in a ../shared next to the package.
    for path in (REPO / "tinyllm_jax").rglob("*.py"):
        code = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")]
        assert not any(re.search(r"[\"']shared[\"']", ln) for ln in code), path


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Use your own data", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_worked_example_trains(tmp_path):
    """The README's commands as written, from a directory laid out like the repository."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_example()], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "answer_read_as/letter: 4" in out and "gpt/missing_rationale: 1" in out
    assert "step 4:" in out and "final test:" in out
    predictions = (tmp_path / "workdirs/mine/predictions_test.jsonl").read_text().splitlines()
    assert [json.loads(p)["id"] for p in predictions] == ["mydata-test-0", "mydata-test-1"]


def test_readme_example_files_parse_as_documented(tmp_path):
    """The same files (default suite, no training): the reader reads them as the README says."""
    script = _readme_example().split("python -m tinyllm_jax.main", 1)[0]
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, check=True)
    cfg = load_config_file(REPO / "configs" / "own_data.py",
                           "path=mydata,train=train.jsonl,test=test.jsonl,teachers=gpt,"
                           "size=tiny,tokenizer=byte,steps=4")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        spec = parse(cfg)
        train, report = load_examples(spec.data, "train")
        test, _ = load_examples(spec.data, "test")
    finally:
        os.chdir(cwd)
    assert report.counts["answer_read_as/letter"] == 4
    assert report.counts["gpt/missing_rationale"] == 1
    assert [e.answer for e in train] == ["sunlight", "whale", "heat", "honey"]
    assert [e.id for e in test] == ["mydata-test-0", "mydata-test-1"]
