"""`Student`: the small public face of a trained or imported T5 student."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tinyllm_jax.checkpoint import Checkpointer
from tinyllm_jax.data.tokenizer import load_named_tokenizer
from tinyllm_jax.evaluation.batching import bucket_length, pad_batch
from tinyllm_jax.evaluation.decoding import greedy_decode, strip_after_eos
from tinyllm_jax.models.hf import load_hf_checkpoint, resolve_checkpoint_dir, save_hf_checkpoint
from tinyllm_jax.models.t5 import T5, T5Config, abstract_params
from tinyllm_jax.tokenizers import load_tokenizer


class Student:
    """A T5 student with its tokenizer.

    `Student.load(path)` takes an HF T5 directory (or hub id) or a training
    workdir written by `python -m tinyllm_jax.main`.
    """

    def __init__(self, config: T5Config, params: Any, tokenizer: Any = None) -> None:
        self.config = config
        self.params = jax.tree.map(jnp.asarray, nn.meta.unbox(params))
        self.tokenizer = tokenizer
        # Set by from_workdir: the checkpoint step and its run description.
        self.checkpoint_step: int | None = None
        self.run_meta: dict[str, Any] | None = None
        self._forward = jax.jit(
            lambda p, enc, enc_mask, dec: T5(config).apply({"params": p}, enc, dec, enc_mask)
        )

    @classmethod
    def load(cls, path: str | os.PathLike, tokenizer: Any = None) -> Student:
        """From an HF T5 directory or hub id, or a training workdir's best checkpoint."""
        p = Path(path)
        if p.is_dir() and not (p / "config.json").exists() and (p / "checkpoints").is_dir():
            return cls.from_workdir(p, tokenizer=tokenizer)
        directory = resolve_checkpoint_dir(path)
        config, params = load_hf_checkpoint(directory)
        if tokenizer is None:
            tokenizer = _tokenizer_in(directory)
        return cls(config, params, tokenizer)

    @classmethod
    def from_workdir(
        cls, workdir: str | os.PathLike, *, which: str = "best", tokenizer: Any = None
    ) -> Student:
        """The best (or `which="latest"`) intact checkpoint of a training workdir.

        The model shape and the tokenizer name come from the checkpoint's run
        description, so no configuration is needed; a damaged step is skipped
        for the newest intact one, as in training.
        """
        if which not in ("best", "latest"):
            raise ValueError(f"Student.from_workdir: which must be 'best' or 'latest', got {which!r}")
        if not (Path(workdir) / "checkpoints").is_dir():
            # Checked here: the Checkpointer would create the directory.
            raise FileNotFoundError(f"{workdir}: not a training workdir (no checkpoints/ directory)")

        def abstract_of(meta: dict[str, Any]) -> Any:
            boxed = abstract_params(T5Config(**meta["model"]))
            return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nn.meta.unbox(boxed))

        ckpt = Checkpointer(workdir, async_save=False)
        try:
            best = ckpt.best_step() if which == "best" else None
            found = ckpt.restore_params_intact(abstract_of, prefer=best)
            if found is None:
                raise FileNotFoundError(f"{ckpt.directory}: no checkpoint to load")
            step, params, meta = found
        finally:
            ckpt.close()
        if tokenizer is None:
            tokenizer = load_named_tokenizer(meta["tokenizer"])
        student = cls(T5Config(**meta["model"]), params, tokenizer)
        # Where the weights came from: --mode=eval reports the step and checks
        # that the run description matches its configuration.
        student.checkpoint_step, student.run_meta = step, meta
        return student

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
            # Bucketed shapes (the eval batches' rule): a handful of compiled
            # programs serve any input.
            length = bucket_length(max(len(s) for s in chunk))
            rows = batch_size if len(sequences) > batch_size else bucket_length(
                len(chunk), cap=batch_size, minimum=1)
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
        return save_hf_checkpoint(directory, self.config, self.params, self.tokenizer)


def _tokenizer_in(directory: Path) -> Any:
    names = ("tokenizer.json", "spiece.model", "tinyllm_tokenizer.json")
    if not any((directory / n).exists() for n in names):
        return None
    return load_tokenizer(str(directory))
