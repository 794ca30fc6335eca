"""piqa with TinyLLM's multi-teacher rationales.

PIQA ships rationales from FLAN-T5 only and no training question file; the
reader recovers the 16,113 training questions from the rationale files and
labels them with the teacher's stated answer (label_source "teacher").
    python -m tinyllm_jax.main --config=configs/piqa.py:size=small,teachers=flan \
        --config.data.data_dir=/path/to/tinyllm --workdir=workdirs/piqa

Args: size=small|base|large|tiny|mini, teachers=flan+llama|flan|llama|none,
tokenizer=t5 (the T5 vocabulary; a directory with tokenizer.json also works).
Start from pretrained weights with --config.init_from=google/flan-t5-small
(or a local HF directory); from scratch otherwise.
"""

from tinyllm_jax.configs import dataset_config


def get_config(arg: str | None = None):
    return dataset_config("piqa", arg, default_teachers="flan")
