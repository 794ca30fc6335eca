"""Random HF T5 checkpoints with lively outputs, for decoding tests.

HF's own initialisation gives a random T5 such flat, pad-heavy outputs that
beam search and sampling have nothing to choose between; every weight is
redrawn from N(0, scale**2) instead, so continuations differ from input to
input and from step to step. `build` writes the directory with
save_pretrained (the FLAN layout for untied heads: a distinct
lm_head.weight and `tie_word_embeddings: false`), which is what the
project's HF import reads.
"""

from __future__ import annotations

import json
from pathlib import Path

SHAPES = {
    # v1.0: relu MLP, tied head, decoder output scaled.
    "v1_tied_relu": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                         feed_forward_proj="relu", relative_attention_num_buckets=16,
                         relative_attention_max_distance=20),
    # FLAN-T5 layout: gated-gelu, untied head, heads x d_kv (6 x 16) != d_model.
    "flan_gated_untied": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=6,
                              feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    # Encoder and decoder of different depths.
    "uneven_layers": dict(d_model=48, d_kv=16, d_ff=96, num_layers=3, num_decoder_layers=1,
                          num_heads=4, feed_forward_proj="gated-gelu",
                          tie_word_embeddings=False),
}


def build(directory: Path, shape: str, *, vocab_size: int = 64, scale: float = 0.5,
          seed: int = 0) -> Path:
    import torch
    import transformers

    kwargs = SHAPES[shape]
    torch.manual_seed(seed)
    cfg = transformers.T5Config(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                                vocab_size=vocab_size, **kwargs)
    model = transformers.T5ForConditionalGeneration(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)
    untied = kwargs.get("tie_word_embeddings") is False
    head = torch.randn(vocab_size, kwargs["d_model"]) * scale if untied else None
    return save(model, directory, head)


def save(model, directory: Path, head=None) -> Path:
    """`model.save_pretrained(directory)`; with `head` (a torch [vocab, d_model]
    tensor), in the FLAN layout of an untied head: transformers 5 ties the
    head in memory, so the distinct lm_head.weight and `tie_word_embeddings:
    false` are written into the files afterwards."""
    import safetensors.torch

    model.save_pretrained(directory)
    if head is not None:
        path = directory / "model.safetensors"
        state = safetensors.torch.load_file(str(path))
        state["lm_head.weight"] = head
        safetensors.torch.save_file(state, str(path), metadata={"format": "pt"})
        raw = json.loads((directory / "config.json").read_text())
        raw["tie_word_embeddings"] = False
        raw.pop("scale_decoder_outputs", None)
        (directory / "config.json").write_text(json.dumps(raw))
    return directory
