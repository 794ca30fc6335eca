"""Tokenizers behind one small interface: a ByT5-style byte tokenizer and HF ones.

`load_tokenizer(spec)` accepts:

- ``"byte"``: ByT5-style bytes (pad 0, eos 1, unk 2, byte b -> b + 3, vocab 259).
  Needs no file, so the offline demo and the tests run anywhere.
- a directory holding ``tokenizer.json`` (preferred, loaded with the fast
  ``tokenizers`` library) or only ``spiece.model`` (converted once through
  transformers' ``T5Tokenizer``), or a directory written by
  ``ByteTokenizer.save``;
- a path to a ``tokenizer.json`` file;
- a Hugging Face hub id such as ``google/flan-t5-small`` (needs network or a
  warm HF cache);
- ``"t5"`` (alias ``"flan-t5"``): the standard T5 / FLAN-T5 vocabulary, taken
  from the directory ``$TINYLLM_T5_VOCAB`` names when it is set, else from the
  hub as ``google/flan-t5-small`` (same 32,100 pieces).

Every tokenizer has ``pad_id == 0`` because packing uses 0 both as padding and
as the decoder start token (the T5 convention); ``eos_id`` is 1 for every T5
vocabulary. ``encode`` never appends EOS: the feature builder adds it, so
truncation can keep it.

The name ``"synthetic"`` (the synthetic task's BPE vocabulary) is resolved
one layer up, by ``tinyllm_jax.data.tokenizer.load_named_tokenizer``: building
it needs the synthetic corpus, and this module must not depend on the data
package, whose feature builder depends on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# Hub id behind the "t5" alias; FLAN-T5 and T5 share one vocabulary.
T5_HUB_ID = "google/flan-t5-small"
T5_VOCAB_ENV = "TINYLLM_T5_VOCAB"

# Written by ByteTokenizer.save next to an HF tokenizer_config.json; its
# presence is how load_tokenizer recognises a saved byte tokenizer.
BYTE_MARKER_FILE = "tinyllm_byte_tokenizer.json"
# What a directory holding a tokenizer has (in the order load_tokenizer
# prefers them); every tokenizer's save() writes one of them.
TOKENIZER_FILES = (BYTE_MARKER_FILE, "tokenizer.json", "spiece.model")


class TokenizerError(ValueError):
    """A tokenizer spec could not be resolved or loaded."""


@runtime_checkable
class Tokenizer(Protocol):
    """What every consumer (features, decoding, export) codes against."""

    @property
    def pad_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def save(self, directory: str | os.PathLike) -> None: ...


def _cut_at_eos(ids: Sequence[int], eos_id: int, pad_id: int) -> list[int]:
    out = []
    for i in ids:
        i = int(i)
        if i == eos_id:
            break
        if i != pad_id:
            out.append(i)
    return out


class ByteTokenizer:
    """UTF-8 bytes shifted by 3, the ByT5 layout without ByT5's 125 extra ids.

    The ids agree with transformers' ``ByT5Tokenizer`` for every byte, so a
    saved directory loads there with ``AutoTokenizer.from_pretrained``.
    """

    offset = 3
    unk_id = 2

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return 1

    @property
    def vocab_size(self) -> int:
        return 256 + self.offset

    def encode(self, text: str) -> list[int]:
        return [b + self.offset for b in text.encode("utf-8")]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        kept = _cut_at_eos(ids, self.eos_id, self.pad_id)
        # A model can emit unk or a byte sequence that is not valid UTF-8;
        # decoding must still return text, so such bytes become U+FFFD.
        data = bytes(i - self.offset for i in kept if self.offset <= i < self.vocab_size)
        return data.decode("utf-8", errors="replace")

    def save(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        # HF has ByT5Tokenizer; extra_ids=0 makes its vocabulary exactly ours.
        hf_config = {
            "tokenizer_class": "ByT5Tokenizer",
            "extra_ids": 0,
            "pad_token": "<pad>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "model_max_length": 1_000_000,
        }
        (d / "tokenizer_config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        marker = {"type": "byte", "offset": self.offset, "vocab_size": self.vocab_size}
        (d / BYTE_MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=259)"


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` (the fast Rust one) with T5 special ids."""

    def __init__(self, backend: Any, *, source: str = "<memory>") -> None:
        self._tok = backend
        self._source = source
        pad = backend.token_to_id("<pad>")
        eos = backend.token_to_id("</s>")
        if pad != 0 or eos is None:
            raise TokenizerError(
                f"tokenizer from {source}: expected a T5-style vocabulary with '<pad>' at id 0 "
                f"and an '</s>' token, got <pad>={pad} </s>={eos}; packing uses id 0 as "
                "padding and decoder start"
            )
        self._eos = int(eos)

    @property
    def backend(self) -> Any:
        """The underlying `tokenizers.Tokenizer`."""
        return self._tok

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return self._eos

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encs]

    def decode(self, ids: Sequence[int]) -> str:
        kept = _cut_at_eos(ids, self.eos_id, self.pad_id)
        # Model vocabularies are padded past the tokenizer's (32128 vs 32100);
        # ids in that padding have no text.
        kept = [i for i in kept if 0 <= i < self.vocab_size]
        return self._tok.decode(kept, skip_special_tokens=True)

    def save(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(d / "tokenizer.json"))
        hf_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "pad_token": "<pad>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "model_max_length": 1_000_000,
        }
        (d / "tokenizer_config.json").write_text(json.dumps(hf_config, indent=2) + "\n")

    def __repr__(self) -> str:
        return f"HFTokenizer(source={self._source!r}, vocab_size={self.vocab_size})"


