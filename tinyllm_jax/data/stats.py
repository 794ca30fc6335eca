"""Data statistics per split: teachers, token lengths, truncation, packing.

    python -m tinyllm_jax.data.stats --config=configs/obqa.py
    python -m tinyllm_jax.data.stats --dataset=obqa --data_dir=../shared/data/tinyllm \\
        --teachers=flan,llama --tokenizer=../shared/t5-vocab

Prints, for each split: example count; per teacher the missing rationales
and disagreements with the gold label; token-length percentiles
(p50/p90/p99/max, EOS included) of inputs and targets per task; truncation
and drop counts per task; packing efficiency of the training layout next to
the one-pair-per-row padded layout; and the reader's full report.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from tinyllm_jax.cli import config_value, error_boundary, error_text, fail, parse_flags
from tinyllm_jax.data.features import feature_lengths, task_names
from tinyllm_jax.data.iterator import BatchIterator
from tinyllm_jax.data.packing import rows_efficiency
from tinyllm_jax.data.pipeline import build_features, load_examples, row_lengths, tokenizer_for
from tinyllm_jax.preemption import Preemption
from tinyllm_jax.spec import ConfigError, DataSpec, data_spec
from tinyllm_jax.tokenizers import Tokenizer

PERCENTILES = (50, 90, 99)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (uses config.data)."
)
_DATASET = flags.DEFINE_string(
    "dataset", None, "Dataset name when no --config: synthetic, obqa, arc, ..."
)
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TinyLLM data root (without --config).")
_STORE = flags.DEFINE_string("rationale_store", "", "Rationale store directory (without --config).")
_TEACHERS = flags.DEFINE_string("teachers", "", "Comma-separated teachers, e.g. flan,llama.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "t5", "'byte', 't5', a tokenizer dir/file or hub id.")
_MAX_IN = flags.DEFINE_integer("max_input_len", 512, "Per-pair input limit (without --config).")
_MAX_T = flags.DEFINE_integer("max_target_len", 256, "Per-pair target limit (without --config).")
_PACKED_IN = flags.DEFINE_integer("packed_input_len", 0, "Packed row input length (0: auto).")
_PACKED_T = flags.DEFINE_integer("packed_target_len", 0, "Packed row target length (0: auto).")
_LABEL = flags.DEFINE_enum("label_source", "gold", ["gold", "teacher"], "Label source.")
_DROP = flags.DEFINE_bool(
    "drop_disagreeing", False, "Mask rationales that disagree with the label."
)
_SPLITS = flags.DEFINE_list("splits", ["train", "valid", "test"], "Splits to describe.")


def split_stats(data: DataSpec | Any, split: str, tokenizer: Tokenizer) -> dict[str, Any]:
    """Everything the stats command prints for one split, as plain values.

    `data` is a DataSpec, or a `config.data` section that is validated here."""
    data = data_spec(data)
    examples, report = load_examples(data, split)
    teachers = data.teachers
    features, freport = build_features(data, examples, tokenizer)
    report.merge(freport)
    names = task_names(teachers)
    li, lt = feature_lengths(features)
    task_ids = np.array([f.task_id for f in features], dtype=np.int64)
    stats: dict[str, Any] = {"split": split, "examples": len(examples), "pairs": len(features)}
    stats["teachers"] = {
        t: {
            "missing_rationale": sum(e.rationales.get(t) is None for e in examples),
            "disagrees_with_gold": sum(
                e.teacher_answers.get(t) is not None and e.teacher_answers.get(t) != e.answer
                for e in examples
            ),
        }
        for t in teachers
    }
    stats["lengths"] = {}
    for k, name in enumerate(names):
        mask = task_ids == k
        if not mask.any():
            continue
        stats["lengths"][name] = {
            side: [*(int(np.percentile(v[mask], p)) for p in PERCENTILES), int(v[mask].max())]
            for side, v in (("input", li), ("target", lt))
        }
    stats["truncation"] = {
        key.removeprefix("features/"): n
        for key, n in sorted(report.counts.items())
        if key.startswith("features/") and not key.endswith("/pairs")
    }
    stats["report"] = report
    if features:
        max_in, max_t = data.max_input_len, data.max_target_len
        stats["padded"] = {
            "shape": (max_in, max_t),
            "rows": len(features),
            "efficiency": float((li.sum() + lt.sum()) / (len(features) * (max_in + max_t))),
        }
        a, b = row_lengths(dataclasses.replace(data, packing=True), features)
        # Epoch 0 of the training iterator: the rows training will really see.
        it = BatchIterator(
            features,
            batch_size=1,
            input_len=a,
            target_len=b,
            seed=data.seed,
            process_index=0,
            process_count=1,
        )
        rows = it.epoch_rows(0)
        stats["packed"] = {
            "shape": (a, b),
            "rows": len(rows),
            "efficiency": rows_efficiency(rows, li, lt, a, b),
        }
    return stats


def format_stats(name: str, stats: dict[str, Any]) -> str:
    lines = [
        f"== {name} / {stats['split']}: {stats['examples']} examples, {stats['pairs']} pairs =="
    ]
    if stats["teachers"]:
        lines.append(f"  {'teacher':<12}{'missing rationale':>18}{'disagrees w/ gold':>19}")
        for t, s in stats["teachers"].items():
            lines.append(f"  {t:<12}{s['missing_rationale']:>18}{s['disagrees_with_gold']:>19}")
    header = "/".join(f"p{p}" for p in PERCENTILES) + "/max"
    lines.append(f"  tokens (EOS incl.) {'task':<10} input {header:<18} target {header}")
    for task, s in stats["lengths"].items():
        fmt = "/".join(str(v) for v in s["input"]), "/".join(str(v) for v in s["target"])
        lines.append(f"  {'':<19}{task:<10} {'':<6}{fmt[0]:<18} {'':<7}{fmt[1]}")
    if stats["truncation"]:
        lines.append(
            "  truncation and drops: "
            + ", ".join(f"{k}={v}" for k, v in stats["truncation"].items())
        )
    else:
        lines.append("  truncation and drops: none")
    if "packed" in stats:
        p, d = stats["packed"], stats["padded"]
        lines.append(
            f"  packing: packed {p['shape'][0]}x{p['shape'][1]} {p['rows']} rows "
            f"{100 * p['efficiency']:.1f}%  |  padded {d['shape'][0]}x{d['shape'][1]} "
            f"{d['rows']} rows {100 * d['efficiency']:.1f}%"
        )
    lines.append("  " + stats["report"].format("reader and feature report").replace("\n", "\n  "))
    return "\n".join(lines)


def _flags_data_cfg() -> dict[str, Any]:
    if not _DATASET.value:
        raise app.UsageError(
            "give --config=configs/<x>.py, or --dataset (with --data_dir, --teachers)"
        )
    return {
        "name": _DATASET.value,
        "data_dir": _DATA_DIR.value,
        "rationale_store": _STORE.value,
        "teachers": _TEACHERS.value,
        "tokenizer": _TOKENIZER.value,
        "max_input_len": _MAX_IN.value,
        "max_target_len": _MAX_T.value,
        "packed_input_len": _PACKED_IN.value,
        "packed_target_len": _PACKED_T.value,
        "label_source": _LABEL.value,
        "drop_disagreeing": _DROP.value,
        "packing": True,
        "seed": 0,
    }


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {list(argv[1:])}")
    with error_boundary(on_interrupt="stats stopped by Ctrl-C"), Preemption(
            interrupts=True, sigterm=False, abort_process=True, stop_note="stats stopped by Ctrl-C"):
        _describe()


def _describe() -> None:
    if _CONFIG.value is not None:
        if _DATASET.value:
            raise app.UsageError(
                "--dataset conflicts with --config; override with --config.data.name=..."
            )
        section = config_value(_CONFIG, "configs/obqa.py").data
    else:
        section = _flags_data_cfg()
    try:
        data = data_spec(section)
    except ConfigError as e:
        fail(str(e))
    tokenizer = tokenizer_for(data)
    name = data.name
    print(f"{name}: tokenizer {tokenizer!r}, teachers {data.teachers}")
    problems = []
    for split in _SPLITS.value:
        try:
            stats = split_stats(data, split, tokenizer)
        except (ValueError, OSError) as e:  # DataError is a ValueError
            print(f"== {name} / {split}: not available: {error_text(e)}", file=sys.stderr)
            problems.append(f"{split}: {error_text(e)}")
            continue
        print(format_stats(name, stats), flush=True)
    if problems and len(problems) == len(_SPLITS.value):
        # Nothing was described: a caller (a script, CI) must not see success.
        fail(f"no split of {name} could be read ({', '.join(_SPLITS.value)}); "
             "check --config / --data_dir and --splits")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
