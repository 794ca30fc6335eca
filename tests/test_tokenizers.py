"""Tokenizer loading, ids, decoding and save/load round trips."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tinyllm_jax import tokenizers
from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
from tinyllm_jax.data.tokenizer import load_named_tokenizer
from tinyllm_jax.tokenizers import (
    BYTE_MARKER_FILE,
    ByteTokenizer,
    HFTokenizer,
    Tokenizer,
    TokenizerError,
    load_tokenizer,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
T5_VOCAB = SHARED / "t5-vocab"
needs_vocab = pytest.mark.skipif(
    not (T5_VOCAB / "tokenizer.json").is_file(), reason=f"{T5_VOCAB} not present"
)


def test_byte_ids_follow_byt5_layout():
    tok = load_tokenizer("byte")
    assert isinstance(tok, ByteTokenizer) and isinstance(tok, Tokenizer)
    assert (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 1, 259)
    assert tok.encode("A") == [ord("A") + 3]
    assert tok.encode("") == []


def test_byte_roundtrip_non_ascii():
    tok = ByteTokenizer()
    text = "Zoë paid 5€ for 日本 tea\nok"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8")) > len(text)
    assert tok.decode(ids) == text
    # Decoding stops at the first EOS and ignores padding.
    assert tok.decode([0, *ids, 1, *tok.encode("junk"), 0]) == text
    assert tok.encode_batch(["a", "é"]) == [tok.encode("a"), tok.encode("é")]


def test_byte_decode_survives_invalid_utf8():
    tok = ByteTokenizer()
    # A lone continuation byte and an unk id cannot crash decoding.
    assert tok.decode([0x80 + 3, 2, ord("x") + 3]) == "\ufffdx"


def test_byte_save_load_roundtrip(tmp_path):
    ByteTokenizer().save(tmp_path)
    assert json.loads((tmp_path / BYTE_MARKER_FILE).read_text())["type"] == "byte"
    again = load_tokenizer(tmp_path)
    assert isinstance(again, ByteTokenizer)


def test_byte_saved_dir_loads_in_hf(tmp_path):
    transformers = pytest.importorskip("transformers")
    ByteTokenizer().save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ids = hf("Hé!", add_special_tokens=False)["input_ids"]
    assert ids == ByteTokenizer().encode("Hé!")
    assert (hf.pad_token_id, hf.eos_token_id) == (0, 1)


@needs_vocab
def test_t5_vocab_known_ids():
    tok = load_tokenizer(T5_VOCAB)
    assert isinstance(tok, HFTokenizer)
    assert tok.encode("Hello world") == [8774, 296]  # no EOS from encode
    assert (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 1, 32100)
    assert tok.encode_batch(["Hello world", "Hello"]) == [[8774, 296], [8774]]
    assert tok.decode([8774, 296, 1, 8774]) == "Hello world"
    # Ids in the model's padded vocabulary (32100..32127) decode to nothing.
    assert tok.decode([0, 8774, 32127, 296]) == "Hello world"


@needs_vocab
def test_t5_alias_finds_the_local_vocabulary(monkeypatch):
    monkeypatch.setenv("TINYLLM_T5_VOCAB", str(T5_VOCAB))
    assert load_tokenizer("t5").encode("Hello world") == [8774, 296]


@needs_vocab
def test_tokenizer_json_path_and_save_roundtrip(tmp_path):
    tok = load_tokenizer(T5_VOCAB / "tokenizer.json")
    tok.save(tmp_path / "out")
    again = load_tokenizer(tmp_path / "out")
    text = "The sun is responsible for plants sprouting."
    assert again.encode(text) == tok.encode(text)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert hf.eos_token_id == 1 and hf.pad_token_id == 0


@needs_vocab
def test_spiece_only_directory_is_converted(tmp_path):
    pytest.importorskip("sentencepiece")
    pytest.importorskip("transformers")
    (tmp_path / "spiece.model").symlink_to(T5_VOCAB / "spiece.model")
    tok = load_tokenizer(tmp_path)
    assert tok.encode("Hello world") == [8774, 296]


def test_bad_specs_give_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no such file"):
        load_tokenizer("./does/not/exist")
    with pytest.raises(TokenizerError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match=r"not a valid tokenizer\.json"):
        load_tokenizer(bad)
    with pytest.raises(TokenizerError, match="spec must be"):
        load_tokenizer("")


def test_synthetic_name_builds_the_synthetic_vocabulary():
    tok = load_named_tokenizer("synthetic")
    assert isinstance(tok, HFTokenizer)
    assert (tok.pad_id, tok.eos_id) == (0, 1)
    # BPE stops merging early when the small corpus runs out of pairs.
    assert 259 < tok.vocab_size <= 512
    (example,), _ = generate_split("valid", SyntheticConfig(valid_size=1), ("algebra",))
    ids = tok.encode(example.input)
    # The point of the vocabulary: far shorter than bytes, and lossless.
    assert len(ids) < len(example.input.encode("utf-8")) / 2
    assert tok.decode(ids) == example.input
    # Digits stay single tokens so arithmetic is compositional.
    assert len(tok.encode("1234")) == len(tok.encode("1")) + 3


def test_named_loader_delegates_every_other_spec(tmp_path):
    assert isinstance(load_named_tokenizer("byte"), ByteTokenizer)
    ByteTokenizer().save(tmp_path)
    assert isinstance(load_named_tokenizer(tmp_path), ByteTokenizer)
    with pytest.raises(TokenizerError, match="no such file"):
        load_named_tokenizer("./does/not/exist")


def test_generic_loader_points_synthetic_to_the_named_loader():
    with pytest.raises(TokenizerError, match="load_named_tokenizer"):
        load_tokenizer("synthetic")


def test_tokenizers_module_does_not_import_the_data_package():
    # tokenizers.py sits below data/ (features import its Tokenizer); any
    # import of data/ from it, even a lazy one inside a function, closes a cycle.
    tree = ast.parse(Path(tokenizers.__file__).read_text(encoding="utf-8"))
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert "tokenizers" in imported  # the walk does see the function-local imports
    assert [m for m in imported if m.startswith("tinyllm_jax")] == []