def _from_tokenizer_json(path: Path) -> HFTokenizer:
    from tokenizers import Tokenizer as FastTokenizer

    try:
        backend = FastTokenizer.from_file(str(path))
    except Exception as e:  # the Rust loader raises a bare Exception
        raise TokenizerError(f"{path}: not a valid tokenizer.json ({e})") from e
    return HFTokenizer(backend, source=str(path))


def _from_spiece_dir(directory: Path) -> HFTokenizer:
    try:
        from transformers import T5Tokenizer
    except ImportError as e:
        raise TokenizerError(
            f"{directory} holds only spiece.model; converting it needs transformers and "
            "sentencepiece (pip install 'tinyllm_jax[hf]'), or give a tokenizer.json"
        ) from e
    try:
        hf = T5Tokenizer.from_pretrained(str(directory))
    except Exception as e:
        raise TokenizerError(f"{directory}/spiece.model: could not convert ({e})") from e
    return HFTokenizer(hf.backend_tokenizer, source=str(directory / "spiece.model"))


def _from_directory(directory: Path) -> Tokenizer:
    if (directory / BYTE_MARKER_FILE).is_file():
        marker_path = directory / BYTE_MARKER_FILE
        try:
            marker = json.loads(marker_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{marker_path}: not valid JSON ({e})") from e
        if not isinstance(marker, dict) or marker.get("type") != "byte":
            raise TokenizerError(f'{marker_path}: expected "type": "byte", got {marker!r}')
        return ByteTokenizer()
    if (directory / "tokenizer.json").is_file():
        return _from_tokenizer_json(directory / "tokenizer.json")
    if (directory / "spiece.model").is_file():
        return _from_spiece_dir(directory)
    raise TokenizerError(
        f"{directory}: no tokenizer.json, spiece.model or {BYTE_MARKER_FILE} in this directory"
    )


def _looks_like_hub_id(spec: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything with more parts, a leading
    # dot/slash or a home marker is a local path that does not exist.
    if spec.startswith((".", "/", "~")) or "\\" in spec:
        return False
    return 1 <= len(spec.split("/")) <= 2 and all(spec.split("/"))


def _from_hub(spec: str) -> HFTokenizer:
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise TokenizerError(
            f"tokenizer {spec!r} is not a local path; loading it from the HF hub needs "
            "transformers (pip install 'tinyllm_jax[hf]')"
        ) from e
    try:
        hf = AutoTokenizer.from_pretrained(spec)
    except Exception as e:
        raise TokenizerError(
            f"tokenizer {spec!r}: not a local file or directory, and loading it from the "
            f"Hugging Face hub failed ({type(e).__name__}: {str(e).splitlines()[0]}). "
            "Offline, pass 'byte' or a local directory holding tokenizer.json / spiece.model."
        ) from e
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise TokenizerError(
            f"tokenizer {spec!r}: the hub tokenizer has no fast (tokenizers) backend; "
            "save it with tokenizer.json and pass that directory"
        )
    return HFTokenizer(backend, source=f"hub:{spec}")


def _t5_vocab() -> Tokenizer:
    # Only the environment variable, never a path guessed next to the
    # package: what a run reads must not depend on where it was installed.
    local = os.environ.get(T5_VOCAB_ENV, "").strip()
    if local:
        if not Path(local).expanduser().is_dir():
            raise TokenizerError(
                f"${T5_VOCAB_ENV}={local!r} is not a directory; point it at a directory "
                "holding the T5 vocabulary (tokenizer.json or spiece.model), or unset it to "
                f"download {T5_HUB_ID}'s from the hub"
            )
        return _from_directory(Path(local).expanduser())
    try:
        return _from_hub(T5_HUB_ID)
    except TokenizerError as e:
        raise TokenizerError(
            f"{e}\nOffline, set ${T5_VOCAB_ENV} to a directory holding the T5 vocabulary "
            "(tokenizer.json or spiece.model)"
        ) from e


def load_tokenizer(spec: str | os.PathLike) -> Tokenizer:
    """Resolves `spec` as described in the module docstring."""
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise TokenizerError(f"tokenizer spec must be 'byte', a path or an HF hub id, got {spec!r}")
    text = str(spec).strip()
    if text.lower() == "byte":
        return ByteTokenizer()
    if text.lower() in ("t5", "flan-t5"):
        return _t5_vocab()
    if text.lower() == "synthetic":
        # Without this, the name would go to the hub and fail there with a
        # message that hides the real cause: the wrong loader was called.
        raise TokenizerError(
            "tokenizer 'synthetic' is built from the synthetic corpus; load it with "
            "tinyllm_jax.data.tokenizer.load_named_tokenizer, not tokenizers.load_tokenizer"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_directory(path)
    if path.is_file():
        if path.name.endswith(".json"):
            return _from_tokenizer_json(path)
        if path.name.endswith(".model"):
            return _from_spiece_dir(path.parent)
        raise TokenizerError(f"{path}: expected a tokenizer.json or spiece.model file")
    if _looks_like_hub_id(text):
        return _from_hub(text)
    raise TokenizerError(
        f"tokenizer {text!r}: no such file or directory (expected 'byte', a directory "
        "with tokenizer.json / spiece.model, a tokenizer.json path or an HF hub id)"
    )
