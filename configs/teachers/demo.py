"""Teacher rationales for the synthetic task from two tiny random local models.

A smoke run of the whole teacher pipeline with no download: a causal
LlamaForCausalLM and a seq2seq T5ForConditionalGeneration, both random and
tiny, so the rationales are noise but every code path is the real one.

    python -m tinyllm_jax.teachers.tiny --out=runs/tiny_teachers
    python -m tinyllm_jax.teachers --config=configs/teachers/demo.py --dry_run=1
    python -m tinyllm_jax.teachers --config=configs/teachers/demo.py

The argument sets where the tiny models are and how many examples to run:
`--config=configs/teachers/demo.py:models=runs/tiny_teachers,n=-1` (n=-1: all).
Output: runs/rationales/synthetic/{tiny_llama,tiny_t5}/{train,valid,test}.jsonl;
rerunning resumes. The student reads it with
config.data.rationale_store=runs/rationales and
config.data.teachers=("tiny_llama", "tiny_t5").
"""

import ml_collections

from tinyllm_jax.teachers.config import base_config, teacher


def _args(arg: str | None) -> dict:
    out = {"models": "runs/tiny_teachers", "n": "-1"}
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in out:
            raise ValueError(f"config argument {item!r}: expected one of models=DIR, n=INT")
        out[key] = value
    return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = _args(arg)
    config = base_config()
    config.max_examples = int(args["n"])
    config.cpu_threads = 1  # the tiny models are faster on one thread
    config.data = ml_collections.ConfigDict(
        {
            "name": "synthetic",
            "data_dir": "",
            "rationale_store": "",
            "use_tfds": False,
            # The synthetic task's programmatic teachers supply the worked
            # rationales that the in-context demonstrations show.
            "teachers": ("algebra", "verbal"),
            "label_source": "gold",
            "drop_disagreeing": False,
            "seed": 0,
            "synthetic": {"train_size": 400, "valid_size": 50, "test_size": 50, "seed": 0},
        }
    )
    config.teachers = ml_collections.ConfigDict(
        {
            "tiny_llama": teacher(
                f"{args['models']}/tiny_llama", batch_size=32, generation={"max_new_tokens": 24}
            ),
            "tiny_t5": teacher(
                f"{args['models']}/tiny_t5", batch_size=32, generation={"max_new_tokens": 24}
            ),
        }
    )
    return config
