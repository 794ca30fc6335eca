"""Tables and plots for docs/results.md from finished run directories.

    python -m experiments.report --runs=runs/experiments --out=docs/results

Groups runs by name without the seed suffix and reports test accuracy mean ±
std over seeds (exact match, choice ranking) and wall-clock per run, one
section per grid of experiments/grids.py. Writes into --out:

    tables.md                      markdown tables, one section per grid
    results.json                   the same numbers, machine-readable
    synthetic_methods.png          accuracy by method
    synthetic_efficiency.png       accuracy vs training fraction, answer vs both
    synthetic_alpha.png            accuracy vs rationale-loss weight alpha
    synthetic_learning_curves.png  validation accuracy vs step, per method
    real_methods.png               accuracy by method, per real dataset

A grid that is only partly run reports what exists: missing rows are left out
and a plot without data is not drawn. `--doc docs/results.md` also rewrites the
part of that page between the `<!-- tables:begin -->` and `<!-- tables:end -->`
lines with the tables, so the page's tables always come from this script.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.grids import (
    DATASETS,
    EFFICIENCY_METHODS,
    EQUAL_COMPUTE_STEPS,
    REAL_METHODS,
    SYNTHETIC_METHODS,
)

_SEED = re.compile(r"-s(\d+)$")

# Group names (run names less "-s<seed>") of each grid in experiments/grids.py. The
# 100% fraction and alpha 1.0 points are the plain synthetic-<method> runs, so those
# two patterns only match the off-default points.
# The equal-compute control of the methods grid: answer-only for as many steps as (iv).
CONTROL = f"answer-steps{EQUAL_COMPUTE_STEPS}"
_METHOD = re.compile(rf"^synthetic-({'|'.join((*SYNTHETIC_METHODS, CONTROL))})$")
_FRACTION = re.compile(rf"^synthetic-({'|'.join(EFFICIENCY_METHODS)})-f(\d*\.?\d+)$")
_ALPHA = re.compile(r"^synthetic-both-a(\d*\.?\d+)$")
_REAL = re.compile(rf"^({'|'.join(DATASETS)})-({'|'.join(REAL_METHODS)})$")

# Published test accuracy (%) of the paper's 80M (FLAN-T5-small) students, the size
# closest to our from-scratch students. Source: TinyLLM paper (arXiv
# 2402.04616), Table as quoted in the dataset README (../shared/README.md). That
# table has two rows per size: "full fine-tuning" (labels only, our "answer") and
# "TinyLLM" (FLAN-T5 + LLaMA-2 teachers, our "both"); it quotes no single-teacher
# number, so flan and llama stay blank.
PAPER_80M: dict[tuple[str, str], float] = {
    ("obqa", "answer"): 41.6, ("arc", "answer"): 27.5, ("piqa", "answer"): 42.3,
    ("riddle", "answer"): 42.8, ("pubmedqa", "answer"): 56.3,
    ("obqa", "both"): 47.6, ("arc", "both"): 31.9, ("piqa", "both"): 52.8,
    ("riddle", "both"): 49.2, ("pubmedqa", "both"): 62.0,
}

_METRICS = {"exact": "test_accuracy", "ranked": "test_accuracy_ranked"}
_LABELS = {"exact": "exact match", "ranked": "choice ranking"}


def load_runs(root: Path) -> dict[str, list[dict]]:
    """Finished runs under `root` (a dir with run.json and summary.json), grouped by
    name without the seed suffix."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for run in sorted(root.glob("*/run.json")):
        summary_path = run.parent / "summary.json"
        # run_grid writes run.json only after the run exits; summary.json alone may be
        # a run still in progress or one that crashed.
        if not summary_path.exists():
            continue
        record = json.loads(run.read_text())
        record["summary"] = json.loads(summary_path.read_text())
        record["dir"] = run.parent
        groups[_SEED.sub("", record["name"])].append(record)
    return groups


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof=1) of one metric over seeds, in percent."""

    n: int
    mean: float | None
    # None, not 0, with a single seed: the spread is unknown, not zero.
    std: float | None

    def __str__(self) -> str:
        if self.mean is None:
            return "—"
        std = "n/a" if self.std is None else f"{self.std:.1f}"
        return f"{self.mean:.1f} ± {std}"


def stat(values: Iterable[float | None]) -> Stat:
    """Stat of the finite values; missing ones (older summaries lack ranked accuracy)
    are dropped rather than turning the whole mean into NaN."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if v.size == 0:
        return Stat(0, None, None)
    return Stat(int(v.size), float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else None)


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def summarize(runs: Sequence[dict]) -> dict[str, Any]:
    """The numbers one table row shows, for the runs (seeds) of one group."""
    s = [r["summary"] for r in runs]
    chance = [x["test_chance"] for x in s if "test_chance" in x]
    wall = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
    return {
        "n": len(runs),
        "seeds": sorted(int(m.group(1)) for r in runs if (m := _SEED.search(r["name"]))),
        **{k: stat(_percent(x.get(key)) for x in s) for k, key in _METRICS.items()},
        "exact_bounds": _bounds(s),
        "chance": 100 * float(np.mean(chance)) if chance else None,
        "wall_s": float(np.mean(wall)) if wall else None,
        "steps": float(np.mean([x["step"] for x in s])) if all("step" in x for x in s) else None,
    }


