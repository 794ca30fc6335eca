"""Entry point: python -m tinyllm_jax.main --config=configs/<x>.py --workdir=DIR.

Modes: `train` (default; resumes automatically from the workdir), `eval`
(restore the best or latest checkpoint, write predictions_<split>.jsonl),
`selfcheck` (a fast model sanity check that needs no data), `compile`
(compile the train step for config.mesh on fake CPU devices and report the
memory per device; see tinyllm_jax/aot.py).
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

# Importing these touches no device: distributed start-up and the compile
# check's fake devices can still choose the backend afterwards.
from tinyllm_jax import train
from tinyllm_jax.aot import run_from_spec
from tinyllm_jax.cli import fail
from tinyllm_jax.evaluation.run import evaluate_workdir
from tinyllm_jax.selfcheck import run_selfcheck
from tinyllm_jax.sharding import maybe_initialize_distributed
from tinyllm_jax.spec import ConfigError, parse

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with ':args', e.g. configs/obqa.py:size=base.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "selfcheck", "compile"], "What to run.")
_SPLIT = flags.DEFINE_string("split", None, "--mode=eval: split to score (default: config's).")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "--mode=eval: which one.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags are --config, --workdir, --mode")
    # Progress and results are printed; library INFO logs (Orbax prints its
    # whole option set on every manager) would bury them.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tinyllm_jax").setLevel(logging.INFO)
    if _MODE.value == "selfcheck":
        run_selfcheck()
        return
    compile_only = _MODE.value == "compile"
    try:
        cfg = _CONFIG.value
        if cfg is None:
            fail("--config is required, e.g. --config=configs/demo.py")
        # The one validation of every field, before any data is read or
        # anything compiled.
        spec = parse(cfg, reads_data=not compile_only)
    except ConfigError as e:
        fail(str(e))
    except (OSError, SyntaxError) as e:  # ml_collections defers load errors to first use
        fail(f"--config: {str(e).strip().splitlines()[-1]}")
    if compile_only:
        try:
            run_from_spec(spec)
        except ValueError as e:
            fail(f"{type(e).__name__}: {e}")
        return
    if not _WORKDIR.value:
        fail("--workdir is required")

    # Before any other JAX call: it decides how many devices exist.
    maybe_initialize_distributed(spec.distributed)
    try:
        if _MODE.value == "train":
            train.train_and_evaluate(spec, _WORKDIR.value)
        else:
            evaluate_workdir(spec, _WORKDIR.value, _SPLIT.value, _WHICH.value)
    except (ValueError, FileNotFoundError, train.NonFiniteError) as e:
        # Input, config and checkpoint problems: a message a person can act
        # on, not a traceback. Bugs (other exceptions) still show one.
        fail(f"{type(e).__name__}: {e}")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with config-override mistakes reported as one line.

    ml_collections raises AttributeError/TypeError with a traceback for
    `--config.train.lr=...` when no such field exists or the type is wrong.
    """
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e)
        if "Traceback (most recent call last)" in message:
            # ml_collections embeds get_config's traceback; its last line says what is wrong.
            message = message.split("Traceback")[0].strip() + " " + message.strip().splitlines()[-1]
    except (AttributeError, KeyError, TypeError, ValueError, SyntaxError, OSError) as e:
        message = f"{type(e).__name__}: {e}"
    bad = [a for a in argv[1:] if a.startswith("--config")]
    print(f"error: could not apply the command-line flags {bad}: {message}\n"
          "Config fields are locked: check the spelling against the config file "
          "(python -m tinyllm_jax.main --config=... --helpfull lists them).",
          file=sys.stderr, flush=True)
    sys.exit(2)


def run() -> None:
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
