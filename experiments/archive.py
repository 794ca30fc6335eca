"""Copy the small records of finished grid runs into the repository.

    python -m experiments.archive --runs=runs/experiments --to=experiments/records

Run directories hold checkpoints (tens of MB each) and stay out of git; the
records kept here (run.json, summary.json, metrics.jsonl) are all
experiments/report.py reads, so docs/results.md regenerates from committed
files:

    python -m experiments.report --runs=experiments/records --out=docs/results

A run counts as finished when run_grid wrote its run.json (after the run
exited) and the run wrote summary.json with status "completed". Absolute
paths of the runs directory are written as given on the command line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

RECORD_FILES = ("run.json", "summary.json", "metrics.jsonl")


def _relative(text: str, root: Path) -> str:
    return text.replace(str(root.resolve()), str(root))


def archive(runs: Path, to: Path) -> list[str]:
    """Copy each finished run's records from `runs/<name>/` to `to/<name>/`; returns names."""
    copied = []
    for run_json in sorted(runs.glob("*/run.json")):
        src = run_json.parent
        summary_path = src / "summary.json"
        if not summary_path.exists():
            continue
        try:
            summary = json.loads(summary_path.read_text())
            json.loads(run_json.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"{src}: unreadable run record ({e}); rerun or remove it") from None
        if summary.get("status") != "completed":
            continue
        dst = to / src.name
        dst.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (src / name).exists():
                text = (src / name).read_text()
                if name.endswith(".json"):
                    text = _relative(text, runs)
                tmp = dst / (name + ".tmp")
                tmp.write_text(text)
                tmp.replace(dst / name)
        copied.append(src.name)
    return copied


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/experiments"))
    ap.add_argument("--to", type=Path, default=Path("experiments/records"))
    args = ap.parse_args(argv)
    if not args.runs.is_dir():
        raise SystemExit(f"--runs {args.runs} is not a directory")
    names = archive(args.runs, args.to)
    print(f"archived {len(names)} finished runs from {args.runs} into {args.to}")


if __name__ == "__main__":
    main()
