"""OpenBookQA rationales from the paper's two teachers, generated anew.

FLAN-T5-xl (seq2seq, plain prompt) and LLaMA-2-7B-chat (causal, its chat
template) with teacher-forced chain of thought: two in-context examples from
the OBQA training split, then the question, the options and the gold answer.
Needs the model weights (HF hub or local copies) and a GPU.

    python -m tinyllm_jax.teachers --config=configs/teachers/obqa.py:data_dir=DIR --dry_run=2
    python -m tinyllm_jax.teachers --config=configs/teachers/obqa.py:data_dir=DIR
    python -m tinyllm_jax.teachers --config=configs/teachers/obqa.py:data_dir=DIR \
        --teachers=llama2_7b_chat --splits=train

Argument: `--config=configs/teachers/obqa.py:data_dir=DIR,device=cuda:0,flan=PATH,llama=PATH`
(model paths default to the hub ids). Output:
runs/rationales/obqa/{flan_t5_xl,llama2_7b_chat}/{train,valid,test}.jsonl;
rerunning resumes. Teacher names differ from the published "flan"/"llama"
(see tinyllm_jax/teachers/importer.py) so both can live in one store. Plain
chain of thought for comparison: `--config.prompt.teacher_forcing=False` with
another `--config.out_dir`.
"""

import ml_collections

from tinyllm_jax.teachers.config import base_config, teacher

_DEFAULTS = {
    # No default: the TinyLLM data root is wherever you put it (the run
    # refuses to start without it and says which field to set).
    "data_dir": "",
    "device": "cuda",
    "flan": "google/flan-t5-xl",
    "llama": "meta-llama/Llama-2-7b-chat-hf",
}


def _args(arg: str | None) -> dict:
    out = dict(_DEFAULTS)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in out:
            raise ValueError(f"config argument {item!r}: expected KEY=VALUE with KEY in {sorted(out)}")
        out[key] = value
    return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = _args(arg)
    config = base_config()
    config.data = ml_collections.ConfigDict(
        {
            "name": "obqa",
            "data_dir": args["data_dir"],
            "rationale_store": "",
            "use_tfds": False,
            # The published FLAN-T5 rationales are what the in-context
            # examples show as worked reasoning.
            "teachers": ("flan",),
            "label_source": "gold",
            "drop_disagreeing": False,
        }
    )
    config.prompt.demo_rationale = "flan"
    config.teachers = ml_collections.ConfigDict(
        {
            "flan_t5_xl": teacher(
                args["flan"],
                kind="seq2seq",
                template="plain",
                device_map=args["device"],
                dtype="bfloat16",
                batch_size=32,
                generation={"max_new_tokens": 128},
            ),
            "llama2_7b_chat": teacher(
                args["llama"],
                kind="causal",
                template="auto",  # the tokenizer's chat template
                backend="auto",  # vLLM when installed, else HF
                device_map=args["device"],
                dtype="bfloat16",
                batch_size=16,
                generation={"max_new_tokens": 256},
            ),
        }
    )
    return config
