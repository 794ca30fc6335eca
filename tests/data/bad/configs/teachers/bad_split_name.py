"""Bad-input corpus: a split name with a blank in it."""

import ml_collections

from tinyllm_jax.teachers.config import base_config, teacher


def get_config(arg=None):
    config = base_config()
    config.data = ml_collections.ConfigDict({"name": "synthetic", "teachers": ("algebra",)})
    config.teachers = ml_collections.ConfigDict({"tiny": teacher("runs/tiny_teachers/tiny_t5")})
    config.splits = ("train", "dev set")
    return config
