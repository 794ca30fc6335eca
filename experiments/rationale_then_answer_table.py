"""The rationale-then-answer vs multi-task table of docs/results.md, from the
finished runs of `--grid=synthetic_rationale_then_answer`.

    python -m experiments.rationale_then_answer_table --runs=runs/experiments

Each run's summary.json holds its test metrics and step count; run.json (from
run_grid) its wall-clock time. Rows: mean ± sample std (ddof=1) over seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.grids import RTA_RUNS, SEEDS

_LABELS = {"multitask": "multi-task (answer + 2 rationale tasks)",
           "rta": "rationale-then-answer"}


def _cell(values: list[float], scale: float = 100.0) -> str:
    v = np.asarray(values, np.float64) * scale
    if len(v) == 0:
        return "n/a"
    if len(v) == 1:
        return f"{v[0]:.1f}"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


def table(runs: Path) -> str:
    lines = ["| student | budget | steps | seeds | exact match (%) | choice ranking (%) | "
             "no separator (%) | chance (%) | wall s/run |", "|" + "---|" * 9]
    for mode, tag, _ in RTA_RUNS:
        found = []
        for s in SEEDS:
            d = runs / f"synthetic-{mode}-{tag}-s{s}"
            if (d / "summary.json").exists() and (d / "run.json").exists():
                found.append((json.loads((d / "summary.json").read_text()),
                              json.loads((d / "run.json").read_text())))
        if not found:
            continue
        steps = sorted({int(sm["step"]) for sm, _ in found})
        sep = [sm["test_no_separator_fraction"] for sm, _ in found
               if "test_no_separator_fraction" in sm]
        lines.append(
            f"| {_LABELS[mode]} | {tag} | {'/'.join(map(str, steps))} | {len(found)} | "
            f"{_cell([sm['test_accuracy'] for sm, _ in found])} | "
            f"{_cell([sm['test_accuracy_ranked'] for sm, _ in found])} | "
            f"{_cell(sep) if sep else '-'} | {100 * found[0][0]['test_chance']:.1f} | "
            f"{np.mean([r['wall_s'] for _, r in found]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/experiments"))
    print(table(ap.parse_args().runs))


if __name__ == "__main__":
    main()
