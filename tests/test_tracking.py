"""One tiny training run, off a terminal, with W&B offline and a profiled
range, checked for what each feature left behind: the W&B run's logged
metrics (read from its offline files), the profiler trace, the plain
progress lines with rate and ETA of training and evaluation, the saved
config (file and TensorBoard text) and an evaluation that needs no config."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.helpers.wandb_records import read_run
from tinyllm_jax import Student, run_config
from tinyllm_jax.configs import load_config_file
from tinyllm_jax.metrics import read_jsonl
from tinyllm_jax.progress import INTERVAL_ENV
from tinyllm_jax.spec import ConfigError, parse
from tinyllm_jax.spec.tracking import profile_range
from tinyllm_jax.tracking import StepProfiler

pytest.importorskip("wandb")

REPO = Path(__file__).resolve().parents[1]


def _tiny(**train):
    cfg = load_config_file(REPO / "configs" / "tiny.py", "steps=4")
    for key, value in train.items():
        if isinstance(value, dict):
            cfg.train[key].update(value)
        else:
            cfg.train[key] = value
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tinyllm_jax.train import train_and_evaluate

    tmp = tmp_path_factory.mktemp("tracked")
    workdir = tmp / "w"
    cfg = _tiny(progress_bar=True, profile_steps="2-3")
    cfg.train.wandb.project = "tinyllm-test"
    cfg.train.wandb.name = "tiny-run"
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        # The mode comes from the environment here (config.train.wandb.mode is "").
        for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                           "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
                           "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
                           "WANDB_DATA_DIR": str(tmp / "wandb-data"), INTERVAL_ENV: "0"}.items():
            mp.setenv(key, value)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            summary = train_and_evaluate(cfg, str(workdir))
    return workdir, summary, out.getvalue() + err.getvalue()


def test_wandb_offline_run_holds_the_logged_metrics(run):
    workdir, summary, _ = run
    (run_dir,) = (workdir / "wandb").glob("offline-run-*")
    logged = read_run(run_dir)
    assert logged["run"]["project"] == "tinyllm-test" and logged["run"]["name"] == "tiny-run"
    assert logged["run"]["id"] == (workdir / "wandb_run_id").read_text().strip()
    assert logged["config"]["train"]["steps"] == 4
    by_step: dict[int, dict] = {}
    for row in logged["history"]:
        by_step.setdefault(row["_step"], {}).update(row)
    for record in read_jsonl(workdir / "metrics.jsonl"):  # every record, the same values
        for key, value in record.items():
            if key not in ("step", "kind", "time"):
                assert by_step[record["step"]][f"{record['kind']}/{key}"] == pytest.approx(value)
    assert {2, 4} <= set(by_step) and "train/loss" in by_step[2]
    assert by_step[4]["final/test/accuracy"] == pytest.approx(summary["test_accuracy"])


def test_profile_trace_is_written(run):
    workdir, _, output = run
    traces = list((workdir / "profile").rglob("*.xplane.pb"))
    assert traces and all(t.stat().st_size > 0 for t in traces)
    assert f"profile of steps 2-3 written to {workdir / 'profile'}" in output


def test_plain_progress_lines_have_rate_and_eta(run):
    _, _, output = run
    rate = r"[\d.]+ (?:{0}/s|s/{0})"  # "2.00 step/s", or "3.10 s/step" when slower than 1/s
    train = re.findall(rf"^train (\d)/4 step \(\d+%\) {rate.format('step')} elapsed \S+ ETA \S+ "
                       r"\| loss ", output, re.M)
    assert train == ["2", "4"]
    for split in ("valid", "test"):
        assert re.search(rf"^eval {split} generate 16/16 ex \(100%\) {rate.format('ex')} "
                         r"elapsed \S+ ETA 0:00:00$", output, re.M), output[-3000:]
        # Ranking encodes each input once and scores all its choices: counted per example.
        assert re.search(rf"^eval {split} rank 16/16 ex \(100%\) ", output, re.M)


def test_saved_config_in_file_and_tensorboard_and_eval_without_config(run):
    from tinyllm_jax.evaluation.run import evaluate_workdir

    workdir, summary, _ = run
    saved = run_config.saved_spec(workdir)
    assert saved == parse(_tiny(progress_bar=True, profile_steps="2-3",
                                wandb={"project": "tinyllm-test", "name": "tiny-run",
                                       "entity": "", "mode": ""}))
    events = b"".join(p.read_bytes() for p in (workdir / "tb").iterdir())
    assert b"config/text_summary" in events and b"eval_batch_size" in events
    result = evaluate_workdir(saved, str(workdir))
    assert result["accuracy"] == summary["test_accuracy"]
    # config.json in the workdir is the run's, not an HF model config: still a workdir.
    assert Student.load(workdir).checkpoint_step == summary["evaluated_step"]


def test_profile_steps_forms_and_refusals():
    assert profile_range("5") == (5, 5) and profile_range(" 5 - 7 ") == (5, 7)
    assert profile_range("5,6,7") == (5, 7) and profile_range("") is None
    for bad in ("5,7", "0-2", "7-5", "x"):
        with pytest.raises(ValueError, match="'5-7'"):
            profile_range(bad)
    with pytest.raises(ConfigError, match=r"profile_steps = '9': starts after the run's last"):
        parse(_tiny(profile_steps="9"))
    with pytest.raises(ConfigError, match=r"config\.train\.wandb\.mode = 'off'"):
        parse(_tiny(wandb={"project": "p", "mode": "off"}))
    # No range: nothing is traced, whatever the steps.
    profiler = StepProfiler("", "/nonexistent")
    profiler.before(1)
    assert not profiler.active
