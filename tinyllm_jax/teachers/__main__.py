"""`python -m tinyllm_jax.teachers --config=configs/teachers/<x>.py`: write
teacher rationales to `<out_dir>/<dataset>/<teacher>/<split>.jsonl`.

Rerunning the same command resumes: ids already written are skipped.
`--dry_run=N` prints the prompts of the first N examples and loads no model.
Every user-caused failure (bad config, bad data, a store another run holds,
a file-system condition such as a full disk) is one line `error: ...` and
exit status 2; what was written before it stays.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import app, flags
from ml_collections import config_flags

from tinyllm_jax.data.errors import DataError
from tinyllm_jax.teachers import config as teacher_config
from tinyllm_jax.teachers.config import TeacherError
from tinyllm_jax.teachers.os_errors import os_error_line
from tinyllm_jax.teachers.runner import run

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Teacher config file, e.g. configs/teachers/demo.py.", lock_config=True
)
_DRY_RUN = flags.DEFINE_integer(
    "dry_run", 0, "Print the prompts of the first N examples per teacher and split; no model.",
    lower_bound=0,
)
_TEACHERS = flags.DEFINE_list("teachers", [], "Run only these teachers (default: all).")
_SPLITS = flags.DEFINE_list("splits", [], "Run only these splits (default: config.splits).")


def _select(spec: teacher_config.RunSpec) -> teacher_config.RunSpec:
    teachers = spec.teachers
    if _TEACHERS.value:
        known = {t.name for t in teachers}
        unknown = sorted(set(_TEACHERS.value) - known)
        if unknown:
            raise TeacherError(f"--teachers: unknown {unknown}; the config has {sorted(known)}")
        teachers = tuple(t for t in teachers if t.name in _TEACHERS.value)
    splits = tuple(_SPLITS.value) or spec.splits
    return dataclasses.replace(spec, teachers=teachers, splits=splits)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _CONFIG.value is None:
        raise app.UsageError("--config=configs/teachers/<name>.py is required")
    try:
        spec = _select(teacher_config.run_spec(_CONFIG.value))
        run(spec, _CONFIG.value.data, dry_run=_DRY_RUN.value)
    except (TeacherError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except ValueError as err:
        # The data readers report config mistakes ("config.data.data_dir is
        # not set") as ValueError; show them like ours, naming the type.
        print(f"error ({type(err).__name__}): {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; everything written so far is kept, rerun to resume", file=sys.stderr)
        sys.exit(130)


def cli() -> None:
    """The `tinyllm-teachers` console script."""
    app.run(main)


if __name__ == "__main__":
    cli()
