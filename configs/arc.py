"""arc with TinyLLM's multi-teacher rationales.

    python -m tinyllm_jax.main --config=configs/arc.py:size=small,teachers=flan+llama \
        --config.data.data_dir=/path/to/tinyllm --workdir=workdirs/arc

Args: size=small|base|large|tiny|mini, teachers=flan+llama|flan|llama|none,
tokenizer=t5 (the T5 vocabulary; a directory with tokenizer.json also works).
Start from pretrained weights with --config.init_from=google/flan-t5-small
(or a local HF directory); from scratch otherwise.
"""

from tinyllm_jax.configs import dataset_config


def get_config(arg: str | None = None):
    return dataset_config("arc", arg, default_teachers="flan+llama")
