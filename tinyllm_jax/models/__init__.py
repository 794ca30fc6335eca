"""The T5 student and its Hugging Face checkpoint mapping."""

from tinyllm_jax.models.t5 import SIZES, T5, T5Config, abstract_params, count_params, init_params

__all__ = ["SIZES", "T5", "T5Config", "abstract_params", "count_params", "init_params"]
