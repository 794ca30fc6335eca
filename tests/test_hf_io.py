"""HF directory -> our params -> export -> HF load, and bad checkpoint errors."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from tinyllm_jax import Student
from tinyllm_jax.models.hf import CheckpointError, load_hf_checkpoint, save_hf_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["v1_tied_relu", "flan_small_shape", "uneven_layers"])
def test_export_roundtrip_identical_tensors(name, hf_t5_dirs, hf_t5_models, tmp_path):
    cfg, params = load_hf_checkpoint(hf_t5_dirs[name])
    out = save_hf_checkpoint(tmp_path / "export", cfg, params)
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    original = hf_t5_models[name]
    a, b = original.state_dict(), reloaded.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert reloaded.config.scale_decoder_outputs == original.config.scale_decoder_outputs
    # And back into ours: identical numpy arrays.
    cfg2, params2 = load_hf_checkpoint(out)
    assert cfg2 == cfg
    flat = lambda t: {"/".join(map(str, p)): v for p, v in _walk(t)}  # noqa: E731
    f1, f2 = flat(params), flat(params2)
    assert f1.keys() == f2.keys()
    for k in f1:
        np.testing.assert_array_equal(f1[k], f2[k])


def _walk(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _walk(v, (*prefix, k))
        else:
            yield (*prefix, k), np.asarray(v)


def test_pytorch_bin_and_sharded_index(hf_t5_dirs, hf_t5_models, tmp_path):
    model = hf_t5_models["uneven_layers"]
    _, ref_params = load_hf_checkpoint(hf_t5_dirs["uneven_layers"])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = model.lm_head.weight.detach().clone()
    # A .bin checkpoint.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(hf_t5_dirs["uneven_layers"] / "config.json", bin_dir)
    torch.save(state, bin_dir / "pytorch_model.bin")
    cfg, params = load_hf_checkpoint(bin_dir)
    np.testing.assert_array_equal(
        params["decoder"]["logits_dense"], ref_params["decoder"]["logits_dense"]
    )
    # A sharded safetensors checkpoint with an index.
    import safetensors.torch

    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    shutil.copy(hf_t5_dirs["uneven_layers"] / "config.json", shard_dir)
    names = sorted(state)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-0000{i + 1}-of-00002.safetensors"
        safetensors.torch.save_file({k: state[k].contiguous() for k in part}, shard_dir / fname)
        weight_map.update({k: fname for k in part})
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    cfg2, params2 = load_hf_checkpoint(shard_dir)
    assert cfg2 == cfg
    np.testing.assert_array_equal(
        params2["encoder"]["layers_2"]["mlp"]["wo"], ref_params["encoder"]["layers_2"]["mlp"]["wo"]
    )


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_weights_file(hf_t5_dirs, tmp_path):
    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights found; expected model\.safetensors"):
        Student.load(d)


def test_missing_config(hf_t5_dirs, tmp_path):
    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing config\.json"):
        load_hf_checkpoint(d)


def test_unknown_architecture(hf_t5_dirs, tmp_path):
    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    raw = json.loads((d / "config.json").read_text())
    raw.update(model_type="bart", architectures=["BartForConditionalGeneration"])
    (d / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="unknown architecture model_type='bart'"):
        load_hf_checkpoint(d)


def test_wrong_shapes_missing_and_unexpected_listed_together(hf_t5_dirs, tmp_path):
    import safetensors.numpy

    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    state = safetensors.numpy.load_file(str(d / "model.safetensors"))
    state["encoder.block.1.layer.1.DenseReluDense.wo.weight"] = np.zeros((3, 3), np.float32)
    del state["decoder.final_layer_norm.weight"]
    state["encoder.block.9.layer.0.SelfAttention.q.weight"] = np.zeros((32, 32), np.float32)
    safetensors.numpy.save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_hf_checkpoint(d)
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert "missing tensor decoder.final_layer_norm.weight" in msg
    assert "encoder.block.1.layer.1.DenseReluDense.wo.weight has shape (3, 3)" in msg
    assert "unexpected tensor encoder.block.9.layer.0.SelfAttention.q.weight" in msg


def test_truncated_weights_file(hf_t5_dirs, tmp_path):
    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read safetensors file"):
        load_hf_checkpoint(d)


def test_unsupported_activation(hf_t5_dirs, tmp_path):
    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    raw = json.loads((d / "config.json").read_text())
    raw["feed_forward_proj"] = "gated-silu"
    (d / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="feed_forward_proj must be"):
        load_hf_checkpoint(d)


def test_offline_hub_id_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="downloading it from the HF hub failed"):
        load_hf_checkpoint("google/flan-t5-small-does-not-exist")


def _with_config(hf_t5_dirs, tmp_path, **changes):
    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    raw = json.loads((d / "config.json").read_text())
    for key, value in changes.items():
        if value is _DROP:
            raw.pop(key, None)
        else:
            raw[key] = value
    (d / "config.json").write_text(json.dumps(raw))
    return d


_DROP = object()


@pytest.mark.parametrize("changes, message", [
    ({"d_model": "32"}, "d_model must be an integer, got '32' (a string)"),
    ({"num_heads": 4.0}, "num_heads must be an integer, got 4.0 (float)"),
    ({"num_layers": True}, "num_layers must be an integer, got True (a boolean)"),
    ({"d_ff": -64}, "d_ff must be at least 1, got -64"),
    ({"d_kv": 0}, "d_kv must be at least 1, got 0"),
    ({"num_decoder_layers": 0}, "num_decoder_layers must be at least 1, got 0"),
    ({"relative_attention_num_buckets": "16"}, "relative_attention_num_buckets must be an integer"),
    ({"dropout_rate": "0.1"}, "dropout_rate must be a number, got '0.1' (a string)"),
    ({"dropout_rate": 1.5}, "dropout_rate must be in [0, 1], got 1.5"),
    ({"layer_norm_epsilon": 0}, "layer_norm_epsilon must be positive, got 0"),
    ({"tie_word_embeddings": "false"}, "tie_word_embeddings must be true or false, got 'false'"),
    ({"feed_forward_proj": "gated-silu"}, "feed_forward_proj must be 'relu' or 'gated-gelu' "
                                          "(what this model implements), got 'gated-silu': "
                                          "valid for transformers, not here"),
    ({"feed_forward_proj": "swish-gated"}, "got 'swish-gated', which is not a T5 activation"),
    ({"feed_forward_proj": 3}, "feed_forward_proj must be a string, got 3"),
    ({"architectures": "T5ForConditionalGeneration"}, "architectures must be a list"),
    ({"hidden_size": 64}, "hidden_size=64 and d_model=32 disagree"),
])
def test_config_fields_are_checked_with_file_and_field(hf_t5_dirs, tmp_path, changes, message):
    d = _with_config(hf_t5_dirs, tmp_path, **changes)
    with pytest.raises(CheckpointError, match=re.escape(f"{d / 'config.json'}: ") + ".*"
                       + re.escape(message)):
        load_hf_checkpoint(d)


def test_config_that_is_not_an_object_or_not_text(hf_t5_dirs, tmp_path):
    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"config\.json: expected a JSON object of T5 config "
                                              "fields, got a list"):
        load_hf_checkpoint(d)
    (d / "config.json").write_bytes(b'{"d_model": "\xff"}')
    with pytest.raises(CheckpointError, match=r"config\.json: the model config is not UTF-8"):
        load_hf_checkpoint(d)
    (d / "config.json").unlink()
    (d / "config.json").mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json: cannot read the model config"):
        load_hf_checkpoint(d)


def test_missing_optional_fields_take_transformers_defaults(hf_t5_dirs, tmp_path):
    """transformers reads a config without feed_forward_proj as 'relu' (and
    d_kv 64, ...); so must we, or the same files mean another model."""
    d = _with_config(hf_t5_dirs, tmp_path, feed_forward_proj=_DROP)
    assert transformers.T5Config.from_pretrained(d).is_gated_act is False
    cfg, _ = load_hf_checkpoint(d)
    assert cfg.feed_forward_proj == "relu"
    # Field names transformers also accepts, and the gelu_new spelling of gated-gelu.
    d = _with_config(hf_t5_dirs, tmp_path / "b", d_model=_DROP, hidden_size=32)
    assert load_hf_checkpoint(d)[0].d_model == 32
    gated = _copy(hf_t5_dirs["uneven_layers"], tmp_path / "gated")
    raw = json.loads((gated / "config.json").read_text())
    raw["feed_forward_proj"] = "gated-gelu_new"
    (gated / "config.json").write_text(json.dumps(raw))
    assert load_hf_checkpoint(gated)[0].feed_forward_proj == "gated-gelu"


def test_weights_with_nan_or_an_integer_dtype_are_refused(hf_t5_dirs, tmp_path):
    import safetensors.numpy

    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    state = safetensors.numpy.load_file(str(d / "model.safetensors"))
    state["encoder.final_layer_norm.weight"][3] = np.nan
    state["decoder.final_layer_norm.weight"][0] = np.inf
    state["shared.weight"] = state["shared.weight"].astype(np.int32)
    safetensors.numpy.save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_hf_checkpoint(d)
    msg = str(err.value)
    assert "unusable weights (3 problem(s))" in msg
    assert ("tensor encoder.final_layer_norm.weight (model.safetensors) holds 1 non-finite "
            "value(s) (NaN or inf)") in msg
    assert "tensor decoder.final_layer_norm.weight (model.safetensors) holds 1" in msg
    assert "tensor shared.weight has dtype int32, expected a float type" in msg


def test_bfloat16_and_float16_weights_load(hf_t5_dirs, tmp_path):
    import safetensors.torch

    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    state = safetensors.torch.load_file(str(d / "model.safetensors"))
    half = {k: v.to(torch.bfloat16 if i % 2 else torch.float16) for i, (k, v) in
            enumerate(sorted(state.items()))}
    safetensors.torch.save_file(half, str(d / "model.safetensors"), metadata={"format": "pt"})
    _, params = load_hf_checkpoint(d)
    _, ref = load_hf_checkpoint(hf_t5_dirs["v1_tied_relu"])
    np.testing.assert_allclose(params["token_embedder"]["embedding"],
                               ref["token_embedder"]["embedding"], rtol=1e-2, atol=1e-2)


def test_bad_shard_index_and_bin_contents(hf_t5_dirs, tmp_path):
    import safetensors.numpy

    d = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "m")
    (d / "model.safetensors.index.json").write_text("[]")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.index\.json: not a valid shard "
                                              "index"):
        load_hf_checkpoint(d)
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"shared.weight": "../outside.safetensors"}}))
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        load_hf_checkpoint(d)
    # The same tensor in two shards: which one wins would depend on file order.
    state = safetensors.numpy.load_file(str(d / "model.safetensors"))
    safetensors.numpy.save_file(state, str(d / "a.safetensors"))
    safetensors.numpy.save_file({"shared.weight": state["shared.weight"]},
                                str(d / "b.safetensors"))
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: "a.safetensors" for k in state} | {"x": "b.safetensors"}}))
    with pytest.raises(CheckpointError, match=r"tensor shared\.weight is in both a\.safetensors "
                                              r"and b\.safetensors"):
        load_hf_checkpoint(d)
    b = _copy(hf_t5_dirs["v1_tied_relu"], tmp_path / "bin")
    (b / "model.safetensors").unlink()
    torch.save([torch.zeros(2)], b / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: holds a list, not a state dict"):
        load_hf_checkpoint(b)
    torch.save({"shared.weight": torch.zeros(2), "n": 3}, b / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: entry 'n' holds 3, not a "
                                              "tensor"):
        load_hf_checkpoint(b)