def _bounds(summaries: Sequence[dict]) -> list[float] | None:
    """Mean [lo, hi] (%) of exact match where records restated by
    experiments/restate_metric.py could only bound it (no test_accuracy)."""
    if not any(x.get("test_accuracy") is None and "test_accuracy_bounds" in x
               for x in summaries):
        return None
    pairs = [x["test_accuracy_bounds"] if x.get("test_accuracy") is None
             else [x["test_accuracy"]] * 2 for x in summaries
             if x.get("test_accuracy") is not None or "test_accuracy_bounds" in x]
    return [100 * float(np.mean([p[0] for p in pairs])), 100 * float(np.mean([p[1] for p in pairs]))]


def _exact_cell(row: dict[str, Any]) -> str:
    bounds = row.get("exact_bounds")
    if bounds is None:
        return str(row["exact"])
    return f"{bounds[0]:.1f} to {bounds[1]:.1f} (bounds)"


def _cells(row: dict[str, Any]) -> str:
    """The seeds / accuracies / chance / wall-clock cells every table row shares."""
    return (f"| {row['n']} | {_exact_cell(row)} | {row['ranked']} "
            f"| {_num(row['chance'], '.1f')} | {_num(row['wall_s'], '.0f')} |")


def table(groups: dict[str, list[dict]]) -> str:
    """One row per group, every group: the catch-all table."""
    lines = ["| run | seeds | test exact match (%) | test choice ranking (%) | chance (%) | wall s/run |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {name} " + _cells(summarize(runs)) for name, runs in sorted(groups.items())]
    return "\n".join(lines)


def _num(value: float | None, spec: str, blank: str = "—") -> str:
    return blank if value is None else format(value, spec)


def collect(groups: dict[str, list[dict]]) -> dict[str, Any]:
    """Summaries of each grid, keyed as results.json stores them; a grid or row with
    no finished run is absent."""
    methods = {m: summarize(groups[f"synthetic-{m}"])
               for m in (*SYNTHETIC_METHODS, CONTROL) if f"synthetic-{m}" in groups}

    efficiency: dict[str, dict[str, Any]] = {}
    for m in EFFICIENCY_METHODS:
        points = {float(hit.group(2)): summarize(groups[name]) for name in groups
                  if (hit := _FRACTION.match(name)) and hit.group(1) == m}
        if points and m in methods:
            points[1.0] = methods[m]
        if points:
            efficiency[m] = {str(f): points[f] for f in sorted(points)}

    alpha = {float(hit.group(1)): summarize(groups[name])
             for name in groups if (hit := _ALPHA.match(name))}
    if alpha and "both" in methods:
        alpha[1.0] = methods["both"]

    real: dict[str, dict[str, Any]] = {}
    for d in DATASETS:
        row = {m: {**summarize(groups[f"{d}-{m}"]), "paper_80m": PAPER_80M.get((d, m))}
               for m in REAL_METHODS if f"{d}-{m}" in groups}
        if row:
            real[d] = row

    curves = {m: learning_curve(groups[f"synthetic-{m}"]) for m in methods}
    curves = {m: c for m, c in curves.items() if c["step"]}

    known = {n for n in groups if _METHOD.match(n) or _FRACTION.match(n)
             or _ALPHA.match(n) or _REAL.match(n)}
    return {
        "synthetic_methods": methods,
        "synthetic_efficiency": efficiency,
        "synthetic_alpha": {str(a): alpha[a] for a in sorted(alpha)},
        "real": real,
        "synthetic_learning_curves": curves,
        "other": sorted(set(groups) - known),
    }


