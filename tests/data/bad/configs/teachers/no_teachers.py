"""Bad-input corpus: a teacher config with no teacher entries."""

import ml_collections

from tinyllm_jax.teachers.config import base_config


def get_config(arg=None):
    config = base_config()
    config.data = ml_collections.ConfigDict({"name": "synthetic", "teachers": ("algebra",)})
    config.teachers = ml_collections.ConfigDict()
    return config
