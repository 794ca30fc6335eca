"""bioasq with TinyLLM's multi-teacher rationales.

BioASQ is not in ../shared. The authors publish it in the TinyLLM layout in
github.com/YikunHan42/TinyLLM under datasets/bioasq/: bioasq_{train,valid,test}.json
(976 / 109 / 123 yes/no questions, JSON arrays of {id, question, choices, answer})
and llm/{train_CoT_0,train_CoT_1,valid_CoT_0,test_CoT_0}.json (the FLAN-T5 and
LLaMA-2 teacher strings, 500 per chunk). Clone that repository and point data_dir
at its datasets/ directory. The questions come from BioASQ's releases
(participants-area.bioasq.org/datasets, registration needed). New rationales:
configs/teachers/bioasq.py.
    python -m tinyllm_jax.main --config=configs/bioasq.py:size=small,teachers=flan+llama \
        --config.data.data_dir=/path/to/tinyllm --workdir=workdirs/bioasq

Args: size=small|base|large|tiny|mini, teachers=flan+llama|flan|llama|none,
tokenizer=t5 (the T5 vocabulary; a directory with tokenizer.json also works).
Start from pretrained weights with --config.init_from=google/flan-t5-small
(or a local HF directory); from scratch otherwise.
"""

from tinyllm_jax.configs import dataset_config


def get_config(arg: str | None = None):
    return dataset_config("bioasq", arg, default_teachers="flan+llama")
