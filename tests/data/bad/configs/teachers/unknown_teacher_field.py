"""Bad-input corpus: a misspelt teacher setting."""

import ml_collections

from tinyllm_jax.teachers.config import base_config, teacher


def get_config(arg=None):
    config = base_config()
    config.data = ml_collections.ConfigDict({"name": "synthetic", "teachers": ("algebra",)})
    config.teachers = ml_collections.ConfigDict({"tiny": teacher("runs/tiny_teachers/tiny_t5", batch_sise=4)})
    return config
