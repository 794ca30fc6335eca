"""`Student`: the small public face of a trained or imported T5 student.

Its inputs are checked before anything runs: an id outside the vocabulary
would read a clipped or wrapped embedding row and give wrong (often
non-finite) logits without an error, so it is a ValueError naming the id,
where it is and the vocabulary size.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from tinyllm_jax.checkpoint import Checkpointer
from tinyllm_jax.data.tokenizer import load_named_tokenizer
from tinyllm_jax.evaluation.batching import bucket_length, pad_batch
from tinyllm_jax.evaluation.decode_options import DecodeOptions
from tinyllm_jax.evaluation.decoding import decode_rows, strip_after_eos
from tinyllm_jax.hub import check_repo_id, push_folder, write_model_card
from tinyllm_jax.models.hf import load_hf_checkpoint, resolve_checkpoint_dir, save_hf_checkpoint
from tinyllm_jax.models.t5 import T5, T5Config, abstract_params
from tinyllm_jax.tokenizers import TOKENIZER_FILES, load_tokenizer

log = logging.getLogger(__name__)


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
        # A workdir has checkpoints/ (and, since runs save their config, a
        # config.json that is not an HF model config); an HF folder has weights.
        weights = ("model.safetensors", "pytorch_model.bin", "flax_model.msgpack")
        if p.is_dir() and (p / "checkpoints").is_dir() and not any(
                (p / w).exists() for w in weights):
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
        enc = self._id_array(input_ids, "input_ids")
        dec = self._id_array(decoder_input_ids, "decoder_input_ids")
        mask = np.asarray(attention_mask)
        if mask.shape != enc.shape:
            raise ValueError(f"Student.logits: attention_mask has shape {mask.shape}, "
                             f"input_ids {enc.shape}; they must match")
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("Student.logits: attention_mask must hold only 0 and 1")
        if dec.shape[0] != enc.shape[0]:
            raise ValueError(f"Student.logits: decoder_input_ids has {dec.shape[0]} rows, "
                             f"input_ids {enc.shape[0]}; they must match")
        out = self._forward(self.params, jnp.asarray(enc, jnp.int32),
                            jnp.asarray(mask, jnp.int32), jnp.asarray(dec, jnp.int32))
        return np.asarray(out, np.float32)

    def _id_array(self, ids: Any, what: str) -> np.ndarray:
        """`ids` as a [batch, length] integer array of in-vocabulary ids."""
        array = np.asarray(ids)
        if array.ndim != 2 or not array.shape[1]:
            raise ValueError(f"Student.logits: {what} must be a [batch, length] array with "
                             f"length >= 1, got shape {array.shape}")
        if array.dtype.kind not in "iu":
            raise ValueError(f"Student.logits: {what} must hold integer token ids, got "
                             f"dtype {array.dtype}")
        outside = np.argwhere((array < 0) | (array >= self.config.vocab_size))
        if outside.size:
            row, col = (int(i) for i in outside[0])
            raise ValueError(
                f"Student.logits: {what}[{row}, {col}] = {int(array[row, col])} is not a token "
                f"id of this model (vocabulary size {self.config.vocab_size}: ids 0 to "
                f"{self.config.vocab_size - 1}); {len(outside)} id(s) are outside it")
        return array

    def _check_sequences(self, sequences: Any, what: str, item: str = "sequence",
                         ) -> list[list[int]]:
        if isinstance(sequences, str | bytes) or not isinstance(sequences, Sequence | np.ndarray):
            raise ValueError(f"{what}: expected a list of token-id lists, got "
                             f"{type(sequences).__name__}")
        vocab = self.config.vocab_size
        checked = []
        for i, seq in enumerate(sequences):
            if isinstance(seq, str | bytes) or not isinstance(seq, Sequence | np.ndarray):
                raise ValueError(f"{what}: {item} {i} is {seq!r}, not a list of token ids")
            if not len(seq):
                raise ValueError(f"{what}: {item} {i} is empty; give at least one token "
                                 "(e.g. the EOS id)")
            try:
                array = np.asarray(seq)
            except ValueError:  # ragged: lists inside the sequence
                array = np.asarray(seq, dtype=object)
            if array.ndim != 1 or array.dtype.kind not in "iu":
                j, token = next(((j, t) for j, t in enumerate(seq) if isinstance(t, bool)
                                 or not isinstance(t, int | np.integer)), (0, seq))
                raise ValueError(f"{what}: {item} {i} position {j} is {token!r}, not an "
                                 "integer token id")
            outside = np.flatnonzero((array < 0) | (array >= vocab))
            if outside.size:
                j = int(outside[0])
                raise ValueError(
                    f"{what}: {item} {i} position {j} is token id {int(array[j])}, not a "
                    f"token id of this model (vocabulary size {vocab}: ids 0 to {vocab - 1})")
            checked.append(array.tolist())
        return checked

    def generate_ids(
        self, sequences: list[list[int]], max_new_tokens: int = 64, batch_size: int = 32, *,
        num_beams: int = 1, length_penalty: float = 1.0, early_stopping: bool | str = False,
        do_sample: bool = False, temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0,
        seed: int = 0,
    ) -> list[list[int]]:
        """Continuations of token-id inputs, EOS stripped; decoding options as `generate`."""
        _check_count("Student.generate_ids", "max_new_tokens", max_new_tokens)
        _check_count("Student.generate_ids", "batch_size", batch_size)
        options = DecodeOptions(num_beams, length_penalty, early_stopping, do_sample,
                                temperature, top_k, top_p, seed).checked("Student.generate_ids")
        return self._generate(self._check_sequences(sequences, "Student.generate_ids"),
                              max_new_tokens, batch_size, options)

    def _generate(self, sequences: list[list[int]], max_new_tokens: int, batch_size: int,
                  options: DecodeOptions) -> list[list[int]]:
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
            # Each input's number seeds its sampling stream, so its sample
            # does not depend on batch_size.
            row_ids = np.arange(start, start + rows, dtype=np.int32)
            out = decode_rows(
                self.params, jnp.asarray(tokens), jnp.asarray(segments), jnp.asarray(row_ids),
                config=self.config, options=options, max_new_tokens=max_new_tokens,
                eos_id=eos, pad_id=pad,
            )
            out = np.asarray(out)
            results += [strip_after_eos(out[i], eos) for i in range(len(chunk))]
        return results

    def generate(
        self, texts: list[str], max_new_tokens: int = 64, batch_size: int = 32, *,
        num_beams: int = 1, length_penalty: float = 1.0, early_stopping: bool | str = False,
        do_sample: bool = False, temperature: float = 1.0, top_k: int = 50, top_p: float = 1.0,
        seed: int = 0,
    ) -> list[str]:
        """The decoded continuation of each text: greedy by default.

        With HF `generate`'s meanings and defaults: `num_beams > 1` is beam
        search (token for token HF's, with `length_penalty` and
        `early_stopping` True, False or "never"); `do_sample=True` samples
        with `temperature`, `top_k` (0 = off) and `top_p` (1 = off), the
        same tokens for the same `seed`. The sampling options are ignored
        without `do_sample`, as in HF.
        """
        _check_count("Student.generate", "max_new_tokens", max_new_tokens)
        _check_count("Student.generate", "batch_size", batch_size)
        options = DecodeOptions(num_beams, length_penalty, early_stopping, do_sample,
                                temperature, top_k, top_p, seed).checked("Student.generate")
        if isinstance(texts, str):
            raise ValueError("Student.generate: texts must be a list of strings, got one string "
                             "(pass [text])")
        if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
            raise ValueError("Student.generate: texts must be a list of strings")
        if self.tokenizer is None:
            raise ValueError(
                "this Student has no tokenizer: pass tokenizer= to Student.load, or save "
                "tokenizer files (tokenizer.json) next to the checkpoint"
            )
        eos = self.tokenizer.eos_id
        # A tokenizer with more ids than the model has rows (not this
        # model's tokenizer) is named here, by the text that showed it.
        ids = self._check_sequences([self.tokenizer.encode(t) + [eos] for t in texts],
                                    "Student.generate", "text (as encoded by the tokenizer)")
        outs = self._generate(ids, max_new_tokens, batch_size, options)
        return [self.tokenizer.decode(o) for o in outs]

    def save_hf(self, directory: str | os.PathLike) -> Path:
        """Export as an HF T5 directory that transformers loads, with the
        tokenizer's files, so `Student.load` finds it again."""
        if self.tokenizer is not None and not hasattr(self.tokenizer, "save"):
            log.warning("the tokenizer %r has no save(): %s will hold no tokenizer files",
                        self.tokenizer, directory)
        return save_hf_checkpoint(directory, self.config, self.params, self.tokenizer)

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None,
                    commit_message: str = "Upload tinyllm_jax student") -> str:
        """Upload the `save_hf` export (with a model card) to the HF Hub as
        `repo_id` ("name" or "owner/name"; created if absent); returns the
        commit URL. Credentials: `hf auth login`, HF_TOKEN or `token`."""
        check_repo_id(repo_id)
        with tempfile.TemporaryDirectory(prefix="tinyllm_jax-push-") as folder:
            self.save_hf(folder)
            write_model_card(folder, self.run_meta, self.checkpoint_step)
            return push_folder(folder, repo_id, private=private, token=token,
                               commit_message=commit_message)


def _check_count(where: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{where}: {name} must be an integer >= 1, got {value!r}")


def _tokenizer_in(directory: Path) -> Any:
    # The names every tokenizer's save() writes (byte, tokenizer.json, spiece).
    if not any((directory / n).is_file() for n in TOKENIZER_FILES):
        return None
    return load_tokenizer(str(directory))
