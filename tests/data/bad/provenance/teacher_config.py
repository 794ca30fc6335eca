"""A teacher config for file-system fault tests: `--config=<this>:<out_dir>`.

The synthetic task (no files to read) and a teacher whose model is never
loaded: every fault these tests lay out must be reported before a model
would be.
"""

import ml_collections

from tinyllm_jax.teachers.config import base_config, teacher


def get_config(arg=None):
    config = base_config()
    config.out_dir = arg or "runs/rationales"
    config.splits = ("train",)
    config.max_examples = 4
    config.progress = False
    config.data = ml_collections.ConfigDict({
        "name": "synthetic",
        "teachers": ("algebra",),
        "synthetic": {"train_size": 8, "valid_size": 2, "test_size": 2, "seed": 0},
    })
    config.teachers = ml_collections.ConfigDict({"tiny": teacher("model-not-needed-here")})
    return config
