"""Hugging Face T5 checkpoint directory <-> our config and parameters.

Reads `config.json` plus `model.safetensors`, `pytorch_model.bin` or a
sharded `*.index.json`; writes a directory that
`transformers.T5ForConditionalGeneration.from_pretrained` loads. Only
`config.json` is parsed by us (no transformers import), so importing a
safetensors checkpoint needs neither transformers nor torch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from flax import linen as nn

from tinyllm_jax.atomic import write_bytes_atomic, write_json_atomic
from tinyllm_jax.models.t5 import T5Config, abstract_params

log = logging.getLogger(__name__)

Params = dict[str, Any]


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be read as an HF T5 model."""


# --- tensor name mapping ----------------------------------------------------
# Each entry: HF name, our param path, shape transform into ours, and back.
_Transform = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class _Entry:
    hf: str
    ours: tuple[str, ...]
    to_ours: _Transform
    to_hf: _Transform


def _ident(x: np.ndarray) -> np.ndarray:
    return x


def _t(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.T)


def _entries(cfg: T5Config) -> list[_Entry]:
    h, dk, d = cfg.num_heads, cfg.d_kv, cfg.d_model

    def qkv_in(x: np.ndarray) -> np.ndarray:  # HF [h*dk, d] -> ours [d, h, dk]
        return np.ascontiguousarray(x.T.reshape(d, h, dk))

    def qkv_out(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.reshape(d, h * dk).T)

    def o_in(x: np.ndarray) -> np.ndarray:  # HF [d, h*dk] -> ours [h, dk, d]
        return np.ascontiguousarray(x.T.reshape(h, dk, d))

    def o_out(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.reshape(h * dk, d).T)

    out = [_Entry("shared.weight", ("token_embedder", "embedding"), _ident, _ident)]

    def attention(hf: str, ours: tuple[str, ...]) -> None:
        for p in ("q", "k", "v"):
            name = {"q": "query", "k": "key", "v": "value"}[p]
            out.append(_Entry(f"{hf}.{p}.weight", (*ours, name), qkv_in, qkv_out))
        out.append(_Entry(f"{hf}.o.weight", (*ours, "out"), o_in, o_out))

    def mlp(hf: str, ours: tuple[str, ...]) -> None:
        names = ("wi_0", "wi_1") if cfg.gated else ("wi",)
        for n in (*names, "wo"):
            out.append(_Entry(f"{hf}.DenseReluDense.{n}.weight", (*ours, n), _t, _t))

    def norm(hf: str, ours: tuple[str, ...]) -> None:
        out.append(_Entry(f"{hf}.weight", (*ours, "scale"), _ident, _ident))

    for stack, n_layers in (("encoder", cfg.num_layers), ("decoder", cfg.n_decoder_layers)):
        out.append(
            _Entry(
                f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                (stack, "relpos_bias", "rel_embedding"), _ident, _ident,
            )
        )
        for i in range(n_layers):
            b, o = f"{stack}.block.{i}.layer", (stack, f"layers_{i}")
            if stack == "encoder":
                norm(f"{b}.0.layer_norm", (*o, "pre_attention_layer_norm"))
                attention(f"{b}.0.SelfAttention", (*o, "attention"))
                norm(f"{b}.1.layer_norm", (*o, "pre_mlp_layer_norm"))
                mlp(f"{b}.1", (*o, "mlp"))
            else:
                norm(f"{b}.0.layer_norm", (*o, "pre_self_attention_layer_norm"))
                attention(f"{b}.0.SelfAttention", (*o, "self_attention"))
                norm(f"{b}.1.layer_norm", (*o, "pre_cross_attention_layer_norm"))
                attention(f"{b}.1.EncDecAttention", (*o, "encoder_decoder_attention"))
                norm(f"{b}.2.layer_norm", (*o, "pre_mlp_layer_norm"))
                mlp(f"{b}.2", (*o, "mlp"))
        norm(f"{stack}.final_layer_norm", (stack, f"{stack}_norm"))
    if not cfg.tie_word_embeddings:
        out.append(_Entry("lm_head.weight", ("decoder", "logits_dense"), _t, _t))
    return out


