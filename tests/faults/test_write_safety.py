"""Write-side safety: metrics log, summary, predictions and the rationale
store survive a SIGKILL at any moment, lose nothing that was acknowledged,
and stay readable by the next run."""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from tests.faults import harness, writer_child
from tinyllm_jax.data.store import append_records, read_store
from tinyllm_jax.metrics import append_jsonl, read_jsonl

KILLS = 4


def _kill_child(directory: Path, rng: random.Random) -> dict[str, int]:
    """Run the writer child for a random time once it is writing, SIGKILL it;
    the last finished round per kind (-1: none)."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.faults.writer_child", str(directory)],
                            cwd=harness.REPO, env=harness.subprocess_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # blocks until the imports are done and a write finished
    assert first, proc.stderr.read() if proc.stderr else ""
    time.sleep(rng.uniform(0.05, 1.5))
    proc.kill()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -9, err[-2000:]
    acked: dict[str, int] = collections.defaultdict(lambda: -1)
    for line in [first, *out.splitlines()]:
        if line.strip():
            kind, round_ = line.split()
            acked[kind] = max(acked[kind], int(round_))
    return acked


def test_sigkill_mid_write_leaves_readable_files_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    rng = random.Random(8)
    directory = tmp_path / "out"
    done: dict[str, int] = collections.defaultdict(lambda: -1)
    store = directory / "store" / "synthetic" / "teacher" / "train.jsonl"
    for _ in range(KILLS):
        acked = _kill_child(directory, rng)
        for kind, round_ in acked.items():
            done[kind] = max(done[kind], round_)

        steps = {int(r["step"]) for r in read_jsonl(directory / "metrics.jsonl")}
        assert set(range(done["metrics"] + 1)) <= steps

        summary = json.loads((directory / "summary.json").read_text())
        assert summary["round"] >= done["summary"]  # one whole version, never a torn one

        rows = [json.loads(x) for x in
                (directory / "predictions_test.jsonl").read_text().splitlines()]
        assert len(rows) == writer_child.PREDICTION_ROWS
        assert len({r["round"] for r in rows}) == 1 and rows[0]["round"] >= done["predictions"]

        parsed = read_store(store)  # a torn last line is reported, not fatal
        ids = [r.id for r in parsed.records]
        assert len(ids) == len(set(ids)), "a resumed writer duplicated records"
        for round_ in range(done["store"] + 1):
            assert {r["id"] for r in writer_child.store_batch(round_)} <= set(ids)
    # Whatever the last kill left, the next append repairs and continues.
    append_records(store, [{"id": "after", "rationale": "r", "teacher_answer": None}])
    final = read_store(store)
    assert final.partial_tail is None and "after" in final.ids()


def test_metrics_append_after_a_torn_last_line_stays_readable(tmp_path: Path) -> None:
    """A torn last line is what a full disk (short write) or a power cut leaves;
    the next run appends to the same log."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "train", "st')
    append_jsonl(path, {"kind": "train", "step": 2})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
