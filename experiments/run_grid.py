"""Run an experiment grid, one training run per (config, arg), skipping
finished runs, so an interrupted grid resumes where it stopped.

    python -m experiments.run_grid --grid=synthetic_methods --out=runs/experiments
    python -m experiments.run_grid --grid=real --out=runs/experiments \\
        --override=--config.data.data_dir=../shared/data/tinyllm

Each run's workdir is <out>/<name>; `run.json` there records the exact
command and its wall-clock time, which experiments/report.py tabulates.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from experiments.grids import GRIDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments"))
    ap.add_argument("--override", action="append", default=[],
                    help="extra flag for every run, e.g. --config.train.steps=100")
    ap.add_argument("--only", default="", help="run names containing this text")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args()
    runs = [r for r in GRIDS[args.grid]() if args.only in r[0]]
    for i, (name, config, arg) in enumerate(runs, 1):
        workdir = args.out / name
        cmd = [sys.executable, "-m", "tinyllm_jax.main", f"--config={config}:{arg}",
               f"--workdir={workdir}", *args.override]
        if args.dry_run:
            print(" ".join(cmd))
            continue
        if (workdir / "run.json").exists():
            print(f"[{i}/{len(runs)}] {name}: done, skipped", flush=True)
            continue
        print(f"[{i}/{len(runs)}] {name}: {' '.join(cmd[2:])}", flush=True)
        t0 = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{name} failed with exit code {result.returncode}")
        record = {"name": name, "config": config, "arg": arg, "overrides": args.override,
                  "command": " ".join(cmd[2:]), "wall_s": time.perf_counter() - t0}
        (workdir / "run.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
