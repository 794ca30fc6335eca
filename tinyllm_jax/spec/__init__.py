"""The run's configuration, parsed once into frozen, typed specs.

`configs/*.py` build an `ml_collections.ConfigDict` (so every field can be
overridden on the command line and a mistyped override is an error);
`parse(config)` turns it into a `RunSpec` at start-up and nothing else in
`tinyllm_jax/` reads ConfigDict fields. Every default lives in the dataclass
fields below (`config_defaults()` hands them to `configs.base_config`), and
every range and relation check lives in `parse`: each failure is one line
naming the field, its value and what is allowed, all reported together,
before any data is read or anything compiled.

The ConfigDict keeps its historical layout: evaluation settings sit under
`config.train` (`eval_batch_size`, `best_metric`, ...) and land in `EvalSpec`.
"""

from tinyllm_jax.models.t5_config import RUNTIME_MODEL_FIELDS
from tinyllm_jax.spec.parse import data_spec, parse, parse_teachers
from tinyllm_jax.spec.types import (
    BEST_METRICS,
    DATASETS,
    EVAL_KEYS,
    SECTIONS,
    SPLITS,
    ConfigError,
    DataSpec,
    DistributedSpec,
    EvalSpec,
    LossSpec,
    MeshSpec,
    OptimizerSpec,
    RunSpec,
    TrainSpec,
    WandbSpec,
    config_defaults,
)

__all__ = [
    "BEST_METRICS", "DATASETS", "EVAL_KEYS", "RUNTIME_MODEL_FIELDS", "SECTIONS", "SPLITS",
    "ConfigError", "DataSpec", "DistributedSpec", "EvalSpec", "LossSpec", "MeshSpec",
    "OptimizerSpec", "RunSpec", "TrainSpec", "WandbSpec", "config_defaults", "data_spec", "parse",
    "parse_teachers",
]
