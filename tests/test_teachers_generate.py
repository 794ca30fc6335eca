"""Teacher generation end to end with tiny random HF models built here.

The full command runs as a subprocess on a small dataset in the TinyLLM
layout, with a causal (Llama) and a seq2seq (T5) teacher; its store is read
back by the training data loader. The resume test kills a real generation
process with SIGKILL and restarts it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.helpers.kill_partway import kill_after_lines
from tinyllm_jax.data.synthetic import SyntheticConfig, generate_split
from tinyllm_jax.spec import data_spec
from tinyllm_jax.teachers.config import TeacherError

REPO = Path(__file__).resolve().parents[1]
T5_VOCAB = REPO.parent / "shared" / "t5-vocab"
# A user's own questions under a name the config accepts (config.data.name is
# one of the known datasets); the files are written here, not the published ones.
DATASET = "obqa"
TEACHERS = ("tiny_llama", "tiny_t5")

CONFIG_TEMPLATE = '''"""Test config: two tiny local teachers on a TinyLLM-layout dataset."""
import ml_collections

from tinyllm_jax.teachers.config import base_config, teacher

SETTINGS = __SETTINGS__


def get_config(arg=None):
    s = SETTINGS
    config = base_config()
    config.out_dir = s["out"]
    config.splits = tuple(s["splits"])
    config.max_examples = s["max_examples"]
    config.cpu_threads = 1
    config.progress = s["progress"]
    config.data = ml_collections.ConfigDict(
        {"name": s["dataset"], "data_dir": s["root"], "teachers": (), "rationale_store": ""}
    )
    config.teachers = ml_collections.ConfigDict({
        name: teacher(path, batch_size=s["batch_size"],
                      generation={"max_new_tokens": s["max_new_tokens"]})
        for name, path in s["models"].items()
    })
    return config
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    from tinyllm_jax.teachers.tiny import load_tokenizer_file, make_tiny_teachers, train_tokenizer

    if (T5_VOCAB / "tokenizer.json").is_file():
        tokenizer = load_tokenizer_file(T5_VOCAB)
    else:  # ../shared is absent: a tokenizer trained here serves as well
        texts = [e.input for e in generate_split("train", SyntheticConfig(50, 0, 0))[0]]
        tokenizer = train_tokenizer(texts + ["Question: Options: Answer: Rationale:"], 400)
    paths = make_tiny_teachers(tmp_path_factory.mktemp("teachers"), tokenizer, width=16)
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A user's own dataset: TinyLLM-layout question files, no rationales."""
    root = tmp_path_factory.mktemp("data")
    cfg = SyntheticConfig(train_size=150, valid_size=8, test_size=4, seed=5)
    (root / DATASET).mkdir()
    for split in ("train", "valid"):
        lines = [
            json.dumps({"id": e.id, "question": e.question, "choices": list(e.choices),
                        "answer": e.answer})
            for e in generate_split(split, cfg)[0]
        ]
        (root / DATASET / f"{DATASET}_{split}.json").write_text("\n".join(lines) + "\n")
    return root


def write_config(path: Path, **settings) -> Path:
    path.write_text(CONFIG_TEMPLATE.replace("__SETTINGS__", repr(settings)))
    return path


def settings(models, data_root, out, **overrides) -> dict:
    base = {
        "out": str(out), "root": str(data_root), "dataset": DATASET, "splits": ["train", "valid"],
        "max_examples": 12, "progress": False, "batch_size": 4, "max_new_tokens": 12,
        "models": models,
    }
    base.update(overrides)
    return base


def command(config: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "tinyllm_jax.teachers", f"--config={config}", *flags]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}


