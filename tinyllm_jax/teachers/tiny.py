"""Tiny random teacher models for the demo config and the tests.

Real teachers cannot be downloaded here, so `configs/teachers/demo.py` runs
two random HF models built on the spot: a LlamaForCausalLM and a
T5ForConditionalGeneration, saved with `save_pretrained` next to their
tokenizer. Their rationales are noise, but every code path (batching, both
model kinds, parsing, resume, the store) is the real one.

    python -m tinyllm_jax.teachers.tiny --out=runs/tiny_teachers \
        [--tokenizer=../shared/t5-vocab]

Without --tokenizer a small byte-level BPE is trained on synthetic questions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
from tinyllm_jax.teachers.config import TeacherError
from tinyllm_jax.teachers.prompts import FORCED_INSTRUCTION, OPEN_INSTRUCTION

SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5


def train_tokenizer(texts: Iterable[str], vocab_size: int = 600) -> Any:
    """A byte-level BPE (keeps newlines, unlike T5's SentencePiece) with T5's
    special-token ids, as an HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def load_tokenizer_file(source: str | Path) -> Any:
    """An HF fast tokenizer from a `tokenizer.json` or a directory holding one."""
    from transformers import PreTrainedTokenizerFast

    path = Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise TeacherError(f"--tokenizer: {path} not found (expected a tokenizer.json)")
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path), pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def _synthetic_texts(n: int = 400) -> list[str]:
    cfg = SyntheticConfig(train_size=n, valid_size=0, test_size=0)
    examples, _ = generate_split("train", cfg)
    texts = [FORCED_INSTRUCTION, OPEN_INSTRUCTION, "Question:\nOptions:\nAnswer:\nRationale:"]
    for e in examples:
        texts.append(e.input)
        texts.extend(r for r in e.rationales.values() if r)
    return texts


def make_tiny_teachers(
    out_dir: str | Path, tokenizer: Any = None, *, seed: int = 0, width: int = 32
) -> dict[str, Path]:
    """Save `tiny_llama` (causal) and `tiny_t5` (seq2seq) under `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    if tokenizer is None:
        tokenizer = train_tokenizer(_synthetic_texts())
    vocab = len(tokenizer)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    out = Path(out_dir)
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab, hidden_size=width, intermediate_size=2 * width,
            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
            max_position_embeddings=2048, pad_token_id=pad, eos_token_id=eos, bos_token_id=eos,
        )
    )
    t5 = T5ForConditionalGeneration(
        T5Config(
            vocab_size=vocab, d_model=width, d_kv=width // 2, d_ff=2 * width, num_layers=1,
            num_heads=2, decoder_start_token_id=pad, pad_token_id=pad, eos_token_id=eos,
        )
    )
    paths = {}
    for name, model in (("tiny_llama", llama), ("tiny_t5", t5)):
        path = out / name
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[name] = path
    return paths


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for tiny_llama/ and tiny_t5/")
    parser.add_argument("--tokenizer", default="", help="tokenizer.json or a directory with one")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        tokenizer = load_tokenizer_file(args.tokenizer) if args.tokenizer else None
        paths = make_tiny_teachers(args.out, tokenizer, seed=args.seed)
    except TeacherError as err:
        raise SystemExit(f"error: {err}") from None
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
