"""Shared config building blocks: every configs/*.py composes these.

A config file's `get_config(arg)` takes the text after the colon of
`--config=configs/obqa.py:size=base,teachers=flan+llama`; `parse_arg` turns
it into a dict. The returned ConfigDict is locked by main.py, so a mistyped
`--config.train.lr=...` is an error instead of a silently ignored field.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

import ml_collections

from tinyllm_jax.models.t5_config import SIZES, T5Config
from tinyllm_jax.spec import config_defaults, parse_teachers

# Student shapes by short name. "tiny" and "mini" are for tests and the CPU demo.
MODEL_SIZES: dict[str, T5Config] = {
    "tiny": T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    "mini": T5Config(d_model=128, d_kv=32, d_ff=256, num_layers=3, num_heads=4),
    "small": SIZES["flan-t5-small"],
    "base": SIZES["flan-t5-base"],
    "large": SIZES["flan-t5-large"],
    "xl": SIZES["flan-t5-xl"],
}

# Model vocabulary per tokenizer: T5's 32,100 pieces padded to 32,128 as in
# the released checkpoints; the byte tokenizer's 259 ids padded to 384 as ByT5;
# the synthetic task's BPE vocabulary (at most 512 ids).
T5_VOCAB_SIZE = 32128
MODEL_VOCAB = {"byte": 384, "synthetic": 512}


def parse_arg(arg: str | None, **defaults: Any) -> dict[str, Any]:
    """"size=base,teachers=flan+llama" -> {"size": "base", "teachers": "flan+llama"}.

    Keys must be among `defaults`; values are converted to the default's type.
    """
    out = dict(defaults)
    if not arg:
        return out
    for item in arg.split(","):
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"config argument {item!r} is not key=value (in {arg!r})")
        key, value = item.split("=", 1)
        if key not in defaults:
            raise ValueError(
                f"unknown config argument {key!r}; this config takes {sorted(defaults)}"
            )
        kind = type(defaults[key])
        if kind is bool:
            out[key] = value.lower() in ("1", "true", "yes")
        elif kind in (int, float):
            out[key] = kind(value)
        else:
            out[key] = value
    return out


def split_teachers(spec: str) -> tuple[str, ...]:
    """"flan+llama" -> ("flan", "llama"); "" or "none" -> () (the spec's one syntax)."""
    return parse_teachers(spec)


def model_config_dict(size: str, **overrides: Any) -> ml_collections.ConfigDict:
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose from {sorted(MODEL_SIZES)}")
    fields = dataclasses.asdict(MODEL_SIZES[size])
    fields["num_decoder_layers"] = MODEL_SIZES[size].n_decoder_layers
    fields["scale_decoder_outputs"] = MODEL_SIZES[size].scales_decoder_outputs
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


def base_config(
    *, dataset: str, teachers: tuple[str, ...], size: str = "small", tokenizer: str = "t5",
) -> ml_collections.ConfigDict:
    """Every field a run reads, with the defaults of `tinyllm_jax.spec` (one place)."""
    fields = config_defaults()
    fields["model"] = model_config_dict(size, vocab_size=MODEL_VOCAB.get(tokenizer, T5_VOCAB_SIZE))
    fields["data"].update(name=dataset, teachers=tuple(teachers), tokenizer=tokenizer)
    return ml_collections.ConfigDict(fields)


def dataset_config(name: str, arg: str | None, default_teachers: str) -> ml_collections.ConfigDict:
    """A TinyLLM dataset run: `size=small|base|large`, `teachers=flan+llama|flan|none`."""
    a = parse_arg(arg, size="small", teachers=default_teachers, tokenizer="t5")
    c = base_config(dataset=name, teachers=split_teachers(a["teachers"]), size=a["size"],
                    tokenizer=a["tokenizer"])
    c.data.data_dir = ""  # set --config.data.data_dir=/path/to/tinyllm (the manual dir)
    c.train.steps = 10000
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    return c


def load_config_file(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config file, as `--config=path:arg` would call it."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
