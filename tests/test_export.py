"""python -m tinyllm_jax.export and Student.push_to_hub: the folder transformers loads,
the refusals, and the Hub calls (huggingface_hub's API replaced, nothing uploaded)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import linen as nn

from tinyllm_jax import Student, export, hub
from tinyllm_jax.checkpoint import Checkpointer, run_meta
from tinyllm_jax.models.t5 import T5Config, abstract_params
from tinyllm_jax.tokenizers import ByteTokenizer

CONFIG = T5Config(vocab_size=384, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A workdir as training leaves it: steps 2 and 5 (5 the latest), byte tokenizer."""
    work = tmp_path_factory.mktemp("export") / "run"
    meta = run_meta(CONFIG, teachers=("algebra",), tokenizer="byte", dataset="mine", vocab=259)
    ckpt = Checkpointer(work, keep=5, keep_best=False, async_save=False)
    # Random values of the right shapes: a jitted init costs seconds, and the
    # export only needs weights that are not all alike.
    rng = np.random.default_rng(0)
    shapes = nn.meta.unbox(abstract_params(CONFIG))
    params = jax.tree.map(lambda x: rng.normal(0, 0.3, x.shape).astype(np.float32), shapes)
    for step in (2, 5):
        params = jax.tree.map(lambda x: x * 1.1, params)  # the two steps differ
        ckpt.save(step, {"params": params}, {"seed": 0, "epoch": 0, "position": 0}, meta,
                  force=True)
    ckpt.wait()
    ckpt.close()
    return work


def test_export_loads_with_transformers(workdir, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out, student = export.export_workdir(workdir, tmp_path / "hf", which="latest")
    assert student.checkpoint_step == 5
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "README.md"} <= \
        {p.name for p in out.iterdir()}
    assert not list(tmp_path.glob(".*partial"))
    model = transformers.T5ForConditionalGeneration.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = "predict: Ann has 3 pens."
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == ByteTokenizer().encode(text) + [1]
    decoder = torch.tensor([[0, 7, 9]])
    with torch.no_grad():
        theirs = model(input_ids=ids, decoder_input_ids=decoder).logits.numpy()
    ours = student.logits(ids.numpy(), np.ones_like(ids.numpy()), decoder.numpy())
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    card = (out / "README.md").read_text()
    assert "checkpoint step: 5" in card and "dataset: mine" in card and "algebra" in card


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "absent", "no such directory"),
    (lambda d: d, r"not a training workdir \(no checkpoints/"),
])
def test_bad_workdir_is_refused(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        export.export_workdir(make(tmp_path), tmp_path / "out")


def test_existing_out_is_refused_and_empty_checkpoints_named(workdir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        export.export_workdir(workdir, tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        export.export_workdir(workdir, tmp_path / "file")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint to load"):
        export.export_workdir(tmp_path / "empty", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


class FakeHub:
    """Records what would have gone to the Hub, and what the folder held then."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        if self.fail:
            raise self.fail

    def upload_folder(self, **kwargs):
        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        self.calls.append(("upload_folder", kwargs["repo_id"], {**kwargs, "files": files}))

        class Info:
            commit_url = f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"
        return Info()


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    import huggingface_hub

    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub, "create_repo", fake.create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", fake.upload_folder)
    return fake


def test_push_to_hub_creates_the_repo_and_uploads_the_export(workdir, fake_hub):
    student = Student.from_workdir(workdir, which="latest")
    url = student.push_to_hub("me/tiny-student", private=True, token="hf_x")
    assert url == "https://huggingface.co/me/tiny-student/commit/abc"
    (c_name, c_repo, c_kw), (u_name, u_repo, u_kw) = fake_hub.calls
    assert (c_name, c_repo, u_name, u_repo) == ("create_repo", "me/tiny-student",
                                                "upload_folder", "me/tiny-student")
    assert c_kw == {"token": "hf_x", "private": True, "repo_type": "model", "exist_ok": True}
    assert u_kw["token"] == "hf_x" and u_kw["repo_type"] == "model"
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "README.md"} <= \
        set(u_kw["files"])
    assert not Path(u_kw["folder_path"]).exists()  # the temporary folder is gone


def test_push_refusals(workdir, monkeypatch, fake_hub):
    student = Student.from_workdir(workdir, which="latest")
    with pytest.raises(hub.HubError, match="is not a Hub model id"):
        student.push_to_hub("me/../x")
    assert fake_hub.calls == []
    fake_hub.fail = PermissionError("401 Unauthorized")
    with pytest.raises(hub.HubError, match=r"push to 'me/x' failed: 401 Unauthorized \(log in"):
        student.push_to_hub("me/x")


def _cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        export.main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_command_exports_and_pushes(workdir, tmp_path, capsys, fake_hub):
    code, text = _cli(capsys, f"--workdir={workdir}", f"--out={tmp_path / 'e'}", "--push=me/s",
                      "--checkpoint=latest")
    assert code == 0, text
    assert f"exported step 5 (latest) of {workdir} to {tmp_path / 'e'}" in text
    assert "pushed to me/s: https://huggingface.co/me/s/commit/abc" in text
    assert Path(fake_hub.calls[1][2]["folder_path"]) == tmp_path / "e"
    assert Student.load(tmp_path / "e").tokenizer.encode("ab") == [100, 101]


def test_command_errors_are_one_line(workdir, tmp_path, capsys, fake_hub):
    code, text = _cli(capsys, f"--workdir={tmp_path / 'nope'}", f"--out={tmp_path / 'e'}")
    assert code == 2 and text.startswith("error: ValueError: --workdir=") and \
        "no such directory" in text
    code, text = _cli(capsys, f"--workdir={workdir}", f"--out={tmp_path / 'e'}", "--push=bad id")
    assert code == 2 and "is not a Hub model id" in text and not (tmp_path / "e").exists()
    code, text = _cli(capsys, f"--workdir={workdir}")
    assert code == 2 and "the following arguments are required: --out" in text