def learning_curve(runs: Sequence[dict]) -> dict[str, list[float]]:
    """Validation accuracy (%) by step, mean over the seeds that logged that step."""
    by_step: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        path = Path(r["dir"]) / "metrics.jsonl"
        if not path.exists():
            continue
        # A resumed run logs the steps after its checkpoint again; keep the last.
        last: dict[int, dict] = {}
        for line in path.read_text().splitlines():
            if line.strip() and (rec := json.loads(line)).get("kind") == "eval/valid":
                last[int(rec["step"])] = rec
        for step, rec in last.items():
            for k, key in (("exact", "accuracy"), ("ranked", "accuracy_ranked")):
                if rec.get(key) is not None:
                    by_step[step][k].append(100 * rec[key])
    steps = sorted(by_step)
    return {"step": steps,
            **{k: [float(np.mean(by_step[s][k])) if by_step[s][k] else math.nan for s in steps]
               for k in _METRICS}}


def _fraction_label(f: str) -> str:
    return f"{100 * float(f):g}%"


METRIC_NOTE = ("Exact match is the reference code's metric: the generated answer equals the "
               "gold after the tokenizer round trip (tokenised, then detokenised). ")


def metric_note(runs: Iterable[dict]) -> str:
    """What the change of exact match to the decoded gold did to a table's runs,
    from the `metric_restated` counts experiments/restate_metric.py wrote."""
    changed: dict[str, tuple[int, int]] = {}
    restated = scored_new = 0
    for r in runs:
        info = r["summary"].get("metric_restated")
        if info is None:
            scored_new += "test_accuracy_strict" in r["summary"]
            continue
        restated += 1
        changed[r["summary"].get("dataset", "?")] = (
            info["test_golds_changed_by_round_trip"], info["test_examples"])
    if not restated:
        return METRIC_NOTE + "These runs were scored with it." if scored_new else ""
    kept = sorted(d for d, (m, _) in changed.items() if m == 0)
    bounded = sorted(d for d, (m, _) in changed.items() if m)
    text = (METRIC_NOTE + "These runs were scored against the raw gold text (now "
            "`accuracy_strict`) and keep no predictions; experiments/restate_metric.py "
            "restated them. ")
    if kept:
        text += (f"Every test gold of {', '.join(kept)} survives the round trip, so the two "
                 "metrics agree on every example: those figures are unchanged. ")
    if bounded:
        listed = ", ".join(f"{d} {changed[d][0]}/{changed[d][1]}" for d in bounded)
        text += (f"Where m of N test golds do not survive it ({listed}), the new figure is "
                 "within m/N of the recorded one, and the table shows those bounds.")
    return text.rstrip()


def _note(groups: dict[str, list[dict]], pattern: re.Pattern[str]) -> list[str]:
    """The metric note of the runs whose group name matches `pattern`, as lines."""
    text = metric_note(r for name, runs in groups.items() if pattern.match(name) for r in runs)
    return [text, ""] if text else []


