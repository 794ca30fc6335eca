"""An HF T5 `config.json` <-> our T5Config, every field checked.

transformers itself accepts a config only with the right types (its T5Config
is a strict dataclass), takes a missing field from its own defaults, and
knows a few fields under other names (`hidden_size` for `d_model`, ...).
This module follows it, so a directory loads here exactly when it loads
there and means the same model; what transformers accepts but this model
does not implement (another activation) is named as such. Every problem is
one `CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tinyllm_jax.models.t5_config import T5Config


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be read as an HF T5 model."""


CONFIG_FIELDS = (
    "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
    "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate",
    "layer_norm_epsilon", "feed_forward_proj",
)
# We require these although transformers has defaults for them: a config
# without the model's size is more likely cut short than meant to be t5-small.
REQUIRED = ("d_model", "num_layers", "num_heads", "vocab_size")
# transformers.T5Config's defaults (not ours: ours are FLAN-T5-small's).
HF_DEFAULTS: dict[str, Any] = {
    "d_kv": 64, "d_ff": 2048, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "dropout_rate": 0.1, "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "relu",
}
# transformers.T5Config.attribute_map: other names it reads these fields under.
ALIASES = {"hidden_size": "d_model", "num_attention_heads": "num_heads",
           "num_hidden_layers": "num_layers", "head_dim": "d_kv"}
POSITIVE_INTS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                 "relative_attention_num_buckets", "relative_attention_max_distance")
# HF runs "gated-gelu" with its gelu_new activation, which is what our gated
# MLP computes; "gated-gelu_new" spells the same thing.
IMPLEMENTED_ACTIVATIONS = {"relu": "relu", "gated-gelu": "gated-gelu",
                           "gated-gelu_new": "gated-gelu"}


def _type_name(value: Any) -> str:
    return "null" if value is None else {str: "a string", bool: "a boolean", list: "a list",
                                         dict: "an object"}.get(type(value), type(value).__name__)


def _check_fields(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """The T5Config keyword arguments of a parsed config.json object."""
    fields = dict(raw)
    for alias, name in ALIASES.items():
        if alias in fields:
            if name in fields and fields[name] != fields[alias]:
                raise CheckpointError(f"{source}: {alias}={fields[alias]!r} and {name}="
                                      f"{fields[name]!r} disagree (they name the same field)")
            fields.setdefault(name, fields[alias])
    missing = [f for f in REQUIRED if f not in fields]
    if missing:
        raise CheckpointError(f"{source}: missing required fields {missing}")
    fields = {**HF_DEFAULTS, **{k: v for k, v in fields.items() if v is not None}}

    def bad(field: str, want: str) -> CheckpointError:
        value = fields[field]
        return CheckpointError(f"{source}: unsupported T5 config: {field} must be {want}, got "
                               f"{value!r} ({_type_name(value)})")

    for name in (*POSITIVE_INTS, "num_decoder_layers"):
        if name not in fields:
            continue
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(name, "an integer")
        if value < 1:
            raise bad(name, "at least 1")
    for name, low_ok in (("dropout_rate", True), ("layer_norm_epsilon", False)):
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad(name, "a number")
        if value < 0 or (value == 0 and not low_ok) or (name == "dropout_rate" and value > 1):
            raise bad(name, "in [0, 1]" if name == "dropout_rate" else "positive")
    for name in ("tie_word_embeddings", "scale_decoder_outputs"):
        if name in fields and not isinstance(fields[name], bool):
            raise bad(name, "true or false")
    proj = fields["feed_forward_proj"]
    if not isinstance(proj, str):
        raise bad("feed_forward_proj", "a string")
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or not all(parts):
        raise CheckpointError(
            f"{source}: unsupported T5 config: feed_forward_proj must be 'relu' or 'gated-gelu', "
            f"got {proj!r}, which is not a T5 activation at all (transformers accepts 'ACT' or "
            "'gated-ACT')")
    if proj not in IMPLEMENTED_ACTIVATIONS:
        raise CheckpointError(
            f"{source}: unsupported T5 config: feed_forward_proj must be 'relu' or 'gated-gelu' "
            f"(what this model implements), got {proj!r}: valid for transformers, not here")
    kwargs = {f: fields[f] for f in CONFIG_FIELDS if f in fields}
    kwargs["feed_forward_proj"] = IMPLEMENTED_ACTIVATIONS[proj]
    return kwargs


def config_from_hf(hf_config: Any, source: str = "config.json") -> T5Config:
    """Our T5Config from the parsed `config.json` of an HF T5 checkpoint."""
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{source}: expected a JSON object of T5 config fields, got "
                              f"{_type_name(hf_config)}")
    model_type = hf_config.get("model_type")
    archs = hf_config.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise CheckpointError(f"{source}: architectures must be a list of class names, got "
                              f"{archs!r}")
    if model_type not in ("t5", None) or (archs and not any("T5" in a for a in archs)):
        raise CheckpointError(
            f"{source}: unknown architecture model_type={model_type!r} architectures={archs}; "
            "expected an HF T5 encoder-decoder (model_type 't5', T5ForConditionalGeneration)"
        )
    kwargs = _check_fields(hf_config, source)
    # HF: a config that does not say `tie_word_embeddings: false` is v1.0
    # (tied, scaled). Whether the head is really tied also depends on the
    # tensors (see load_hf_checkpoint); the scaling depends only on this flag.
    v1_0 = hf_config.get("tie_word_embeddings", True) is not False
    kwargs["tie_word_embeddings"] = v1_0
    # Configs saved by transformers 5 also store the resolved flag, which wins.
    resolved = hf_config.get("scale_decoder_outputs")
    kwargs["scale_decoder_outputs"] = v1_0 if resolved is None else resolved
    try:
        return T5Config(**kwargs)
    except ValueError as e:
        raise CheckpointError(f"{source}: unsupported T5 config: {e}") from e


def config_to_hf(cfg: T5Config) -> dict[str, Any]:
    d = {f: getattr(cfg, f) for f in CONFIG_FIELDS}
    d["num_decoder_layers"] = cfg.n_decoder_layers
    d.update(
        architectures=["T5ForConditionalGeneration"], model_type="t5", is_encoder_decoder=True,
        # HF derives the output scaling from this flag alone; an untied head
        # is recognised from the distinct lm_head.weight we always write then.
        tie_word_embeddings=cfg.scales_decoder_outputs,
        scale_decoder_outputs=cfg.scales_decoder_outputs, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0, dense_act_fn="gelu_new" if cfg.gated else "relu",
        is_gated_act=cfg.gated, initializer_factor=1.0, use_cache=True,
    )
    return d


def read_json(path: Path, what: str) -> Any:
    """A JSON file's value; CheckpointError naming the file for anything else
    (missing, a directory, not UTF-8, not JSON)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(f"{path.parent}: missing {path.name}") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read {what} ({e.strerror or e})") from e
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: {what} is not UTF-8 text ({e.reason} at byte "
                              f"{e.start})") from e
