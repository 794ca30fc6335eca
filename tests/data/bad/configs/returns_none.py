"""Bad-input corpus: get_config forgets to return the config."""

from tinyllm_jax.configs import base_config


def get_config(arg=None):
    base_config(dataset="synthetic", teachers=(), size="tiny", tokenizer="synthetic")