# Copies of `shared.weight` that some checkpoints also store.
_TIED_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


# --- config -----------------------------------------------------------------

_CONFIG_FIELDS = (
    "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
    "relative_attention_num_buckets", "relative_attention_max_distance", "dropout_rate",
    "layer_norm_epsilon", "feed_forward_proj",
)


def config_from_hf(hf_config: dict[str, Any], source: str = "config.json") -> T5Config:
    """Our T5Config from the parsed `config.json` of an HF T5 checkpoint."""
    model_type = hf_config.get("model_type")
    archs = hf_config.get("architectures") or []
    if model_type not in ("t5", None) or (archs and not any("T5" in a for a in archs)):
        raise CheckpointError(
            f"{source}: unknown architecture model_type={model_type!r} architectures={archs}; "
            "expected an HF T5 encoder-decoder (model_type 't5', T5ForConditionalGeneration)"
        )
    missing = [f for f in ("d_model", "num_layers", "num_heads", "vocab_size") if f not in hf_config]
    if missing:
        raise CheckpointError(f"{source}: missing required fields {missing}")
    kwargs = {f: hf_config[f] for f in _CONFIG_FIELDS if hf_config.get(f) is not None}
    # HF: a config that does not say `tie_word_embeddings: false` is v1.0
    # (tied, scaled). Whether the head is really tied also depends on the
    # tensors (see load_hf_checkpoint); the scaling depends only on this flag.
    v1_0 = hf_config.get("tie_word_embeddings", True) is not False
    kwargs["tie_word_embeddings"] = v1_0
    # Configs saved by transformers 5 also store the resolved flag, which wins.
    kwargs["scale_decoder_outputs"] = bool(hf_config.get("scale_decoder_outputs", v1_0))
    try:
        return T5Config(**kwargs)
    except ValueError as e:
        raise CheckpointError(f"{source}: unsupported T5 config: {e}") from e


def config_to_hf(cfg: T5Config) -> dict[str, Any]:
    d = {f: getattr(cfg, f) for f in _CONFIG_FIELDS}
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


# --- reading tensors --------------------------------------------------------


def _iter_tensor_files(directory: Path) -> Iterator[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a valid shard index ({e})") from e
            for shard in sorted(set(weight_map.values())):
                if not (directory / shard).exists():
                    raise CheckpointError(f"{index}: names shard {shard!r}, which is missing")
                yield directory / shard
            return
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (directory / single).exists():
            yield directory / single
            return
    raise CheckpointError(
        f"{directory}: no weights found; expected model.safetensors, pytorch_model.bin or a "
        "*.index.json shard index"
    )


def _read_tensor_file(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises several types on bad files
            raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from e
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(
            f"{path}: reading .bin checkpoints needs torch (pip install 'tinyllm_jax[hf]')"
        ) from e
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read PyTorch checkpoint ({e})") from e
    return {k: v.float().numpy() for k, v in state.items()}


def resolve_checkpoint_dir(path_or_id: str | os.PathLike) -> Path:
    """A local directory, or an HF hub id downloaded through huggingface_hub."""
    path = Path(path_or_id)
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: expected a checkpoint directory, found a file")
    if str(path_or_id).count("/") != 1:
        raise CheckpointError(f"{path}: no such directory (and not an HF hub id 'org/name')")
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                str(path_or_id),
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.bin"],
            )
        )
    except Exception as e:
        raise CheckpointError(
            f"{path_or_id}: not a local directory, and downloading it from the HF hub failed "
            f"({type(e).__name__}: {e}). Download it on a machine with internet access and "
            "pass the local directory."
        ) from e


def load_hf_config(path_or_id: str | os.PathLike) -> T5Config:
    directory = resolve_checkpoint_dir(path_or_id)
    cfg_path = directory / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{directory}: missing config.json")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    return config_from_hf(raw, str(cfg_path))


