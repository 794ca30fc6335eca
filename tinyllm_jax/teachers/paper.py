"""The TinyLLM paper's two teachers on one dataset, as a teacher config.

    config = paper_config("arc", "data_dir=DIR,device=cuda:0,flan=PATH,llama=PATH")

FLAN-T5-xl (seq2seq, plain prompt) and LLaMA-2-7B-chat (causal, its chat
template) with teacher-forced chain of thought: k in-context examples from
the training split, then the question, the options and the gold answer
(TinyLLM README, "Obtaining Rationales"). configs/teachers/<dataset>.py call
this; model paths default to the hub ids. The paper's in-context example
generator (each teacher writes its own demos first): add
`--config.prompt.generate_demos=True` (teachers/demo_generator.py).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from tinyllm_jax.teachers.config import base_config, teacher

DEFAULTS = {
    # No default: the TinyLLM data root is wherever the user put it (the run
    # refuses to start without it and says which field to set).
    "data_dir": "",
    "device": "cuda",
    "flan": "google/flan-t5-xl",
    "llama": "meta-llama/Llama-2-7b-chat-hf",
}
# LLaMA-2's context is 4,096 tokens; the prompt must leave room for the reply.
LLAMA_CONTEXT = 4096
FLAN_NEW_TOKENS, LLAMA_NEW_TOKENS = 128, 256


def parse_args(arg: str | None, **defaults: str) -> dict[str, str]:
    """"data_dir=D,flan=P" -> the DEFAULTS (and `defaults`) with those replaced."""
    out = {**DEFAULTS, **defaults}
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in out:
            raise ValueError(f"config argument {item!r}: expected KEY=VALUE with KEY in {sorted(out)}")
        out[key] = value
    return out


def paper_config(dataset: str, arg: str | None, *, limit_llama_prompt: bool = False,
                 **defaults: str) -> ml_collections.ConfigDict:
    """The teacher config of `dataset`. The published FLAN-T5 rationales are
    what the in-context examples show as worked reasoning. With
    `limit_llama_prompt` (long inputs: PubMedQA, BioASQ), LLaMA-2 prompts that
    would overflow its context drop demos until they fit."""
    args = parse_args(arg, **defaults)
    config = base_config()
    config.data = ml_collections.ConfigDict(
        {
            "name": dataset,
            "data_dir": args["data_dir"],
            "rationale_store": "",
            "use_tfds": False,
            "teachers": ("flan",),
            "label_source": "gold",
            "drop_disagreeing": False,
        }
    )
    config.prompt.demo_rationale = "flan"
    llama: dict[str, Any] = {}
    if limit_llama_prompt:
        llama["max_prompt_tokens"] = LLAMA_CONTEXT - LLAMA_NEW_TOKENS
    config.teachers = ml_collections.ConfigDict(
        {
            "flan_t5_xl": teacher(
                args["flan"], kind="seq2seq", template="plain", device_map=args["device"],
                dtype="bfloat16", batch_size=32, generation={"max_new_tokens": FLAN_NEW_TOKENS},
            ),
            "llama2_7b_chat": teacher(
                args["llama"],
                kind="causal",
                template="auto",  # the tokenizer's chat template
                backend="auto",  # vLLM when installed, else HF
                device_map=args["device"],
                dtype="bfloat16",
                batch_size=16,
                generation={"max_new_tokens": LLAMA_NEW_TOKENS},
                **llama,
            ),
        }
    )
    return config
