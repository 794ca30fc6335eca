"""Bad-input corpus: a model size that does not exist."""

from tinyllm_jax.configs import base_config


def get_config(arg=None):
    return base_config(dataset="synthetic", teachers=(), size="huge", tokenizer="synthetic")