def read_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def load_runner_spec(config_path: Path):
    """The config a command would run, loaded in this process."""
    import importlib.util

    from tinyllm_jax.teachers.config import run_spec

    spec = importlib.util.spec_from_file_location("teacher_test_config", config_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    return run_spec(config), config


def test_full_command_writes_both_teachers_and_the_loader_reads_them(models, data_root, tmp_path):
    from tinyllm_jax.data.pipeline import (
        build_features,
        load_examples,
        make_iterator,
        tokenizer_for,
    )
    from tinyllm_jax.data.tinyllm import read_split

    out = tmp_path / "store"
    config = write_config(tmp_path / "cfg.py", **settings(models, data_root, out))
    done = subprocess.run(command(config), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "examples/s" in done.stdout
    for teacher in TEACHERS:
        for split, n in (("train", 12), ("valid", 8)):
            lines = read_lines(out / DATASET / teacher / f"{split}.jsonl")
            assert len(lines) == n and len({r["id"] for r in lines}) == n
            for r in lines:
                assert {"id", "question_hash", "rationale", "teacher_answer", "prompt_hash",
                        "model", "generation"} <= set(r)
                assert r["model"] == models[teacher]
                assert (r["rationale"] is None) == (r["error"] is not None)
                assert len(r["demo_ids"]) == 2 and r["id"] not in r["demo_ids"]
            kinds = {r["generation"]["kind"] for r in lines}
            assert kinds == {"causal" if teacher == "tiny_llama" else "seq2seq"}

    # The training data loader reads the store like any other teacher.
    data_cfg = data_spec({"name": DATASET, "data_dir": str(data_root), "rationale_store": str(out),
                          "teachers": TEACHERS, "tokenizer": "byte", "max_input_len": 512,
                          "max_target_len": 128})
    examples, report = load_examples(data_cfg, "valid")
    assert len(examples) == 8
    for teacher in TEACHERS:
        lines = {r["id"]: r for r in read_lines(out / DATASET / teacher / "valid.jsonl")}
        for e in examples:
            assert e.rationales[teacher] == (lines[e.id]["rationale"] or None)
        assert any(e.rationales[teacher] for e in examples), report.format()
    # Down to the training batches: rationale tasks carry loss weight.
    features, _ = build_features(data_cfg, examples, tokenizer_for(data_cfg))
    assert {f.task_id for f in features} & {1, 2}
    batch = next(iter(make_iterator(data_cfg, features, batch_size=len(features))))
    weights = batch["decoder_loss_weights"]
    for task in (0, *{f.task_id for f in features} - {0}):
        assert weights[batch["decoder_task_ids"] == task].sum() > 0
    # And the train split, a prefix of which was generated, reads with the
    # rest counted as missing rather than failing.
    train, train_report = read_split(data_root, DATASET, "train", TEACHERS, store_dir=out)
    assert len(train) == 150
    assert sum(e.rationales["tiny_llama"] is not None for e in train) <= 12
    assert train_report.counts["tiny_llama/missing_rationale"] == 138


def test_kill_and_restart_writes_every_id_exactly_once(models, data_root, tmp_path):
    out = tmp_path / "store"
    config = write_config(
        tmp_path / "cfg.py",
        **settings({"tiny_llama": models["tiny_llama"]}, data_root, out, splits=["train"],
                   max_examples=80, batch_size=1, max_new_tokens=8),
    )
    path = out / DATASET / "tiny_llama" / "train.jsonl"
    kill_after_lines(command(config), env(), path)
    first = path.read_bytes().count(b"\n")
    assert 3 <= first < 80, "the kill must land partway"

    done = subprocess.run(command(config), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = read_lines(path)
    ids = [r["id"] for r in lines]
    assert len(ids) == 80 and len(set(ids)) == 80
    # Complete lines survive the kill; a torn last one (if any) is redone.
    assert f"{80 - first} written, {first} already done" in done.stdout


def test_torn_last_line_is_redone_and_mismatched_settings_refused(models, data_root, tmp_path):
    from tinyllm_jax.teachers.runner import run

    out = tmp_path / "store"
    config = write_config(
        tmp_path / "cfg.py",
        **settings({"tiny_t5": models["tiny_t5"]}, data_root, out, splits=["valid"]),
    )
    spec, cfg = load_runner_spec(config)
    run(spec, cfg.data, echo=lambda _: None)
    path = out / DATASET / "tiny_t5" / "valid.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # A crash mid-write: two whole lines lost, the next one torn.
    path.write_text("".join(lines[:5]) + lines[5][:30])
    messages: list[str] = []
    results = run(spec, cfg.data, echo=messages.append)
    assert results[0].written == 3 and results[0].already_done == 5
    redone = read_lines(path)
    assert sorted(r["id"] for r in redone) == sorted(json.loads(x)["id"] for x in lines)
    # Greedy decoding and id-seeded prompts: the redone lines are identical.
    assert {json.dumps(r, sort_keys=True) for r in redone} == {
        json.dumps(json.loads(x), sort_keys=True) for x in lines
    }
    # A rerun with nothing to do does not load the model.
    before = len(messages)
    again = run(spec, cfg.data, echo=messages.append)
    assert again[0].written == 0 and again[0].already_done == 8
    assert not any("loading teacher" in m for m in messages[before:])

    changed = write_config(
        tmp_path / "cfg2.py",
        **settings({"tiny_t5": models["tiny_t5"]}, data_root, out, splits=["valid"],
                   max_new_tokens=5),
    )
    spec2, cfg2 = load_runner_spec(changed)
    with pytest.raises(TeacherError, match=r"valid\.jsonl, line 1: written by model .* use another"):
        run(spec2, cfg2.data, echo=lambda _: None)


def test_dry_run_prints_prompts_and_writes_nothing(models, data_root, tmp_path):
    out = tmp_path / "store"
    config = write_config(tmp_path / "cfg.py", **settings(models, data_root, out))
    done = subprocess.run(command(config, "--dry_run=2", "--teachers=tiny_t5", "--splits=valid"),
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("===== teacher tiny_t5") == 2
    assert "split valid" in done.stdout and "Rationale:\nLet's think step by step." in done.stdout
    assert not out.exists()
    bad = subprocess.run(command(config, "--teachers=nope"), cwd=REPO, env=env(),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "--teachers: unknown ['nope']" in bad.stderr and "Traceback" not in bad.stderr


def test_too_long_prompts_are_recorded_with_a_reason(models, data_root, tmp_path):
    from tinyllm_jax.data.tinyllm import read_split
    from tinyllm_jax.teachers.runner import run

    out = tmp_path / "store"
    config = write_config(
        tmp_path / "cfg.py",
        **settings({"tiny_llama": models["tiny_llama"]}, data_root, out, splits=["valid"]),
    )
    spec, cfg = load_runner_spec(config)
    spec = dataclasses.replace(
        spec, teachers=(dataclasses.replace(spec.teachers[0], max_prompt_tokens=8),)
    )
    result = run(spec, cfg.data, echo=lambda _: None)[0]
    assert result.counts["error/prompt_too_long"] == 8
    lines = read_lines(out / DATASET / "tiny_llama" / "valid.jsonl")
    assert all(r["error"] == "prompt_too_long" and r["rationale"] is None for r in lines)
    # Shortened to zero demos before giving up.
    assert all(r["demo_ids"] == [] for r in lines)
    _, report = read_split(data_root, DATASET, "valid", ("tiny_llama",), store_dir=out)
    assert report.counts["tiny_llama/generation_error"] == 8


HOLD_LOCK = """
import sys, time
from tinyllm_jax.teachers.store_lock import store_lock
with store_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_second_generator_on_a_store_file_exits_2_naming_the_holder(models, data_root, tmp_path):
    from tinyllm_jax.teachers.store_lock import lock_path

    out = tmp_path / "store"
    config = write_config(
        tmp_path / "cfg.py",
        **settings({"tiny_t5": models["tiny_t5"]}, data_root, out, splits=["valid"]),
    )
    path = out / DATASET / "tiny_t5" / "valid.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], cwd=REPO, env=env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        done = subprocess.run(command(config), cwd=REPO, env=env(), capture_output=True,
                              text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"another run is writing this store file: pid {holder.pid} on host" in done.stderr
    assert not path.exists()
    # The holder was killed: the next run takes the stale lock over and completes.
    again = subprocess.run(command(config), cwd=REPO, env=env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"taking over the lock left by pid {holder.pid}" in again.stderr
    assert len(read_lines(path)) == 8 and lock_path(path).read_text() == ""
