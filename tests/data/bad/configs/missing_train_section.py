"""Bad-input corpus: a config without its `train` section."""

from tinyllm_jax.configs import base_config


def get_config(arg=None):
    c = base_config(dataset="synthetic", teachers=(), size="tiny", tokenizer="synthetic")
    del c["train"]
    return c
