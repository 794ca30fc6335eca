"""HF directory -> our params -> export -> HF load, and bad checkpoint errors."""

from __future__ import annotations

import json
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
