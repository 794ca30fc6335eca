"""Shared fixtures: random HF T5 checkpoints built locally (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run on the CPU; keep XLA from grabbing every core for one test.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TINYLLM_DATA = SHARED / "data" / "tinyllm"
T5_VOCAB = SHARED / "t5-vocab"
# The package looks for the T5 vocabulary only where $TINYLLM_T5_VOCAB says;
# tests that name "t5" use the developers' copy when there is one.
if (T5_VOCAB / "tokenizer.json").is_file():
    os.environ.setdefault("TINYLLM_T5_VOCAB", str(T5_VOCAB))

VOCAB = 300


def hf_t5_configs() -> dict:
    """The three shapes the parity acceptance names, scaled down."""
    return {
        # (a) v1.0: relu MLP, tied head, decoder output scaled.
        "v1_tied_relu": dict(
            vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            feed_forward_proj="relu", relative_attention_num_buckets=16,
            relative_attention_max_distance=20,
        ),
        # (b) FLAN-T5-small head layout: 6 heads x 64 = 384 != d_model 512.
        "flan_small_shape": dict(
            vocab_size=VOCAB, d_model=512, d_kv=64, d_ff=1024, num_layers=2, num_heads=6,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        ),
        # (c) encoder and decoder depths differ.
        "uneven_layers": dict(
            vocab_size=VOCAB, d_model=48, d_kv=16, d_ff=96, num_layers=3,
            num_decoder_layers=1, num_heads=4, feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
        ),
    }


def _build(name: str, kwargs: dict, directory: Path) -> Path:
    import torch
    import transformers

    from tests.helpers import random_hf_t5

    torch.manual_seed(len(name))
    cfg = transformers.T5Config(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **kwargs)
    model = transformers.T5ForConditionalGeneration(cfg)
    untied = kwargs.get("tie_word_embeddings") is False
    head = torch.randn(kwargs["vocab_size"], kwargs["d_model"]) if untied else None
    return random_hf_t5.save(model, directory, head)


@pytest.fixture(scope="session")
def hf_t5_dirs(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf_t5")
    return {n: _build(n, kw, root / n) for n, kw in hf_t5_configs().items()}


@pytest.fixture(scope="session")
def hf_t5_models(hf_t5_dirs) -> dict:
    import transformers

    return {
        n: transformers.T5ForConditionalGeneration.from_pretrained(d).eval()
        for n, d in hf_t5_dirs.items()
    }


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is provided to developers and CI only)")
    return path
