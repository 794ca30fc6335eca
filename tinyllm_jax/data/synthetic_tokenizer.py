"""A small subword vocabulary for the synthetic task, built offline.

The byte tokenizer makes synthetic problems ~150 tokens long; this BPE
vocabulary (512 ids, digits always single tokens so arithmetic stays
compositional) makes them ~3x shorter, which is what lets the demo train on
two CPU cores in minutes. It is trained on the default synthetic training
split with all teachers, so it is the same vocabulary for every synthetic
config, rebuilt identically on every machine, and needs no file.
"""

from __future__ import annotations

import functools

from tinyllm_jax.data.features import DEFAULT_ANSWER_PREFIX, DEFAULT_TEACHER_PREFIXES
from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
from tinyllm_jax.tokenizers import HFTokenizer

SPECIAL = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5
VOCAB_SIZE = 512


@functools.lru_cache(maxsize=2)
def build_synthetic_tokenizer(vocab_size: int = VOCAB_SIZE) -> HFTokenizer:
    """The synthetic task's BPE vocabulary (cached: training it takes seconds)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    teachers = ("algebra", "verbal", "steps")
    examples, _ = generate_split("train", SyntheticConfig(), teachers)
    corpus = [DEFAULT_ANSWER_PREFIX, *DEFAULT_TEACHER_PREFIXES]
    for ex in examples:
        corpus += [ex.input, ex.answer]
        corpus += [r for r in ex.rationales.values() if r]

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return HFTokenizer(tok, source="synthetic")
