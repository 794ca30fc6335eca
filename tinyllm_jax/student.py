"""`Student`: the small public face of a trained or imported T5 student."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tinyllm_jax.decode import bucket, greedy_decode, pad_batch, strip_after_eos
from tinyllm_jax.models.t5 import T5, T5Config


class Student:
    """A T5 student with its tokenizer.

    `Student.load(path)` takes an HF T5 directory (or hub id) or a training
    workdir written by `python -m tinyllm_jax.main`.
    """

    def __init__(self, config: T5Config, params: Any, tokenizer: Any = None) -> None:
        self.config = config
        self.params = jax.tree.map(jnp.asarray, nn.meta.unbox(params))
        self.tokenizer = tokenizer
        self._forward = jax.jit(
            lambda p, enc, enc_mask, dec: T5(config).apply({"params": p}, enc, dec, enc_mask)
        )

    @classmethod
    def load(cls, path: str | os.PathLike, tokenizer: Any = None) -> Student:
        p = Path(path)
        if p.is_dir() and not (p / "config.json").exists() and (p / "checkpoints").is_dir():
            from tinyllm_jax.checkpoint import load_student_from_workdir

            return load_student_from_workdir(p, tokenizer=tokenizer)
        from tinyllm_jax.models.hf import load_hf_checkpoint, resolve_checkpoint_dir

        directory = resolve_checkpoint_dir(path)
        config, params = load_hf_checkpoint(directory)
        if tokenizer is None:
            tokenizer = _tokenizer_in(directory)
        return cls(config, params, tokenizer)

    def logits(
        self, input_ids: Any, attention_mask: Any, decoder_input_ids: Any
    ) -> np.ndarray:
        """Teacher-forced float32 logits [batch, target_len, vocab]."""
        enc = jnp.asarray(np.asarray(input_ids), jnp.int32)
        mask = jnp.asarray(np.asarray(attention_mask), jnp.int32)
        dec = jnp.asarray(np.asarray(decoder_input_ids), jnp.int32)
        return np.asarray(self._forward(self.params, enc, mask, dec), np.float32)

    def generate_ids(
        self, sequences: list[list[int]], max_new_tokens: int = 64, batch_size: int = 32
    ) -> list[list[int]]:
        """Greedy continuations of token-id inputs (each without EOS stripped)."""
        eos = getattr(self.tokenizer, "eos_id", 1)
        pad = getattr(self.tokenizer, "pad_id", 0)
        results: list[list[int]] = []
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            # Bucketed shapes: a handful of compiled programs serve any input.
            length = bucket(max(len(s) for s in chunk))
            rows = batch_size if len(sequences) > batch_size else bucket(len(chunk), 1)
            tokens, segments = pad_batch(chunk, length, rows, pad)
            out = greedy_decode(
                self.params, jnp.asarray(tokens), jnp.asarray(segments), config=self.config,
                max_new_tokens=max_new_tokens, eos_id=eos, pad_id=pad,
            )
            out = np.asarray(out)
            results += [strip_after_eos(out[i], eos) for i in range(len(chunk))]
        return results

    def generate(
        self, texts: list[str], max_new_tokens: int = 64, batch_size: int = 32
    ) -> list[str]:
        """Greedy decoding of each text; returns the decoded strings."""
        if self.tokenizer is None:
            raise ValueError(
                "this Student has no tokenizer: pass tokenizer= to Student.load, or save "
                "tokenizer files (tokenizer.json) next to the checkpoint"
            )
        eos = self.tokenizer.eos_id
        ids = [self.tokenizer.encode(t) + [eos] for t in texts]
        outs = self.generate_ids(ids, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return [self.tokenizer.decode(o) for o in outs]

    def save_hf(self, directory: str | os.PathLike) -> Path:
        """Export as an HF T5 directory that transformers loads."""
        from tinyllm_jax.models.hf import save_hf_checkpoint

        return save_hf_checkpoint(directory, self.config, self.params, self.tokenizer)


def _tokenizer_in(directory: Path) -> Any:
    names = ("tokenizer.json", "spiece.model", "tinyllm_tokenizer.json")
    if not any((directory / n).exists() for n in names):
        return None
    from tinyllm_jax.tokenizers import load_tokenizer

    return load_tokenizer(str(directory))
