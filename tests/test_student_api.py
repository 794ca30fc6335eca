"""The Student API's input checks, and export -> load keeping the tokenizer
for every tokenizer kind the project has."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import linen as nn

from tinyllm_jax import Student
from tinyllm_jax.models.t5 import T5Config, init_params
from tinyllm_jax.tokenizers import TOKENIZER_FILES, ByteTokenizer, HFTokenizer, load_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
T5_VOCAB = SHARED / "t5-vocab"
needs_vocab = pytest.mark.skipif(not (T5_VOCAB / "tokenizer.json").is_file(),
                                 reason=f"{T5_VOCAB} not present")


def _student(vocab: int = 259, tokenizer: object = None) -> Student:
    config = T5Config(vocab_size=vocab, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    params = nn.meta.unbox(init_params(config, jax.random.PRNGKey(0)))
    return Student(config, params, ByteTokenizer() if tokenizer is None else tokenizer)


@pytest.fixture(scope="module")
def student() -> Student:
    return _student()


@pytest.mark.parametrize("ids, message", [
    ([[5, 259, 1]], r"input_ids\[0, 1\] = 259 is not a token id of this model "
                    r"\(vocabulary size 259: ids 0 to 258\)"),
    ([[5, 6, 1], [7, -1, 1]], r"input_ids\[1, 1\] = -1 is not a token id"),
    ([[5.0, 6.0, 1.0]], "input_ids must hold integer token ids, got dtype float64"),
    ([5, 6, 1], r"input_ids must be a \[batch, length\] array"),
    ([[]], r"input_ids must be a \[batch, length\] array with length >= 1"),
])
def test_logits_refuses_ids_outside_the_vocabulary(student: Student, ids: list,
                                                   message: str) -> None:
    ids = np.asarray(ids)
    mask = np.ones(ids.shape, np.int32)
    with pytest.raises(ValueError, match=message):
        student.logits(ids, mask, np.zeros((max(len(ids), 1), 1), np.int32))


def test_logits_checks_the_mask_and_the_decoder_ids(student: Student) -> None:
    ids = np.array([[5, 6, 1]])
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 2\), input_ids \(1, 3\)"):
        student.logits(ids, np.ones((1, 2)), np.zeros((1, 1), np.int32))
    with pytest.raises(ValueError, match="attention_mask must hold only 0 and 1"):
        student.logits(ids, np.full((1, 3), 2), np.zeros((1, 1), np.int32))
    with pytest.raises(ValueError, match=r"decoder_input_ids\[0, 1\] = 300 is not a token id"):
        student.logits(ids, np.ones((1, 3)), np.array([[0, 300]]))
    with pytest.raises(ValueError, match="decoder_input_ids has 2 rows, input_ids 1"):
        student.logits(ids, np.ones((1, 3)), np.zeros((2, 1), np.int32))
    logits = student.logits(ids, np.ones((1, 3)), np.array([[0, 5]]))
    assert logits.shape == (1, 2, 259) and np.isfinite(logits).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1, got 0"),
    ({"max_new_tokens": -3}, "max_new_tokens must be an integer >= 1, got -3"),
    ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer >= 1, got 2.5"),
    ({"max_new_tokens": True}, "max_new_tokens must be an integer >= 1, got True"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
])
def test_generate_refuses_bad_counts_before_any_work(student: Student, kwargs: dict,
                                                     message: str) -> None:
    with pytest.raises(ValueError, match=f"Student.generate: {message}"):
        student.generate(["hi"], **kwargs)
    with pytest.raises(ValueError, match=f"Student.generate_ids: {message}"):
        student.generate_ids([[5, 1]], **kwargs)
    with pytest.raises(ValueError, match=message):  # also for an empty input
        student.generate([], **kwargs)


@pytest.mark.parametrize("sequences, message", [
    ([[5, 259]], "sequence 0 position 1 is token id 259, not a token id of this model "
                 r"\(vocabulary size 259"),
    ([[5, 1], [-2]], "sequence 1 position 0 is token id -2"),
    ([[5, 2.5]], "sequence 0 position 1 is 2.5, not an integer token id"),
    ([[5, "a"]], "sequence 0 position 1 is 'a', not an integer token id"),
    ([[]], "sequence 0 is empty"),
    ([5, 6], "sequence 0 is 5, not a list of token ids"),
    ("abc", "expected a list of token-id lists, got str"),
])
def test_generate_ids_refuses_bad_sequences(student: Student, sequences: object,
                                            message: str) -> None:
    with pytest.raises(ValueError, match=f"Student.generate_ids: {message}"):
        student.generate_ids(sequences, max_new_tokens=2)


def test_generate_text_checks(student: Student) -> None:
    assert student.generate([]) == [] and student.generate_ids([]) == []
    with pytest.raises(ValueError, match="got one string"):
        student.generate("a question")
    with pytest.raises(ValueError, match="texts must be a list of strings"):
        student.generate([["not", "text"]])
    # A tokenizer with more ids than the model has rows is named by the text.
    small = _student(vocab=100)
    with pytest.raises(ValueError, match=r"text \(as encoded by the tokenizer\) 0 position 0 is "
                                         r"token id 107, not a token id of this model"):
        small.generate(["hi"], max_new_tokens=2)
    out = student.generate(["hi", "there"], max_new_tokens=3, batch_size=1)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def _tokenizers() -> dict[str, object]:
    from tinyllm_jax.data.tokenizer import load_named_tokenizer

    kinds: dict[str, object] = {"byte": ByteTokenizer(),
                                "synthetic BPE": load_named_tokenizer("synthetic")}
    if (T5_VOCAB / "tokenizer.json").is_file():
        kinds["tokenizer.json"] = load_tokenizer(T5_VOCAB / "tokenizer.json")
    return kinds


@pytest.mark.parametrize("kind", ["byte", "synthetic BPE", "tokenizer.json", "spiece"])
def test_export_loads_back_with_its_tokenizer(kind: str, tmp_path: Path) -> None:
    if kind == "spiece":
        pytest.importorskip("sentencepiece")
        pytest.importorskip("transformers")
        if not (T5_VOCAB / "spiece.model").is_file():
            pytest.skip(f"{T5_VOCAB} not present")
        only_spiece = tmp_path / "spiece"
        only_spiece.mkdir()
        shutil.copy(T5_VOCAB / "spiece.model", only_spiece)
        tokenizer = load_tokenizer(only_spiece)
    else:
        tokenizer = _tokenizers().get(kind)
        if tokenizer is None:
            pytest.skip(f"{T5_VOCAB} not present")
    student = _student(vocab=max(259, tokenizer.vocab_size), tokenizer=tokenizer)
    out = student.save_hf(tmp_path / "export")
    written = {p.name for p in out.iterdir()}
    assert written & set(TOKENIZER_FILES), f"the export wrote none of {TOKENIZER_FILES}: {written}"
    loaded = Student.load(out)
    assert loaded.tokenizer is not None, f"{kind}: exported without a tokenizer the loader finds"
    assert type(loaded.tokenizer) is type(tokenizer)
    text = "Ann has 3 pens; Zoë gives her 12 more."
    assert loaded.tokenizer.encode(text) == tokenizer.encode(text)
    assert loaded.tokenizer.vocab_size == tokenizer.vocab_size
    assert loaded.generate([text], max_new_tokens=3) == student.generate([text], max_new_tokens=3)
    if isinstance(tokenizer, HFTokenizer):
        assert (out / "tokenizer.json").is_file()
