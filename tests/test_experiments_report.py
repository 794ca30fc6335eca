"""experiments/report.py on fake run directories with known numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import report

REPO = Path(__file__).resolve().parents[1]
PNGS = ("synthetic_methods.png", "synthetic_efficiency.png", "synthetic_alpha.png",
        "synthetic_learning_curves.png", "real_methods.png")


def _run(root: Path, name: str, exact: float, ranked: float, *, wall: float = 100.0,
         chance: float = 0.25, curve: list[tuple[int, float, float]] = (),
         steps: int = 300) -> None:
    d = root / name
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"name": name, "config": "c.py", "arg": "",
                                            "overrides": [], "command": "x", "wall_s": wall}))
    (d / "summary.json").write_text(json.dumps({
        "test_accuracy": exact, "test_accuracy_normalized": exact,
        "test_accuracy_ranked": ranked, "test_chance": chance, "test_examples": 500.0,
        "train_s": wall - 5, "dataset": name.split("-")[0], "teachers": [], "step": steps,
        "best_step": 300}))
    lines = [{"kind": "train", "step": 10, "loss": 3.0, "loss/answer": 3.0}]
    for step, acc, acc_ranked in curve:
        lines.append({"kind": "eval/valid", "step": step, "accuracy": acc,
                      "accuracy_normalized": acc, "accuracy_ranked": acc_ranked,
                      "chance": chance, "examples": 200.0})
    # Test-split evals must not leak into the validation learning curve.
    lines.append({"kind": "eval/test", "step": 300, "accuracy": 0.99, "accuracy_ranked": 0.99})
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    # synthetic methods: answer 3 seeds, both 2 seeds, verbal 1 seed; algebra and
    # both_filtered are missing (a partial grid).
    for seed, (e, r, w) in enumerate([(0.50, 0.70, 100), (0.60, 0.80, 200), (0.70, 0.90, 300)]):
        _run(root, f"synthetic-answer-s{seed}", e, r, wall=w,
             curve=[(100, 0.1 + 0.1 * seed, 0.3), (200, 0.4, 0.5 + 0.1 * seed)])
    _run(root, "synthetic-both-s0", 0.60, 0.70, wall=50, curve=[(100, 0.2, 0.4)])
    _run(root, "synthetic-both-s1", 0.80, 0.90, wall=70, curve=[(100, 0.4, 0.6)])
    _run(root, "synthetic-verbal-s0", 0.55, 0.65)
    _run(root, "synthetic-answer-steps315-s0", 0.65, 0.75, steps=315)
    # data efficiency: answer at 25%, both at 12.5% only.
    _run(root, "synthetic-answer-f0.25-s0", 0.30, 0.40)
    _run(root, "synthetic-answer-f0.25-s1", 0.40, 0.60)
    _run(root, "synthetic-both-f0.125-s0", 0.20, 0.45)
    # alpha sweep: 0.1 and 2.0 (1.0 is synthetic-both).
    _run(root, "synthetic-both-a0.1-s0", 0.40, 0.50)
    _run(root, "synthetic-both-a2.0-s0", 0.45, 0.55)
    _run(root, "synthetic-both-a2.0-s1", 0.55, 0.65)
    # real datasets
    _run(root, "obqa-answer-s0", 0.30, 0.40, chance=0.25)
    _run(root, "obqa-answer-s1", 0.34, 0.44, chance=0.25)
    _run(root, "obqa-flan-s0", 0.32, 0.42, chance=0.25)
    _run(root, "arc-both-s0", 0.28, 0.38, chance=0.25)
    _run(root, "piqa-flan-s0", 0.51, 0.55, chance=0.5)
    # A run dir without run.json is unfinished and must be ignored.
    d = root / "synthetic-answer-s9"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"test_accuracy": 0.0, "test_chance": 0.25}))
    # Not part of any grid: listed under "Other runs".
    _run(root, "probe-s0", 0.11, 0.22)
    return root


def _section(md: str, title: str) -> list[list[str]]:
    """Data rows (cells) of the first table under heading `## title`."""
    lines = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")]
            for ln in lines if ln.startswith("|")]
    return rows[2:]  # header and rule


def test_report_tables_numbers(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report.main([f"--runs={runs}", f"--out={out}"])
    md = (out / "tables.md").read_text()

    assert _section(md, "Synthetic: methods") == [
        ["answer", "300", "3", "60.0 ± 10.0", "80.0 ± 10.0", "25.0", "200"],
        ["verbal", "300", "1", "55.0 ± n/a", "65.0 ± n/a", "25.0", "100"],
        ["both", "300", "2", "70.0 ± 14.1", "80.0 ± 14.1", "25.0", "60"],
        ["answer-steps315", "315", "1", "65.0 ± n/a", "75.0 ± n/a", "25.0", "100"],
    ]
    assert _section(md, "Synthetic: data efficiency") == [
        ["12.5%", "—", "—", "—", "1", "20.0 ± n/a", "45.0 ± n/a"],
        ["25%", "2", "35.0 ± 7.1", "50.0 ± 14.1", "—", "—", "—"],
        ["100%", "3", "60.0 ± 10.0", "80.0 ± 10.0", "2", "70.0 ± 14.1", "80.0 ± 14.1"],
    ]
    assert _section(md, "Synthetic: alpha sweep (method both)") == [
        ["0.1", "1", "40.0 ± n/a", "50.0 ± n/a", "25.0", "100"],
        ["1", "2", "70.0 ± 14.1", "80.0 ± 14.1", "25.0", "60"],
        ["2", "2", "50.0 ± 7.1", "60.0 ± 7.1", "25.0", "100"],
    ]
    assert _section(md, "Real datasets") == [
        ["obqa", "answer", "2", "32.0 ± 2.8", "42.0 ± 2.8", "25.0", "100", "41.6"],
        ["obqa", "flan", "1", "32.0 ± n/a", "42.0 ± n/a", "25.0", "100", ""],
        ["arc", "both", "1", "28.0 ± n/a", "38.0 ± n/a", "25.0", "100", "31.9"],
        ["piqa", "flan", "1", "51.0 ± n/a", "55.0 ± n/a", "50.0", "100", ""],
    ]
    assert _section(md, "Other runs") == [
        ["probe", "1", "11.0 ± n/a", "22.0 ± n/a", "25.0", "100"]]
    for png in PNGS:
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000, png


def test_report_results_json(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    returned = report.report(runs, out)
    res = json.loads((out / "results.json").read_text())
    assert res == returned

    answer = res["synthetic_methods"]["answer"]
    assert answer["n"] == 3 and answer["seeds"] == [0, 1, 2]
    assert answer["exact"] == {"n": 3, "mean": pytest.approx(60.0), "std": pytest.approx(10.0)}
    assert answer["ranked"]["mean"] == pytest.approx(80.0)
    assert answer["wall_s"] == pytest.approx(200.0) and answer["chance"] == pytest.approx(25.0)
    assert list(res["synthetic_methods"]) == ["answer", "verbal", "both", "answer-steps315"]
    assert res["synthetic_methods"]["verbal"]["exact"] == {"n": 1, "mean": pytest.approx(55.0),
                                                           "std": None}
    assert res["synthetic_methods"]["both"]["exact"]["std"] == pytest.approx(200 ** 0.5)

    assert list(res["synthetic_efficiency"]["answer"]) == ["0.25", "1.0"]
    assert list(res["synthetic_efficiency"]["both"]) == ["0.125", "1.0"]
    assert res["synthetic_efficiency"]["answer"]["0.25"]["exact"]["mean"] == pytest.approx(35.0)
    assert list(res["synthetic_alpha"]) == ["0.1", "1.0", "2.0"]
    assert res["synthetic_alpha"]["2.0"]["ranked"]["mean"] == pytest.approx(60.0)

    assert list(res["real"]) == ["obqa", "arc", "piqa"]
    assert res["real"]["obqa"]["answer"]["paper_80m"] == 41.6
    assert res["real"]["obqa"]["flan"]["paper_80m"] is None
    assert res["real"]["arc"]["both"]["paper_80m"] == 31.9
    assert res["real"]["obqa"]["answer"]["exact"]["std"] == pytest.approx(800 ** 0.5 / 10)

    curves = res["synthetic_learning_curves"]
    assert set(curves) == {"answer", "both"}  # verbal has no eval/valid lines
    assert curves["answer"]["step"] == [100, 200]
    assert curves["answer"]["exact"] == pytest.approx([20.0, 40.0])
    assert curves["answer"]["ranked"] == pytest.approx([30.0, 60.0])
    assert curves["both"] == {"step": [100], "exact": pytest.approx([30.0]),
                              "ranked": pytest.approx([50.0])}
    assert res["other"] == ["probe"]


def test_report_partial_grid_real_only(tmp_path: Path) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    runs.mkdir()
    _run(runs, "riddle-both-s0", 0.30, 0.40, chance=0.2)
    res = report.report(runs, out)
    md = (out / "tables.md").read_text()
    assert "## Synthetic" not in md
    assert _section(md, "Real datasets") == [
        ["riddle", "both", "1", "30.0 ± n/a", "40.0 ± n/a", "20.0", "100", "49.2"]]
    assert res["synthetic_methods"] == {} and res["synthetic_efficiency"] == {}
    assert sorted(p.name for p in out.glob("*.png")) == ["real_methods.png"]


def test_report_partial_grid_no_metrics_no_ranked(tmp_path: Path) -> None:
    runs, out = tmp_path / "runs", tmp_path / "out"
    runs.mkdir()
    _run(runs, "synthetic-both-a0.5-s0", 0.50, 0.60)
    # An older summary without ranked accuracy and a run without metrics.jsonl.
    _run(runs, "synthetic-algebra-s0", 0.40, 0.50)
    summary = runs / "synthetic-algebra-s0" / "summary.json"
    s = json.loads(summary.read_text())
    del s["test_accuracy_ranked"]
    summary.write_text(json.dumps(s))
    (runs / "synthetic-algebra-s0" / "metrics.jsonl").unlink()
    res = report.report(runs, out)
    md = (out / "tables.md").read_text()
    assert _section(md, "Synthetic: methods") == [
        ["algebra", "300", "1", "40.0 ± n/a", "—", "25.0", "100"]]
    # Without synthetic-both there is no alpha 1.0 point.
    assert list(res["synthetic_alpha"]) == ["0.5"]
    assert res["synthetic_learning_curves"] == {}
    assert sorted(p.name for p in out.glob("*.png")) == ["synthetic_alpha.png",
                                                         "synthetic_methods.png"]


def test_report_cli_and_empty_dir(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "experiments.report", f"--runs={runs}",
                        f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "| answer | 300 | 3 | 60.0 ± 10.0 | 80.0 ± 10.0 | 25.0 | 200 |" in r.stdout
    assert (out / "tables.md").exists() and (out / "results.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no finished runs"):
        report.report(empty, tmp_path / "out2")


def test_archive_copies_records_of_completed_runs_only(tmp_path: Path) -> None:
    from experiments import archive

    runs = tmp_path / "runs"
    runs.mkdir()
    _run(runs, "synthetic-both-s0", 0.6, 0.7)
    _run(runs, "synthetic-both-s1", 0.8, 0.9)
    _run(runs, "synthetic-answer-s0", 0.5, 0.6)
    for name, status in (("synthetic-both-s0", "completed"), ("synthetic-both-s1", "preempted"),
                         ("synthetic-answer-s0", "completed")):
        s = json.loads((runs / name / "summary.json").read_text())
        s.update(status=status, workdir=str((runs / name).resolve()))
        (runs / name / "summary.json").write_text(json.dumps(s))
    (runs / "synthetic-answer-s0" / "checkpoints").mkdir()
    (runs / "synthetic-verbal-s0").mkdir()  # still running: no run.json
    (runs / "synthetic-verbal-s0" / "summary.json").write_text("{}")

    to = tmp_path / "records"
    assert archive.archive(runs, to) == ["synthetic-answer-s0", "synthetic-both-s0"]
    assert sorted(p.name for p in (to / "synthetic-answer-s0").iterdir()) == [
        "metrics.jsonl", "run.json", "summary.json"]
    summary = json.loads((to / "synthetic-both-s0" / "summary.json").read_text())
    assert summary["workdir"] == str(runs / "synthetic-both-s0")
    # The report reads the archive exactly as it reads the run directories.
    groups = report.load_runs(to)
    assert report.collect(groups)["synthetic_methods"]["both"]["exact"].mean == pytest.approx(
        60.0)
    (runs / "synthetic-both-s0" / "run.json").write_text("{not json")
    with pytest.raises(SystemExit, match="synthetic-both-s0: unreadable run record"):
        archive.archive(runs, to)


def test_fill_doc_rewrites_only_the_tables_block(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nintro\n\n<!-- tables:begin -->\nold\n<!-- tables:end -->\n\nend\n")
    report.fill_doc(doc, "# Experiment results\n\nnote\n\n## Synthetic: methods\n\n| a |\n")
    assert doc.read_text() == (
        "# Results\n\nintro\n\n<!-- tables:begin -->\nnote\n\n### Synthetic: methods\n\n| a |\n"
        "<!-- tables:end -->\n\nend\n")
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="needs one"):
        report.fill_doc(doc, "x")
    assert doc.read_text() == "no markers\n"