def tables_markdown(results: dict[str, Any], groups: dict[str, list[dict]]) -> str:
    """tables.md: one section per grid that has at least one finished run."""
    head = "| seeds | exact match (%) | choice ranking (%) | chance (%) | wall s/run |"
    rule = "|---|---|---|---|---|"

    out = ["# Experiment results", "",
           "Test accuracy in %, mean ± sample std (ddof=1) over seeds; n/a with one seed.", ""]
    if results["synthetic_methods"]:
        out += ["## Synthetic: methods", "",
                "Every method trains for 3 epochs of the same examples; more tasks per "
                f"example pack into more rows, hence more steps. {CONTROL} is answer-only "
                "trained for as many steps as both (equal compute).", "",
                *_note(groups, _METHOD),
                "| method | steps " + head, "|---|---" + rule]
        out += [f"| {m} | {_num(r['steps'], '.0f')} " + _cells(r)
                for m, r in results["synthetic_methods"].items()]
        out.append("")
    if results["synthetic_efficiency"]:
        eff = results["synthetic_efficiency"]
        methods = [m for m in EFFICIENCY_METHODS if m in eff]
        out += ["## Synthetic: data efficiency", "",
                "Fraction of the training set; 100% is the plain method run.", "",
                *_note(groups, _FRACTION),
                "| fraction | " + " | ".join(f"{m} seeds | {m} exact (%) | {m} ranked (%)"
                                             for m in methods) + " |",
                "|---" + "|---|---|---" * len(methods) + "|"]
        for f in sorted({f for m in methods for f in eff[m]}, key=float):
            row = [eff[m].get(f) for m in methods]
            out.append(f"| {_fraction_label(f)} | " + " | ".join(
                f"{r['n']} | {_exact_cell(r)} | {r['ranked']}" if r else "— | — | —" for r in row)
                + " |")
        out.append("")
    if results["synthetic_alpha"]:
        out += ["## Synthetic: alpha sweep (method both)", "",
                "Weight of the rationale losses against the answer loss; 1 is the default.", "",
                *_note(groups, _ALPHA),
                "| alpha " + head, "|---" + rule]
        out += [f"| {float(a):g} " + _cells(r) for a, r in results["synthetic_alpha"].items()]
        out.append("")
    if results["real"]:
        out += ["## Real datasets", "",
                "paper: published test accuracy of the 80M FLAN-T5-small student of the "
                "TinyLLM paper (answer = full fine-tuning, both = TinyLLM), as quoted in "
                "../shared/README.md, blank where it quotes none; it starts from pretrained "
                "weights, ours from random.", "",
                *_note(groups, _REAL),
                "| dataset | method " + head + " paper 80M (%) |", "|---|---" + rule + "---|"]
        for d, row in results["real"].items():
            out += [f"| {d} | {m} " + _cells(r) + f" {_num(r['paper_80m'], '.1f', blank='')} |"
                    for m, r in row.items()]
        out.append("")
    if results["other"]:
        out += ["## Other runs", "", table({n: groups[n] for n in results["other"]}), ""]
    return "\n".join(out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Stat):
        return asdict(x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    # NaN is not JSON; a step no seed logged a metric for is simply unknown.
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _pyplot() -> Any:
    # Imported on first plot so `load_runs`/`table` users do not pay for matplotlib,
    # and Agg so it works without a display (CI, ssh).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _height(s: Stat) -> float:
    return np.nan if s.mean is None else s.mean


def _err(s: Stat) -> float:
    return 0.0 if s.std is None else s.std


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def _chance_line(ax: Any, rows: Iterable[dict[str, Any]]) -> None:
    chance = [r["chance"] for r in rows if r["chance"] is not None]
    if chance:
        ax.axhline(float(np.mean(chance)), color="grey", ls="--", label="chance")


def plot_methods(results: dict[str, Any], out: Path) -> Path | None:
    rows = results["synthetic_methods"]
    if not rows:
        return None
    fig, ax = _pyplot().subplots(figsize=(8, 4))
    x = np.arange(len(rows))
    for k, metric in enumerate(_METRICS):
        stats = [r[metric] for r in rows.values()]
        ax.bar(x + (k - 0.5) * 0.35, [_height(s) for s in stats],
               0.35, yerr=[_err(s) for s in stats], capsize=3, label=_LABELS[metric])
    _chance_line(ax, rows.values())
    ax.set_xticks(x, list(rows), rotation=15)
    ax.set(ylabel="test accuracy (%)", title="synthetic: accuracy by method (mean ± std over seeds)")
    ax.legend()
    return _save(fig, out / "synthetic_methods.png")


def _plot_sweep(ax: Any, points: dict[str, dict[str, Any]], label: str) -> None:
    xs = [float(p) for p in points]
    for metric, style in (("exact", "-o"), ("ranked", "--s")):
        stats = [points[p][metric] for p in points]
        ax.errorbar(xs, [_height(s) for s in stats],
                    yerr=[_err(s) for s in stats], fmt=style, capsize=3,
                    label=f"{label}{_LABELS[metric]}")


def plot_efficiency(results: dict[str, Any], out: Path) -> Path | None:
    eff = results["synthetic_efficiency"]
    if not eff:
        return None
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for m, points in eff.items():
        _plot_sweep(ax, points, f"{m}: ")
    _chance_line(ax, [r for points in eff.values() for r in points.values()])
    # Fractions halve from one point to the next, so a log2 axis spaces them evenly.
    ax.set_xscale("log", base=2)
    fractions = sorted({float(f) for points in eff.values() for f in points})
    ax.set_xticks(fractions, [_fraction_label(str(f)) for f in fractions])
    ax.set(xlabel="training fraction", ylabel="test accuracy (%)",
           title="synthetic: data efficiency (mean ± std over seeds)")
    ax.legend(fontsize=8)
    return _save(fig, out / "synthetic_efficiency.png")


def plot_alpha(results: dict[str, Any], out: Path) -> Path | None:
    points = results["synthetic_alpha"]
    if not points:
        return None
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    _plot_sweep(ax, points, "")
    _chance_line(ax, points.values())
    ax.set_xscale("log")
    ax.set_xticks([float(a) for a in points], [f"{float(a):g}" for a in points])
    ax.set(xlabel="alpha (rationale loss weight)", ylabel="test accuracy (%)",
           title="synthetic, method both: alpha sweep (mean ± std over seeds)")
    ax.legend()
    return _save(fig, out / "synthetic_alpha.png")


def plot_learning_curves(results: dict[str, Any], out: Path) -> Path | None:
    curves = results["synthetic_learning_curves"]
    if not curves:
        return None
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, metric in zip(axes, _METRICS):
        for m, c in curves.items():
            ax.plot(c["step"], c[metric], "-o", ms=3, label=m)
        ax.set(xlabel="step", title=f"validation {_LABELS[metric]} (mean over seeds)")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend()
    return _save(fig, out / "synthetic_learning_curves.png")


def plot_real(results: dict[str, Any], out: Path) -> Path | None:
    real = results["real"]
    if not real:
        return None
    methods = [m for m in REAL_METHODS if any(m in row for row in real.values())]
    width = 0.8 / len(methods)
    fig, axes = _pyplot().subplots(1, 2, figsize=(12, 4), sharey=True)
    x = np.arange(len(real))
    for ax, metric in zip(axes, _METRICS):
        for k, m in enumerate(methods):
            stats = [row[m][metric] if m in row else Stat(0, None, None) for row in real.values()]
            ax.bar(x + (k - (len(methods) - 1) / 2) * width,
                   [_height(s) for s in stats], width,
                   yerr=[_err(s) for s in stats], capsize=2, label=m)
        # Chance differs per dataset (2 to 5 choices), so one short line per group.
        for i, row in enumerate(real.values()):
            chance = [r["chance"] for r in row.values() if r["chance"] is not None]
            if chance:
                ax.hlines(float(np.mean(chance)), i - 0.45, i + 0.45, colors="grey",
                          linestyles="--", label="chance" if i == 0 else None)
        ax.set_xticks(x, list(real))
        ax.set_title(f"test {_LABELS[metric]} (mean ± std over seeds)")
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8)
    return _save(fig, out / "real_methods.png")


