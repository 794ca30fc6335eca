"""Backend selection and the vLLM adapter, against a stand-in `vllm` module.

vLLM is not installed on these machines; the stand-in implements the part of
its documented offline API the adapter uses (LLM(...).generate(prompts,
SamplingParams(...)) -> outputs[i].outputs[0].text/token_ids/finish_reason),
so the adapter's calls and the shared record format are checked here.
"""

from __future__ import annotations

import json
import sys
import types

import pytest

from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
from tinyllm_jax.teachers import backends
from tinyllm_jax.teachers.config import PromptSettings, TeacherError, teacher, teacher_spec
from tinyllm_jax.teachers.generate import generate_split as generate_store
from tinyllm_jax.teachers.prompts import PromptBuilder


class FakeTokenizer:
    def __call__(self, texts, add_special_tokens=True):
        ids = [[len(w) % 50 + 3 for w in t.split()] + ([1] if add_special_tokens else []) for t in texts]
        return {"input_ids": ids}


@pytest.fixture
def fake_vllm(monkeypatch):
    calls: dict = {"llm": None, "params": None, "prompts": []}

    class SamplingParams:
        def __init__(self, **kwargs):
            calls["params"] = kwargs

    class LLM:
        def __init__(self, **kwargs):
            calls["llm"] = kwargs

        def generate(self, prompts, params, use_tqdm=True):
            calls["prompts"].extend(prompts)
            out = []
            for p in prompts:
                # The answer letter depends on the prompt, to tell rows apart.
                letter = "abcd"[len(p["prompt_token_ids"]) % 4]
                text = f" Count the steps. Thus, the answer is ({letter})."
                choice = types.SimpleNamespace(text=text, token_ids=[5] * 9, finish_reason="stop",
                                               stop_reason=None)
                out.append(types.SimpleNamespace(outputs=[choice]))
            return out

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(backends, "vllm_available", lambda: True)
    return calls


def test_vllm_adapter_calls_and_store_format(fake_vllm, tmp_path):
    spec = teacher_spec("big", teacher("org/causal-7b", backend="vllm", dtype="bfloat16",
                                       engine_args={"max_model_len": 4096},
                                       generation={"max_new_tokens": 64, "seed": 3}).to_dict())
    engine = backends.load_backend("vllm", spec, FakeTokenizer(), "causal")
    assert fake_vllm["llm"]["model"] == "org/causal-7b"
    assert fake_vllm["llm"]["max_model_len"] == 4096
    assert fake_vllm["llm"]["dtype"] == "bfloat16" and fake_vllm["llm"]["seed"] == 3
    params = fake_vllm["params"]
    assert params["max_tokens"] == 64 and params["temperature"] == 0.0  # greedy
    assert params["stop"] == ["\nQuestion:"]

    examples = generate_split("valid", SyntheticConfig(20, 6, 0))[0]
    train = generate_split("train", SyntheticConfig(20, 6, 0))[0]
    out = tmp_path / "big" / "valid.jsonl"
    result = generate_store(
        teacher="big", split="valid", examples=examples,
        builder=PromptBuilder(PromptSettings(), train), backend=lambda: engine,
        out_path=out, model=spec.model, generation={"backend": "vllm"}, batch_size=4,
        add_special_tokens=True, progress=False,
    )
    assert result.written == 6
    # Prompts go in as token ids, longest first.
    lengths = [len(p["prompt_token_ids"]) for p in fake_vllm["prompts"]]
    assert lengths == sorted(lengths, reverse=True)
    by_id = {e.id: e for e in examples}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        assert r["rationale"] == "Count the steps." and r["error"] is None
        assert r["teacher_answer"] in by_id[r["id"]].choices


def test_vllm_refuses_what_it_cannot_run(fake_vllm):
    seq2seq = teacher_spec("t5", teacher("google/flan-t5-xl", backend="vllm").to_dict())
    with pytest.raises(TeacherError, match="vllm runs causal LMs only"):
        backends.load_backend("vllm", seq2seq, FakeTokenizer(), "seq2seq")
    beams = teacher_spec("b", teacher("m", backend="vllm", generation={"num_beams": 4}).to_dict())
    with pytest.raises(TeacherError, match="num_beams"):
        backends.load_backend("vllm", beams, FakeTokenizer(), "causal")


def test_engine_args_are_checked_against_the_fields_that_set_them():
    with pytest.raises(TeacherError, match=r"config\.teachers\.v\.engine_args: \['dtype', "
                                           r"'seed'\] come from the teacher's own fields"):
        teacher_spec("v", teacher("m", backend="vllm",
                                  engine_args={"seed": 1, "dtype": "half"}).to_dict())
    with pytest.raises(TeacherError, match=r"engine_args: expected a dict of vllm\.LLM"):
        teacher_spec("v", {**teacher("m", backend="vllm").to_dict(), "engine_args": [("a", 1)]})
    with pytest.raises(TeacherError, match=r"engine_args: only the vllm backend reads it"):
        teacher_spec("h", teacher("m", engine_args={"max_model_len": 8}).to_dict())
    auto = teacher_spec("a", teacher("m", backend="auto", engine_args={"max_model_len": 8}).to_dict())
    assert auto.engine_args == {"max_model_len": 8}


def test_auto_backend_choice(fake_vllm, monkeypatch):
    torch = pytest.importorskip("torch")
    spec = teacher_spec("a", teacher("m", backend="auto").to_dict())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backends.backend_name(spec, "causal") == "vllm"
    assert backends.backend_name(spec, "seq2seq") == "hf"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backends.backend_name(spec, "causal") == "hf"
    assert backends.backend_name(teacher_spec("h", teacher("m").to_dict()), "causal") == "hf"


def test_missing_model_is_a_clear_error(tmp_path):
    pytest.importorskip("transformers")
    spec = teacher_spec("t", teacher(str(tmp_path / "nowhere")).to_dict())
    with pytest.raises(TeacherError, match=r"config\.teachers\.t\.model: cannot read a model config"):
        backends.resolve_kind(spec)
    with pytest.raises(TeacherError, match=r"config\.teachers\.t\.tokenizer: cannot load"):
        backends.load_tokenizer(spec)


class OutOfMemoryOnSecondBatch:
    """A backend that runs out of GPU memory on its second batch."""

    name, kind, max_prompt_tokens = "fake", "causal", None

    def __init__(self):
        self.calls = 0

    def encode(self, texts, add_special_tokens):
        return FakeTokenizer()(texts, add_special_tokens)["input_ids"]

    def generate(self, batch):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [backends.Generated("It adds up. The answer is (a).", 7, False) for _ in batch]


def test_out_of_memory_names_the_fix_and_keeps_written_lines(tmp_path):
    examples = generate_split("valid", SyntheticConfig(20, 6, 0))[0]
    out = tmp_path / "t" / "valid.jsonl"
    with pytest.raises(TeacherError, match=r"t/valid: out of memory on a batch of 2 .*"
                                           r"config\.teachers\.t\.batch_size .* 4 lines written"):
        generate_store(
            teacher="t", split="valid", examples=examples,
            builder=PromptBuilder(PromptSettings(k=0), []), backend=OutOfMemoryOnSecondBatch,
            out_path=out, model="m", generation={}, batch_size=4,
            add_special_tokens=True, progress=False,
        )
    assert len(out.read_text().splitlines()) == 4
