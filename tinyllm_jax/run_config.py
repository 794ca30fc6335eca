"""The run's resolved config, saved in its workdir and checked when the workdir is used again.

    save_run_config(workdir, spec)          # training start: <workdir>/config.json
    spec = saved_spec(workdir)              # --mode=eval / print_config without --config
    check_against_saved(workdir, spec, EVAL_MAY_CHANGE, "evaluate")  # a --config given anyway

`config.json` holds the config in the ConfigDict layout a user types
(`config.train.eval_batch_size`, not EvalSpec's field names), after the config
file, its `:args` and every `--config.x` override were applied and `parse`
filled in the defaults, so it reads back into the same RunSpec.

What may differ from the saved config:
- at `--mode=eval` (EVAL_MAY_CHANGE): the evaluation settings, where the data
  and devices are (data_dir, tfds paths, mesh, distributed), runtime model
  choices (dtype, remat) and console/tracking settings. Anything that changes
  what the checkpoint is (model shape, teachers, prefixes, tokenizer, lengths)
  or how it was trained is refused: a config that disagrees there is most
  likely another run's.
- on resume (RESUME_MAY_CHANGE): in addition, the run's length (steps,
  epochs) and its cadences (log/eval/checkpoint every, keep_*). The data order,
  the optimizer, the loss and the batch size are refused: a resumed run would
  silently become a different experiment. (Changing `steps` with a decaying
  schedule stretches the schedule from the resumed step on.)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections

from tinyllm_jax.atomic import write_json_atomic
from tinyllm_jax.checkpoint import CheckpointMismatchError
from tinyllm_jax.spec import EVAL_KEYS, ConfigError, RunSpec, parse

CONFIG_FILE = "config.json"

# Patterns over the flattened names (fnmatch): what may change at --mode=eval.
EVAL_MAY_CHANGE: tuple[str, ...] = (
    *(f"config.train.{key}" for key in EVAL_KEYS),
    "config.train.progress_bar", "config.train.plot", "config.train.wandb.*",
    "config.train.profile_steps",
    "config.model.dtype", "config.model.remat", "config.model.dropout_rate",
    "config.data.data_dir", "config.data.tfds_data_dir", "config.data.use_tfds",
    "config.data.rationale_store",
    # The synthetic task draws each split from its own stream: the size of an
    # evaluation split changes nothing that was trained on.
    "config.data.synthetic.valid_size", "config.data.synthetic.test_size",
    # How the same parameters are computed: attention kernel, stacked layers
    # (checkpoints convert between layouts), the compilation cache.
    "config.model.attention_impl", "config.model.scan_layers", "config.train.compilation_cache",
    "config.mesh.*", "config.distributed.*",
)
# ... and what may change when a training run resumes.
RESUME_MAY_CHANGE: tuple[str, ...] = (
    *(p for p in EVAL_MAY_CHANGE if p != "config.model.dropout_rate"),
    "config.train.steps", "config.train.epochs", "config.train.log_every",
    "config.train.eval_every", "config.train.checkpoint_every", "config.train.keep_checkpoints",
    "config.train.keep_best", "config.train.async_checkpoints", "config.train.nonfinite",
    "config.train.preemption_sync_every",
)


class ConfigMismatchError(CheckpointMismatchError):
    """A config disagrees with the one saved in the workdir in fields that may not change."""


def config_dict(spec: RunSpec) -> dict[str, Any]:
    """`spec` in the ConfigDict layout, JSON-ready (tuples as lists)."""
    raw = dataclasses.asdict(spec)
    evaluation = raw.pop("eval")
    for key, field in EVAL_KEYS.items():
        raw["train"][key] = evaluation[field]
    return _jsonable(raw)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples every sequence field of the spec holds."""
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def config_text(spec: RunSpec) -> str:
    """The resolved config as indented JSON: config.json, print_config, TensorBoard."""
    return json.dumps(config_dict(spec), indent=2, sort_keys=True)


