"""Run an experiment grid, one training run per (config, arg), skipping
finished runs, so an interrupted grid resumes where it stopped.

    python -m experiments.run_grid --grid=synthetic_methods --out=runs/experiments
    python -m experiments.run_grid --grid=real --out=runs/experiments \\
        --override=--config.data.data_dir=../shared/data/tinyllm

On a 2-core machine two workers pinned to one core each finish a grid ~20%
sooner than one worker using both cores (small matmuls scale poorly):

    taskset -c 0 python -m experiments.run_grid --grid=synthetic_methods --shard=0/2 &
    taskset -c 1 python -m experiments.run_grid --grid=synthetic_methods --shard=1/2 &

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


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise SystemExit(f"--shard must look like I/N (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise SystemExit(f"--shard {text}: need 0 <= I < N")
    return index, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments"))
    ap.add_argument("--override", action="append", default=[],
                    help="extra flag for every run, e.g. --config.train.steps=100")
    ap.add_argument("--only", default="", help="run names containing this text")
    ap.add_argument("--shard", default="0/1",
                    help="I/N: run every N-th run starting at I, so N pinned workers "
                         "(taskset -c I) share a grid")
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args()
    index, count = _parse_shard(args.shard)
    runs = [r for r in GRIDS[args.grid]() if args.only in r[0]][index::count]
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
