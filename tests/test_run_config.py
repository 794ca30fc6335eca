"""The resolved config saved in the workdir: eval and print_config without
--config, refusals with the differences listed, resume rules, field help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm_jax import run_config
from tinyllm_jax.config_help import override_help
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.spec import parse

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.py"


def _spec(**overrides):
    cfg = load_config_file(TINY, "steps=2")
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return parse(cfg)


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tinyllm_jax.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", ["tiny.py", "demo.py", "obqa.py", "arc.py"])
def test_saved_config_reads_back_into_the_same_spec(tmp_path, name):
    spec = parse(load_config_file(REPO / "configs" / name), reads_data=False)
    run_config.save_run_config(tmp_path, spec)
    saved = run_config.read_saved_config(tmp_path)
    assert parse(saved, reads_data=False) == spec
    raw = json.loads((tmp_path / "config.json").read_text())
    # The ConfigDict layout a user types: eval settings under train, no "eval" section.
    assert "eval" not in raw and raw["train"]["eval_batch_size"] == spec.eval.batch_size


def test_eval_refuses_a_disagreeing_config_with_the_differences(tmp_path):
    run_config.save_run_config(tmp_path, _spec())
    given = _spec(train__steps=5, data__max_input_len=100, train__eval_batch_size=4)
    with pytest.raises(run_config.ConfigMismatchError) as e:
        run_config.check_against_saved(tmp_path, given, run_config.EVAL_MAY_CHANGE, "evaluate")
    text = str(e.value)
    assert "config.train.steps: saved 2, given 5" in text
    assert "config.data.max_input_len: saved 128, given 100" in text
    assert "eval_batch_size" not in text  # an evaluation field may change
    allowed = run_config.check_against_saved(
        tmp_path, _spec(train__eval_batch_size=4, model__dtype="bfloat16"),
        run_config.EVAL_MAY_CHANGE, "evaluate")
    assert allowed == {"config.train.eval_batch_size": (16, 4),
                       "config.model.dtype": ("float32", "bfloat16")}


def test_resume_allows_length_and_refuses_training_changes(tmp_path):
    (tmp_path / "checkpoints" / "2").mkdir(parents=True)
    run_config.save_run_config(tmp_path, _spec())
    changed = run_config.start_training(tmp_path, _spec(train__steps=6))
    assert changed == {"config.train.steps": (2, 6)}
    assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 6
    with pytest.raises(run_config.ConfigMismatchError,
                       match=r"config\.optimizer\.lr: saved 0\.001, given 0\.01"):
        run_config.start_training(tmp_path, _spec(train__steps=6, optimizer__lr=0.01))
    # Refused: the saved config is left as it was.
    assert json.loads((tmp_path / "config.json").read_text())["optimizer"]["lr"] == 0.001


def test_a_fresh_start_overwrites_a_config_without_checkpoints(tmp_path):
    run_config.save_run_config(tmp_path, _spec())
    assert run_config.start_training(tmp_path, _spec(optimizer__lr=0.01)) == {}
    assert json.loads((tmp_path / "config.json").read_text())["optimizer"]["lr"] == 0.01


def test_unreadable_or_missing_saved_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no saved config.*pass the training config"):
        run_config.saved_spec(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not a readable JSON config"):
        run_config.saved_spec(tmp_path)


def test_override_help_lists_the_sections_fields():
    text = override_help(["prog", f"--config={TINY}:steps=3", "--config.train.log_evry=1",
                          "--config.optimizer.lr=abc", "--config.nosuch.x=1"])
    lines = text.splitlines()
    assert lines[0].startswith("config.train has no field 'log_evry'; did you mean 'log_every'")
    assert "'eval_batch_size'" in lines[0]
    assert lines[1] == "config.optimizer.lr holds 0.001 (float)"
    assert lines[2].startswith("config has no field 'nosuch'")
    assert "--mode=print_config" in lines[-1]
    alone = override_help(["prog", "--mode=eval", "--config.train.eval_batch_size=8"])
    assert "none is given" in alone and "--config=configs/workdir/saved.py:WORKDIR" in alone


def test_cli_print_config_prints_the_resolved_config_as_json(tmp_path):
    out = _cli("--mode=print_config", f"--config={TINY}", "--config.train.steps=3")
    assert out.returncode == 0, out.stderr[-2000:]
    printed = json.loads(out.stdout)
    assert printed["train"]["steps"] == 3
    assert parse(load_config_file(TINY, "steps=3")) == parse(
        run_config.ml_collections.ConfigDict(run_config._tuples(printed)))
    # (The mistyped-field message from the command line: test_configs.py.)


@pytest.mark.slow
def test_cli_train_then_eval_without_config(tmp_path):
    """The user's path: train, evaluate and print with the workdir alone,
    a disagreeing --config refused, the saved one changed via configs/workdir/saved.py."""
    w = tmp_path / "w"
    trained = _cli(f"--config={TINY}:steps=2", f"--workdir={w}", timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((w / "config.json").read_text())["train"]["steps"] == 2
    evaluated = _cli("--mode=eval", f"--workdir={w}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads((w / "summary.json").read_text())
    assert json.loads((w / "eval_test.json").read_text())["accuracy"] == summary["test_accuracy"]
    refused = _cli("--mode=eval", f"--workdir={w}", f"--config={TINY}")
    assert refused.returncode == 2
    assert "config.train.steps: saved 2, given 8" in refused.stderr
    changed = _cli("--mode=eval", f"--workdir={w}", f"--config=configs/workdir/saved.py:{w}",
                   "--config.train.eval_batch_size=8")
    assert changed.returncode == 0, changed.stderr[-3000:]
    printed = _cli("--mode=print_config", f"--workdir={w}")
    assert json.loads(printed.stdout) == json.loads((w / "config.json").read_text())
