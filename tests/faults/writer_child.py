"""Child process for the write-safety test: writes with the project's own
writers in a loop until it is killed, acknowledging each finished write.

    python -m tests.faults.writer_child DIR

Each round r: one metrics.jsonl record (MetricWriter), summary.json replaced
(write_json_atomic), predictions_test.jsonl replaced (evaluation.predictions.write_predictions)
and a batch of rationale-store records appended (append_records). After each
write it prints "<kind> <r>" and flushes, so the parent knows what finished.
The payloads are large so that a random SIGKILL mostly lands inside a write.
A restarted child continues from the round after the last complete one.
"""

from __future__ import annotations

import sys
from pathlib import Path

PREDICTION_ROWS = 4000
STORE_BATCH = 400
PAD = "x" * 300


def prediction_rows(round_: int) -> list[dict]:
    return [{"id": f"q{i}", "round": round_, "prediction": PAD, "correct": i % 2 == 0}
            for i in range(PREDICTION_ROWS)]


def store_batch(round_: int) -> list[dict]:
    return [{"id": f"r{round_}-{i}", "rationale": PAD, "teacher_answer": None}
            for i in range(STORE_BATCH)]


def main(directory: Path) -> None:
    from tinyllm_jax.atomic import write_json_atomic
    from tinyllm_jax.data.store import append_records, read_store
    from tinyllm_jax.evaluation.predictions import write_predictions
    from tinyllm_jax.metrics import MetricWriter, read_jsonl

    directory.mkdir(parents=True, exist_ok=True)
    writer = MetricWriter(directory, enabled=True)
    store = directory / "store" / "synthetic" / "teacher" / "train.jsonl"
    # Resume as a restarted teacher run does: skip the ids already stored.
    ids = read_store(store).ids() if store.exists() else set()
    start = 0
    while {r["id"] for r in store_batch(start)} <= ids:
        start += 1
    if writer.path.exists():
        read_jsonl(writer.path)  # the next run must be able to read what is there
    for round_ in range(start, 10**6):
        writer.write(round_, {"loss": float(round_)})
        print(f"metrics {round_}", flush=True)
        write_json_atomic(directory / "summary.json", {"round": round_, "pad": PAD * 3000})
        print(f"summary {round_}", flush=True)
        write_predictions(directory / "predictions_test.jsonl", prediction_rows(round_))
        print(f"predictions {round_}", flush=True)
        append_records(store, [r for r in store_batch(round_) if r["id"] not in ids])
        print(f"store {round_}", flush=True)

if __name__ == "__main__":
    main(Path(sys.argv[1]))
