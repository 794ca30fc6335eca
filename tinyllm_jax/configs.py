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

from tinyllm_jax.models.t5 import SIZES, T5Config

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
    """"flan+llama" -> ("flan", "llama"); "" or "none" -> ()."""
    if spec in ("", "none"):
        return ()
    return tuple(t for t in spec.replace(",", "+").split("+") if t)


def model_config_dict(size: str, **overrides: Any) -> ml_collections.ConfigDict:
    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose from {sorted(MODEL_SIZES)}")
    fields = dataclasses.asdict(MODEL_SIZES[size])
    fields["num_decoder_layers"] = MODEL_SIZES[size].n_decoder_layers
    fields["scale_decoder_outputs"] = MODEL_SIZES[size].scales_decoder_outputs
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


def to_t5_config(model_cfg: Any) -> T5Config:
    fields = {f.name for f in dataclasses.fields(T5Config)}
    values = {k: v for k, v in dict(model_cfg).items() if k in fields}
    return T5Config(**values)


def base_config(
    *, dataset: str, teachers: tuple[str, ...], size: str = "small", tokenizer: str = "t5",
) -> ml_collections.ConfigDict:
    """Every field a training run reads, with the reference recipe's defaults."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = model_config_dict(
        size, vocab_size=MODEL_VOCAB.get(tokenizer, T5_VOCAB_SIZE)
    )
    # HF T5 directory or hub id to start from ("" = random init).
    c.init_from = ""

    c.data = ml_collections.ConfigDict()
    c.data.name = dataset
    c.data.data_dir = ""
    c.data.rationale_store = ""
    c.data.use_tfds = False
    c.data.tfds_data_dir = ""
    c.data.teachers = tuple(teachers)
    c.data.answer_prefix = "predict: "
    c.data.teacher_prefixes = ()  # () = defaults "explain: ", "rationale: ", ...
    c.data.label_source = "gold"
    c.data.drop_disagreeing = False
    c.data.max_input_len = 512
    c.data.max_target_len = 256
    c.data.packing = True
    c.data.packed_input_len = 0  # 0 = chosen from the data (auto)
    c.data.packed_target_len = 0
    c.data.tokenizer = tokenizer
    c.data.seed = 0
    c.data.train_fraction = 1.0  # data-efficiency runs train on a prefix
    c.data.synthetic = ml_collections.ConfigDict()

    c.loss = ml_collections.ConfigDict()
    c.loss.answer_weight = 1.0  # gamma
    c.loss.rationale_weights = ()  # alpha_k, one per teacher; () = all 1.0
    c.loss.z_loss = 0.0
    c.loss.label_smoothing = 0.0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adamw"  # or "adafactor"
    c.optimizer.lr = 5e-5  # the paper's
    c.optimizer.schedule = "constant"  # "constant", "linear" or "cosine" decay after warm-up
    c.optimizer.warmup_steps = 0
    c.optimizer.end_lr_fraction = 0.0
    c.optimizer.weight_decay = 0.0
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.clip_norm = 1.0  # 0 disables
    c.optimizer.accumulate_steps = 1

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    # > 0: train for this many passes over the training rows instead, so runs
    # whose tasks pack into different row counts see each example equally often.
    c.train.epochs = 0.0
    c.train.batch_size = 16  # global rows per step (packed rows hold several pairs)
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 2
    c.train.keep_best = True
    c.train.async_checkpoints = True
    c.train.eval_batch_size = 64
    # Eval batches shortest pair first, each padded to its own bucketed length
    # (a few compiled shapes) instead of every batch to the longest pair.
    c.train.eval_by_length = True
    c.train.eval_max_new_tokens = 0  # 0 = longest gold answer + 8
    c.train.eval_splits = ("valid",)
    c.train.final_eval_split = "test"
    c.train.rank_choices = True  # also report rank-classification accuracy
    # Validation metric that picks the best checkpoint: accuracy (exact match,
    # as the reference code), accuracy_normalized or accuracy_ranked.
    c.train.best_metric = "accuracy"
    c.train.eval_rationales = False  # also decode each teacher prefix at --mode=eval
    c.train.nonfinite = "stop"  # "stop" or "skip"
    c.train.progress_bar = True
    c.train.plot = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.distributed = ml_collections.ConfigDict()
    # "auto": initialise when the environment names a cluster (TPU pod, SLURM,
    # JAX_COORDINATOR_ADDRESS); "yes" always; "no" never.
    c.distributed.initialize = "auto"
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    return c


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
