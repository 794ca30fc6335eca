"""The T5 model shape (field names as `transformers.T5Config`) and the
shapes of the published checkpoints."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# Fields that change how the model runs, not its parameters: they may differ
# between a checkpoint and the run that restores it.
RUNTIME_MODEL_FIELDS = ("dtype", "remat", "scan_layers", "dropout_rate", "attention_impl")
# How attention is computed (models/attention_kernels.py); "xla" is the inline path.
ATTENTION_IMPLEMENTATIONS = ("xla", "dot_product", "pallas_flash")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Model shape. Field names follow `transformers.T5Config`."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 1024
    num_layers: int = 8
    num_decoder_layers: int | None = None
    num_heads: int = 6
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"  # "relu" (v1.0) or "gated-gelu" (v1.1/FLAN)
    tie_word_embeddings: bool = False
    # Multiply the decoder output by d_model**-0.5 before the LM head. None
    # follows `tie_word_embeddings` (v1.0 scales, v1.1/FLAN does not); HF can
    # also load an untied head with scaling, so the two are kept apart.
    scale_decoder_outputs: bool | None = None
    # Compute dtype of matmuls; parameters are always float32.
    dtype: str = "float32"
    # "none", "full" (recompute each layer) or "dots" (save matmul outputs).
    remat: str = "none"
    # Run each stack as a scan over layers (parameters stacked on a leading
    # `layers` axis): one layer is compiled instead of all of them.
    scan_layers: bool = False
    attention_impl: str = "xla"  # one of ATTENTION_IMPLEMENTATIONS

    def __post_init__(self) -> None:
        if self.feed_forward_proj not in ("relu", "gated-gelu"):
            raise ValueError(
                f"feed_forward_proj must be 'relu' or 'gated-gelu', got {self.feed_forward_proj!r}"
            )
        if self.remat not in ("none", "full", "dots"):
            raise ValueError(f"remat must be 'none', 'full' or 'dots', got {self.remat!r}")
        if self.attention_impl not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention_impl must be one of {list(ATTENTION_IMPLEMENTATIONS)}, "
                             f"got {self.attention_impl!r}")
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"T5Config.{name} must be positive, got {getattr(self, name)}")

    @property
    def n_decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def scales_decoder_outputs(self) -> bool:
        if self.scale_decoder_outputs is None:
            return self.tie_word_embeddings
        return self.scale_decoder_outputs

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj == "gated-gelu"

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def replace(self, **kwargs: Any) -> T5Config:
        return dataclasses.replace(self, **kwargs)


# Shapes of the published checkpoints. FLAN-T5 and T5 v1.1 share shapes.
SIZES: dict[str, T5Config] = {
    "flan-t5-small": T5Config(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6),
    "flan-t5-base": T5Config(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
    "flan-t5-large": T5Config(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16),
    "flan-t5-xl": T5Config(d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32),
    "t5-small": T5Config(
        d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
        feed_forward_proj="relu", tie_word_embeddings=True,
    ),
    "t5-base": T5Config(
        d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
        feed_forward_proj="relu", tie_word_embeddings=True,
    ),
}
