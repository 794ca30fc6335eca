"""Dataset readers, the synthetic task, tokenization, packing and iteration."""

from tinyllm_jax.data.example import Example, format_input

__all__ = ["Example", "format_input"]