def save_run_config(workdir: str | os.PathLike, spec: RunSpec) -> Path:
    """Write `<workdir>/config.json` whole (process 0 only)."""
    path = Path(workdir) / CONFIG_FILE
    if jax.process_index() == 0:
        write_json_atomic(path, config_dict(spec))
    return path


def read_saved_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict | None:
    """The saved config as a ConfigDict (None when the workdir has none)."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not a readable JSON config ({e}); move it aside and pass "
                         "--config") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: holds a JSON {type(raw).__name__}, not a config object")
    return ml_collections.ConfigDict(_tuples(raw))


def saved_spec(workdir: str | os.PathLike) -> RunSpec:
    """The RunSpec saved in `workdir`; an error says what to do when there is none."""
    cfg = read_saved_config(workdir)
    if cfg is None:
        raise FileNotFoundError(
            f"{Path(workdir) / CONFIG_FILE}: no saved config (training writes it at start; "
            "workdirs of older runs lack it): pass the training config with --config")
    try:
        return parse(cfg)
    except ConfigError as e:
        raise ConfigError([f"{Path(workdir) / CONFIG_FILE}: {p}" for p in e.problems]) from None


def flatten(tree: Mapping[str, Any], prefix: str = "config") -> dict[str, Any]:
    """{"config.train.steps": 8, ...}; the names a user types after --."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def differences(saved: RunSpec, given: RunSpec) -> dict[str, tuple[Any, Any]]:
    """{field: (saved value, given value)} for every field that differs."""
    a, b = flatten(config_dict(saved)), flatten(config_dict(given))
    missing = object()
    return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)}


def _allowed(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def check_against_saved(workdir: str | os.PathLike, spec: RunSpec, may_change: Iterable[str],
                        doing: str, hint: str = "") -> dict[str, tuple[Any, Any]]:
    """Compare `spec` with the workdir's saved config: the allowed changes
    are returned; any other difference raises ConfigMismatchError listing
    each as `field: saved X, given Y`. No saved config: nothing to compare."""
    cfg = read_saved_config(workdir)
    if cfg is None:
        return {}
    saved = saved_spec(workdir)
    diffs = differences(saved, spec)
    patterns = tuple(may_change)
    refused = {k: v for k, v in diffs.items() if not _allowed(k, patterns)}
    if refused:
        listing = "\n  ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in refused.items())
        raise ConfigMismatchError(
            f"the config differs from the one saved in {Path(workdir) / CONFIG_FILE}; refusing "
            f"to {doing} this workdir with it:\n  {listing}\n"
            f"{hint or 'Use a new --workdir for a different run.'}")
    return {k: v for k, v in diffs.items() if k not in refused}


def has_checkpoints(workdir: str | os.PathLike) -> bool:
    """Whether a training run already wrote a (finalised) checkpoint step here."""
    directory = Path(workdir) / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def start_training(workdir: str | os.PathLike, spec: RunSpec) -> dict[str, tuple[Any, Any]]:
    """At training start: a resumed run is checked against the saved config
    (RESUME_MAY_CHANGE), then the config is saved. Returns the changes made
    on resume, which the caller reports."""
    changed = {}
    if has_checkpoints(workdir):
        changed = check_against_saved(
            workdir, spec, RESUME_MAY_CHANGE, "resume",
            "A resumed run may change only its length, cadences, evaluation and where its "
            "data and devices are (tinyllm_jax/run_config.py); use a new --workdir (with "
            "config.init_from to start from exported weights) for a different run.")
    save_run_config(workdir, spec)
    return changed


def eval_hint(workdir: str | os.PathLike) -> str:
    return ("Leave out --config to use the saved config; to change an evaluation field, start "
            f"from it: --config=configs/workdir/saved.py:{workdir} --config.train.eval_batch_size=8")


def changes_text(changed: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
