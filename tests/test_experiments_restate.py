"""experiments/restate_metric.py and how report.py shows restated records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments import report, restate_metric

REPO = Path(__file__).resolve().parents[1]


def _record(root: Path, name: str, exact: float, valid_exact: float) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({
        "name": name, "config": "configs/experiments/synthetic.py", "arg": "method=both,seed=0",
        "overrides": [], "command": "x", "wall_s": 10.0}))
    (d / "summary.json").write_text(json.dumps({
        "dataset": name.split("-")[0], "test_accuracy": exact, "test_accuracy_ranked": 0.5,
        "test_chance": 0.25, "status": "completed", "step": 10}))
    (d / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "step": 5, "loss": 1.0}) + "\n"
        + json.dumps({"kind": "eval/valid", "step": 10, "accuracy": valid_exact}) + "\n")
    return d


def test_a_split_whose_golds_all_survive_keeps_its_figures(tmp_path):
    d = _record(tmp_path, "synthetic-both-s0", 0.4, 0.3)
    restate_metric.main(["--records", str(tmp_path)])
    s = json.loads((d / "summary.json").read_text())
    assert s["test_accuracy"] == s["test_accuracy_strict"] == 0.4
    assert s["metric_restated"]["test_golds_changed_by_round_trip"] == 0
    assert s["metric_restated"]["test_examples"] == 500
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert rows[0] == {"kind": "train", "step": 5, "loss": 1.0}
    assert rows[1]["accuracy"] == rows[1]["accuracy_strict"] == 0.3
    before = (d / "summary.json").read_text()
    restate_metric.main(["--records", str(tmp_path)])  # a second run leaves it alone
    assert (d / "summary.json").read_text() == before


def test_changed_golds_turn_the_figure_into_bounds():
    values = {"test_accuracy": 0.02}
    assert restate_metric.restate(values, "test_", 15, 1165)
    assert values["test_accuracy"] is None and values["test_accuracy_strict"] == 0.02
    lo, hi = values["test_accuracy_bounds"]
    assert lo == pytest.approx(0.02 - 15 / 1165) and hi == pytest.approx(0.02 + 15 / 1165)
    assert not restate_metric.restate(values, "test_", 15, 1165)
    zero = {"test_accuracy": 0.0}
    restate_metric.restate(zero, "test_", 79, 919)
    assert zero["test_accuracy_bounds"] == [0.0, pytest.approx(79 / 919)]


def test_the_report_shows_bounds_and_says_what_changed(tmp_path):
    for seed in (0, 1):
        d = tmp_path / f"piqa-answer-s{seed}"
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"name": d.name, "wall_s": 1.0}))
        (d / "summary.json").write_text(json.dumps({
            "dataset": "piqa", "test_accuracy": None, "test_accuracy_strict": 0.0,
            "test_accuracy_bounds": [0.0, 0.08 + 0.01 * seed], "test_accuracy_ranked": 0.5,
            "test_chance": 0.5, "step": 3,
            "metric_restated": {"test_golds_changed_by_round_trip": 79, "test_examples": 919}}))
    d = tmp_path / "obqa-answer-s0"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"name": d.name, "wall_s": 1.0}))
    (d / "summary.json").write_text(json.dumps({
        "dataset": "obqa", "test_accuracy": 0.1, "test_accuracy_strict": 0.1,
        "test_accuracy_ranked": 0.2, "test_chance": 0.25, "step": 3,
        "metric_restated": {"test_golds_changed_by_round_trip": 0, "test_examples": 500}}))
    groups = report.load_runs(tmp_path)
    md = report.tables_markdown(report.collect(groups), groups)
    assert "| piqa | answer | 2 | 0.0 to 8.5 (bounds) |" in md
    assert "| obqa | answer | 1 | 10.0 ± n/a |" in md
    assert "Every test gold of obqa survives the round trip" in md
    assert "(piqa 79/919)" in md


def test_the_committed_records_are_restated():
    """Every committed record states which metric its figures are."""
    records = sorted((REPO / "experiments" / "records").glob("*/summary.json"))
    assert records
    for path in records:
        s = json.loads(path.read_text())
        assert "metric_restated" in s or "test_accuracy_strict" in s, path


def test_an_already_restated_record_is_left_alone(tmp_path):
    src = REPO / "experiments" / "records" / "synthetic-answer-s0"
    dst = tmp_path / "synthetic-answer-s0"
    shutil.copytree(src, dst)
    s = json.loads((dst / "summary.json").read_text())
    assert restate_metric.restate_record(dst, {"valid": (0, 200), "test": (0, 500)}) is False
    assert json.loads((dst / "summary.json").read_text()) == s
