"""Restate committed run records under the reference exact-match metric.

    python -m experiments.restate_metric --records=experiments/records \\
        --data_dir=../shared/data/tinyllm

`accuracy` became "decoded prediction == decoded gold" (the reference code's
metric; see tinyllm_jax/evaluation/scoring.py); the records were scored against
the raw gold, now `accuracy_strict`. The records keep no per-example
predictions, so nothing can be rescored. What can be said exactly: on an
example whose gold survives the tokenizer round trip both metrics agree, so a
split where every gold survives keeps its figure; elsewhere the new figure is
within m/N of the recorded one (m of N golds changed by the round trip).

Each summary.json and metrics.jsonl row scored before the change (no
`accuracy_strict` key) gets `accuracy_strict` = the recorded value and either
the same `accuracy` (m = 0) or `accuracy: null` with `accuracy_bounds`
[lo, hi]; summaries also get `metric_restated` with m and N per split. A
record already restated is left alone, so the script can run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tinyllm_jax.configs import load_config_file
from tinyllm_jax.data import pipeline
from tinyllm_jax.evaluation.scoring import survives_round_trip
from tinyllm_jax.spec import parse

_SPLITS = ("valid", "test")


def _data_spec(run: dict[str, Any], data_dir: str) -> Any:
    cfg = load_config_file(run["config"], run.get("arg"))
    if cfg.data.name != "synthetic":
        cfg.data.data_dir = data_dir
    return parse(cfg).data


def changed_golds(data: Any, split: str) -> tuple[int, int]:
    """(golds the tokenizer round trip changes, examples) of one split."""
    tok = pipeline.tokenizer_for(data)
    examples, _ = pipeline.load_examples(data, split)
    return sum(not survives_round_trip(ex.answer, tok) for ex in examples), len(examples)


def restate(values: dict[str, Any], prefix: str, changed: int, total: int) -> bool:
    """Rewrite `<prefix>accuracy` of one record in place; False if already done."""
    key, strict = f"{prefix}accuracy", f"{prefix}accuracy_strict"
    if key not in values or strict in values or values[key] is None:
        return False
    old = float(values[key])
    values[strict] = old
    if changed:
        slack = changed / max(total, 1)
        values[key] = None
        values[f"{prefix}accuracy_bounds"] = [max(0.0, old - slack), min(1.0, old + slack)]
    return True


def restate_record(directory: Path, counts: dict[str, tuple[int, int]]) -> bool:
    summary_path, metrics_path = directory / "summary.json", directory / "metrics.jsonl"
    summary = json.loads(summary_path.read_text())
    if "metric_restated" in summary:
        return False
    for split in _SPLITS:
        restate(summary, f"{split}_", *counts[split])
    summary["metric_restated"] = {
        "by": "experiments/restate_metric.py",
        **{f"{s}_golds_changed_by_round_trip": counts[s][0] for s in _SPLITS},
        **{f"{s}_examples": counts[s][1] for s in _SPLITS},
    }
    if metrics_path.exists():
        lines = []
        for line in metrics_path.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            split = str(rec.get("kind", "")).rpartition("/")[2]
            if split in counts:
                restate(rec, "", *counts[split])
            lines.append(json.dumps(rec))
        _write(metrics_path, "\n".join(lines) + "\n")
    _write(summary_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return True


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=Path, default=Path("experiments/records"))
    ap.add_argument("--data_dir", default="../shared/data/tinyllm")
    args = ap.parse_args(argv)
    cache: dict[str, dict[str, tuple[int, int]]] = {}
    for run_json in sorted(args.records.glob("*/run.json")):
        run = json.loads(run_json.read_text())
        data = _data_spec(run, args.data_dir)
        # The training fraction cuts the train split only.
        key = repr(dataclasses.replace(data, train_fraction=1.0))
        if key not in cache:
            cache[key] = {s: changed_golds(data, s) for s in _SPLITS}
        done = restate_record(run_json.parent, cache[key])
        c = cache[key]
        print(f"{run_json.parent.name}: {'restated' if done else 'already restated'} "
              f"(golds changed: valid {c['valid'][0]}/{c['valid'][1]}, "
              f"test {c['test'][0]}/{c['test'][1]})")


if __name__ == "__main__":
    main()