def load_hf_checkpoint(
    path_or_id: str | os.PathLike, **config_overrides: Any
) -> tuple[T5Config, Params]:
    """(config, params) from an HF T5 directory; params are float32 numpy.

    Every missing, unexpected or mis-shaped tensor is collected first and
    reported in one error, so a user fixes the checkpoint in one go.
    """
    directory = resolve_checkpoint_dir(path_or_id)
    cfg = load_hf_config(directory)
    tensors: dict[str, np.ndarray] = {}
    for f in _iter_tensor_files(directory):
        tensors.update(_read_tensor_file(f))
    head, shared = tensors.get("lm_head.weight"), tensors.get("shared.weight")
    if (
        cfg.tie_word_embeddings and head is not None and shared is not None
        and (head.shape != shared.shape or not np.array_equal(head, shared))
    ):
        # As transformers does: a distinct head in the file is used untied,
        # while the output scaling still follows config.json.
        cfg = cfg.replace(tie_word_embeddings=False)
    cfg = cfg.replace(**config_overrides)

    entries = _entries(cfg)
    expected = {e.hf for e in entries}
    problems: list[str] = []
    if not cfg.tie_word_embeddings and "lm_head.weight" not in tensors and "shared.weight" in tensors:
        # HF loads such a checkpoint with the head tied to the embedding but
        # without v1.0's output scaling; reproduce that exactly.
        log.warning("%s: untied config without lm_head.weight; using shared.weight as LM head",
                    directory)
        tensors["lm_head.weight"] = tensors["shared.weight"]
    params: Params = {}
    for e in entries:
        if e.hf not in tensors:
            problems.append(f"missing tensor {e.hf}")
            continue
        value = e.to_ours(np.asarray(tensors[e.hf], dtype=np.float32))
        want = _expected_shape(cfg, e.ours)
        if value.shape != want:
            problems.append(
                f"tensor {e.hf} has shape {tuple(tensors[e.hf].shape)}, expected a shape that "
                f"maps to {want}"
            )
            continue
        node = params
        for k in e.ours[:-1]:
            node = node.setdefault(k, {})
        node[e.ours[-1]] = value
    allowed_extra = set(_TIED_ALIASES) | ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
    unexpected = sorted(set(tensors) - expected - allowed_extra)
    problems += [f"unexpected tensor {k} {tuple(tensors[k].shape)}" for k in unexpected]
    if problems:
        listing = "\n  ".join(problems)
        raise CheckpointError(
            f"{directory}: checkpoint does not match its config.json "
            f"({len(problems)} problem(s)):\n  {listing}"
        )
    return cfg, params


def _expected_shape(cfg: T5Config, path: tuple[str, ...]) -> tuple[int, ...]:
    node = _abstract_unboxed(cfg)
    for k in path:
        node = node[k]
    return tuple(node.shape)


_ABSTRACT_CACHE: dict[T5Config, Any] = {}


def _abstract_unboxed(cfg: T5Config) -> Any:
    key = cfg.replace(dtype="float32", remat="none", dropout_rate=0.0)
    if key not in _ABSTRACT_CACHE:
        _ABSTRACT_CACHE[key] = nn.meta.unbox(abstract_params(key))
    return _ABSTRACT_CACHE[key]


# --- writing ----------------------------------------------------------------


def hf_state_dict(cfg: T5Config, params: Params) -> dict[str, np.ndarray]:
    """Our params as HF-named float32 numpy tensors."""
    params = nn.meta.unbox(params)
    out: dict[str, np.ndarray] = {}
    for e in _entries(cfg):
        node = params
        for k in e.ours:
            node = node[k]
        out[e.hf] = e.to_hf(np.asarray(node, dtype=np.float32))
    return out


def save_hf_checkpoint(
    directory: str | os.PathLike, cfg: T5Config, params: Params, tokenizer: Any = None
) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files) for transformers."""
    from safetensors.numpy import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = hf_state_dict(cfg, params)
    write_bytes_atomic(directory / "model.safetensors", save(state, metadata={"format": "pt"}))
    write_json_atomic(directory / "config.json", config_to_hf(cfg))
    if tokenizer is not None and hasattr(tokenizer, "save"):
        tokenizer.save(directory)
    return directory
