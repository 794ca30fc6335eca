"""Hugging Face T5 checkpoint directory <-> our config and parameters.

Reads `config.json` plus `model.safetensors`, `pytorch_model.bin` or a
sharded `*.index.json`; writes a directory that
`transformers.T5ForConditionalGeneration.from_pretrained` loads. Only
`config.json` is parsed by us (no transformers import), so importing a
safetensors checkpoint needs neither transformers nor torch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from flax import linen as nn

from tinyllm_jax.atomic import write_bytes_atomic, write_json_atomic
from tinyllm_jax.models.hf_config import CheckpointError, config_from_hf, config_to_hf, read_json
from tinyllm_jax.models.layer_stacking import to_layout, unstack_layers
from tinyllm_jax.models.t5 import T5Config, abstract_params

log = logging.getLogger(__name__)

Params = dict[str, Any]


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
    """The mapping in the unrolled layout (`layers_{i}`); scanned params are
    converted before writing and after reading (models/layer_stacking.py)."""
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


# --- reading tensors --------------------------------------------------------


def _shard_files(index: Path) -> list[str]:
    """The shard file names a `*.index.json` lists."""
    data = read_json(index, "the shard index")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) and v for v in weight_map.values()):
        raise CheckpointError(f"{index}: not a valid shard index (expected an object whose "
                              "'weight_map' maps tensor names to shard file names)")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if Path(shard).is_absolute() or ".." in Path(shard).parts:
            raise CheckpointError(f"{index}: names shard {shard!r}, outside the checkpoint "
                                  "directory")
    return shards


def _iter_tensor_files(directory: Path) -> Iterator[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.exists():
            for shard in _shard_files(index):
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


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out: dict[str, Any] = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                try:
                    out[name] = f.get_tensor(name)
                except TypeError:  # bfloat16: numpy lacks the type, jax (ml_dtypes) has it
                    out[name] = None
        if bf16 := [name for name, value in out.items() if value is None]:
            with safe_open(str(path), framework="flax") as f:
                for name in bf16:
                    out[name] = np.asarray(f.get_tensor(name))
    except Exception as e:  # safetensors raises several types on bad files
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from e
    return out


def _read_tensor_file(path: Path) -> dict[str, np.ndarray]:
    """Named tensors as numpy arrays: floats as stored (bfloat16 through
    ml_dtypes) from safetensors, float32 from .bin; other dtypes as they are,
    for the caller to report."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
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
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of "
                              "named tensors")
    out = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} holds {value!r:.60}, not a tensor")
        out[str(name)] = value.float().numpy() if value.is_floating_point() else value.numpy()
    return out


_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _read_tensors(directory: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """(every tensor of the checkpoint, problems with their files or values)."""
    tensors: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    problems = []
    for f in _iter_tensor_files(directory):
        for name, value in _read_tensor_file(f).items():
            if name in tensors:
                problems.append(f"tensor {name} is in both {where[name]} and {f.name}")
            tensors[name], where[name] = value, f.name
    for name, value in tensors.items():
        if value.dtype.name not in _FLOAT_DTYPES:
            problems.append(f"tensor {name} has dtype {value.dtype.name}, expected a float type "
                            f"({', '.join(_FLOAT_DTYPES)})")
            continue
        # NaN or inf weights give non-finite logits for every input.
        bad = int(value.size - np.count_nonzero(np.isfinite(value.astype(np.float32))))
        if bad:
            problems.append(f"tensor {name} ({where[name]}) holds {bad} non-finite value(s) "
                            "(NaN or inf)")
    return tensors, problems


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
    return config_from_hf(read_json(cfg_path, "the model config"), str(cfg_path))


def load_hf_checkpoint(
    path_or_id: str | os.PathLike, **config_overrides: Any
) -> tuple[T5Config, Params]:
    """(config, params) from an HF T5 directory; params are float32 numpy, in
    the layout of the config's `scan_layers` (which an override may set).

    Every missing, unexpected or mis-shaped tensor is collected first and
    reported in one error, so a user fixes the checkpoint in one go.
    """
    directory = resolve_checkpoint_dir(path_or_id)
    cfg = load_hf_config(directory)
    tensors, problems = _read_tensors(directory)
    if problems:
        listing = "\n  ".join(problems)
        raise CheckpointError(f"{directory}: unusable weights ({len(problems)} problem(s)):"
                              f"\n  {listing}")
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
    return cfg, to_layout(params, cfg.scan_layers)


def _expected_shape(cfg: T5Config, path: tuple[str, ...]) -> tuple[int, ...]:
    node = _abstract_unboxed(cfg)
    for k in path:
        node = node[k]
    return tuple(node.shape)


_ABSTRACT_CACHE: dict[T5Config, Any] = {}


def _abstract_unboxed(cfg: T5Config) -> Any:
    key = cfg.replace(dtype="float32", remat="none", dropout_rate=0.0, scan_layers=False)
    if key not in _ABSTRACT_CACHE:
        _ABSTRACT_CACHE[key] = nn.meta.unbox(abstract_params(key))
    return _ABSTRACT_CACHE[key]


# --- writing ----------------------------------------------------------------


def hf_state_dict(cfg: T5Config, params: Params) -> dict[str, np.ndarray]:
    """Our params (either layout) as HF-named float32 numpy tensors."""
    params = unstack_layers(nn.meta.unbox(params))
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
