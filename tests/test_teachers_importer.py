"""Importing the published TinyLLM rationales into the rationale store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm_jax.data.tinyllm import read_split
from tinyllm_jax.teachers.importer import import_split, main

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "tinyllm"
pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not SHARED_DATA.is_dir(),
                       reason=f"{SHARED_DATA} is absent (given to developers and CI only)"),
]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_obqa_two_teachers_and_piqa_one(tmp_path, capsys):
    assert main(["--root", str(SHARED_DATA), "--datasets", "obqa,piqa", "--out", str(tmp_path),
                 "--splits", "train"]) == 0
    for teacher in ("flan", "llama"):
        rows = lines(tmp_path / "obqa" / teacher / "train.jsonl")
        assert len(rows) == 4957 and len({r["id"] for r in rows}) == 4957
    assert sorted(p.name for p in (tmp_path / "piqa").iterdir()) == ["flan"]
    assert len(lines(tmp_path / "piqa" / "flan" / "train.jsonl")) == 16113
    assert "piqa/llama/train: no rationales in the source; no file" in capsys.readouterr().out


def test_store_reads_back_exactly_as_the_published_files(tmp_path):
    results = import_split(SHARED_DATA, "obqa", "valid", tmp_path)
    assert [(r.teacher, r.status, r.rows) for r in results] == [
        ("flan", "written", 500), ("llama", "written", 500)
    ]
    raw, _ = read_split(SHARED_DATA, "obqa", "valid", ("flan", "llama"))
    stored, report = read_split(SHARED_DATA, "obqa", "valid", ("flan", "llama"), store_dir=tmp_path)
    assert [e.id for e in raw] == [e.id for e in stored]
    for a, b in zip(raw, stored):
        assert a.rationales == b.rationales and a.teacher_answers == b.teacher_answers
    assert report.counts["llama/empty_rationale"] == 12  # published empties stay counted
    row = lines(tmp_path / "obqa" / "flan" / "valid.jsonl")[0]
    assert row["model"] == "google/flan-t5-xl" and row["generation"]["source"] == "tinyllm-published"


def test_existing_files_are_kept_unless_overwrite(tmp_path):
    first = import_split(SHARED_DATA, "pubmedqa", "valid", tmp_path)
    path = first[0].path
    path.write_text('{"id": "edited", "rationale": null}\n')
    again = import_split(SHARED_DATA, "pubmedqa", "valid", tmp_path)
    assert {r.status for r in again} == {"exists"}
    assert path.read_text().startswith('{"id": "edited"')
    import_split(SHARED_DATA, "pubmedqa", "valid", tmp_path, overwrite=True)
    assert len(lines(path)) == 100
    assert not list(path.parent.glob(".*importing"))


def test_bad_input_exits_with_a_message(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tinyllm_jax.teachers.importer", "--root", str(SHARED_DATA),
         "--datasets", "nosuch", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "no dataset directory 'nosuch'" in done.stderr and "Traceback" not in done.stderr
