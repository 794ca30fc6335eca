"""Entry point: python -m tinyllm_jax.main --config=configs/<x>.py --workdir=DIR.

Modes: `train` (default; resumes automatically from the workdir), `eval`
(restore the best or latest checkpoint, write predictions_<split>.jsonl),
`selfcheck` (a fast model sanity check that needs no data), `compile`
(compile the train step for config.mesh on fake CPU devices and report the
memory per device; see tinyllm_jax/aot.py), `print_config` (print the
resolved config, every field with its value, as JSON).

Training saves the resolved config as <workdir>/config.json; `eval` and
`print_config` with --workdir and no --config use it (tinyllm_jax/run_config.py
says which fields a --config given anyway may change).
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

# Importing these touches no device: distributed start-up and the compile
# check's fake devices can still choose the backend afterwards. quiet_start
# comes first: it makes a Ctrl-C during the imports quiet.
from tinyllm_jax import quiet_start, run_config, train  # noqa: F401
from tinyllm_jax.aot import run_from_spec
from tinyllm_jax.background_errors import quiet_background_errors
from tinyllm_jax.cli import config_value, error_boundary, fail, interrupted, parse_flags
from tinyllm_jax.evaluation.run import evaluate_workdir
from tinyllm_jax.preemption import Preemption
from tinyllm_jax.selfcheck import run_selfcheck
from tinyllm_jax.sharding import maybe_initialize_distributed
from tinyllm_jax.spec import ConfigError, RunSpec, parse

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with ':args', e.g. configs/obqa.py:size=base.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "selfcheck", "compile", "print_config"],
                          "What to run.")
_SPLIT = flags.DEFINE_string("split", None, "--mode=eval: split to score (default: config's).")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "--mode=eval: which one.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags are --config, --workdir, --mode")
    # Progress and results are printed; library INFO logs (Orbax prints its
    # whole option set on every manager) would bury them.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tinyllm_jax").setLevel(logging.INFO)
    quiet_background_errors()
    # The one boundary: user-caused errors (OS errors included) end as one
    # line and exit 2, Ctrl-C as one line and 130; bugs keep a traceback.
    with error_boundary(train.NonFiniteError, on_interrupt=_INTERRUPTED[_MODE.value]):
        _run_mode(_MODE.value)


_INTERRUPTED = {
    "train": "stopped by Ctrl-C before or after the training loop; every checkpoint written "
             "is kept, and the same command resumes",
    "eval": "evaluation stopped by Ctrl-C; nothing was written",
    "selfcheck": "self-check stopped by Ctrl-C",
    "compile": "compile check stopped by Ctrl-C; nothing was written",
    "print_config": "stopped by Ctrl-C",
}


def _load_spec(mode: str) -> RunSpec:
    saved_ok = mode in ("eval", "print_config") and _WORKDIR.value
    if saved_ok and not flags.FLAGS["config"].present:
        # The workdir's own config: no need to type the training config again.
        return run_config.saved_spec(_WORKDIR.value)
    cfg = config_value(_CONFIG, "configs/demo.py")
    try:
        # The one validation of every field, before any data is read or
        # anything compiled.
        spec = parse(cfg, reads_data=mode not in ("compile", "print_config"))
    except ConfigError as e:
        fail(str(e))
    if saved_ok:
        run_config.check_against_saved(_WORKDIR.value, spec, run_config.EVAL_MAY_CHANGE,
                                       "evaluate" if mode == "eval" else "describe",
                                       run_config.eval_hint(_WORKDIR.value))
    return spec


def _stop_at_once(mode: str) -> Preemption:
    """Ctrl-C for the modes that write nothing: stop at once (a thread woken
    by the signal, so also inside a compile), exit 130."""
    return Preemption(interrupts=True, sigterm=False, abort_process=True,
                      stop_note=_INTERRUPTED[mode])


def _run_mode(mode: str) -> None:
    if mode == "selfcheck":
        with _stop_at_once(mode):
            run_selfcheck()
        return
    spec = _load_spec(mode)
    if mode == "print_config":
        print(run_config.config_text(spec), flush=True)
        return
    if mode == "compile":
        with _stop_at_once(mode):
            run_from_spec(spec)
        return
    if not _WORKDIR.value:
        fail("--workdir is required")
    # Before any other JAX call: it decides how many devices exist.
    maybe_initialize_distributed(spec.distributed)
    if mode == "train":
        summary = train.train_and_evaluate(spec, _WORKDIR.value, abort_process=True)
        if summary["status"] == "interrupted":
            interrupted(f"training stopped by Ctrl-C at step {summary['step']}; its checkpoint "
                        f"is in {summary['workdir']}/checkpoints/{summary['step']}, and the "
                        "same command resumes from it")
    else:
        evaluate_workdir(spec, _WORKDIR.value, _SPLIT.value, _WHICH.value, abort_process=True)


def run() -> None:
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