def report(runs: Path, out: Path) -> dict[str, Any]:
    """Write tables.md, results.json and the PNGs for the runs under `runs` into
    `out`; returns what results.json holds."""
    groups = load_runs(runs)
    if not groups:
        raise SystemExit(f"{runs}: no finished runs (run.json + summary.json)")
    out.mkdir(parents=True, exist_ok=True)
    results = collect(groups)
    text = tables_markdown(results, groups)
    (out / "tables.md").write_text(text)
    print(text)
    data = _jsonable(results)
    (out / "results.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    for plot in (plot_methods, plot_efficiency, plot_alpha, plot_learning_curves, plot_real):
        if path := plot(results, out):
            print(f"wrote {path}")
    return data


BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def fill_doc(doc: Path, tables: str) -> None:
    """Replace the lines between BEGIN and END in `doc` with `tables` (its sections
    one heading level down, the title dropped)."""
    text = doc.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{doc}: needs one {BEGIN!r} line followed by one {END!r} line")
    body = [("#" + ln if ln.startswith("## ") else ln)
            for ln in tables.splitlines() if not ln.startswith("# ")]
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(head + BEGIN + "\n" + "\n".join(body).strip() + "\n" + END + tail)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs/experiments"))
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    ap.add_argument("--doc", type=Path, help="page whose tables block to rewrite")
    args = ap.parse_args(argv)
    report(args.runs, args.out)
    if args.doc:
        fill_doc(args.doc, (args.out / "tables.md").read_text())
        print(f"rewrote the tables of {args.doc}")


if __name__ == "__main__":
    main()
