"""Training end to end on the tiny config: mesh equivalence, multi-host,
bitwise resume, eval reproduction, Student.load on a workdir."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "helpers" / "run_steps.py"


def _run_helper(tmp_path: Path, name: str, *args: str, devices: int = 1, env: dict | None = None,
                wait: bool = True):
    out = tmp_path / f"{name}.json"
    full_env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                "JAX_PLATFORMS": "cpu", **(env or {})}
    cmd = [sys.executable, str(HELPER), f"--out={out}", *args]
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    if not wait:
        return proc, out
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    return json.loads(out.read_text()), out


def test_mesh_2x2x2_matches_one_device(tmp_path):
    one, _ = _run_helper(tmp_path, "one", "--mesh=1,1,1", "--steps=3")
    mesh, _ = _run_helper(tmp_path, "mesh", "--mesh=2,2,2", "--steps=3", devices=8)
    np.testing.assert_allclose(mesh["losses"], one["losses"], rtol=1e-4)
    # fsdp=2: every parameter whose spec names fsdp holds half of that axis per device.
    sharded = {k: v for k, v in mesh["shards"].items() if "fsdp" in v["spec"]}
    assert sharded
    for name, s in sharded.items():
        g, loc = np.prod(s["global"]), np.prod(s["local"])
        factor = 2 * (2 if "tensor" in s["spec"] else 1)
        assert loc * factor == g, (name, s)


def test_fsdp4_quarters_parameters(tmp_path):
    res, _ = _run_helper(tmp_path, "fsdp4", "--mesh=2,4,1", "--steps=1", devices=8)
    emb = res["shards"]["['token_embedder']['embedding']"]
    assert emb["spec"] == "PartitionSpec(None, 'fsdp')" or "fsdp" in emb["spec"]
    assert emb["local"][1] * 4 == emb["global"][1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_and_one_process_restores(tmp_path):
    port = _free_port()
    workdir = tmp_path / "wd"
    procs = [
        _run_helper(
            tmp_path, f"proc{i}", "--mesh=-1,1,1", "--steps=2", f"--workdir={workdir}",
            f"--coordinator=127.0.0.1:{port}", "--num-processes=2", f"--process-id={i}",
            devices=1, wait=False,
        )
        for i in range(2)
    ]
    results = []
    for proc, out in procs:
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, log[-3000:]
        results.append(json.loads(out.read_text()))
    assert [r["devices"] for r in results] == [2, 2]
    np.testing.assert_allclose(results[0]["losses"], results[1]["losses"], rtol=0)
    # The checkpoint both wrote is restored by one process on one device.
    restored, out = _run_helper(tmp_path, "restored", "--mesh=1,1,1", f"--restore-from={workdir}")
    assert restored["data_state"]["position"] == 2
    saved = np.load(str(tmp_path / "proc0.json") + ".params.npz")
    again = np.load(str(out) + ".params.npz")
    assert saved.files == again.files
    for k in saved.files:
        np.testing.assert_array_equal(saved[k], again[k])
    # And one device training the same batches sees the same losses.
    single, _ = _run_helper(tmp_path, "single", "--mesh=1,1,1", "--steps=2")
    np.testing.assert_allclose(single["losses"], results[0]["losses"], rtol=1e-5)


# --- in-process runs of the real loop -------------------------------------------------


def _tiny(arg: str | None = None, **overrides):
    from tinyllm_jax.configs import load_config_file

    cfg = load_config_file(REPO / "configs" / "tiny.py", arg)
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _params_of(workdir: Path, step: int):
    import orbax.checkpoint as ocp

    restored = ocp.PyTreeCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    return restored["params"]


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, (*prefix, k))
        else:
            yield "/".join((*prefix, k)), np.asarray(v)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from tinyllm_jax.train import train_and_evaluate

    workdir = tmp_path_factory.mktemp("full")
    summary = train_and_evaluate(_tiny("steps=8"), str(workdir))
    return workdir, summary


def test_resume_is_bitwise_identical(finished_run, tmp_path):
    from tinyllm_jax.train import train_and_evaluate

    full_dir, summary = finished_run
    assert summary["status"] == "completed" and summary["step"] == 8
    resumed = tmp_path / "resumed"
    first = train_and_evaluate(_tiny("steps=4"), str(resumed))  # stops after step 4
    assert first["step"] == 4
    second = train_and_evaluate(_tiny("steps=8"), str(resumed))  # resumes at 4
    assert second["step"] == 8
    a, b = dict(_flat(_params_of(full_dir, 8))), dict(_flat(_params_of(resumed, 8)))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_eval_mode_reproduces_final_accuracy(finished_run):
    from tinyllm_jax.evaluation.run import evaluate_workdir

    workdir, summary = finished_run
    result = evaluate_workdir(_tiny("steps=8"), str(workdir))
    assert result["accuracy"] == summary["test_accuracy"]
    assert result["step"] == summary["evaluated_step"]
    rows = [json.loads(x) for x in (workdir / "predictions_test.jsonl").read_text().splitlines()]
    assert len(rows) == 16
    assert {"id", "input", "gold", "prediction", "correct"} <= set(rows[0])
    assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(result["accuracy"])


@pytest.mark.slow
def test_eval_mode_decodes_as_configured(finished_run):
    """--mode=eval with beam search from config.train.eval_*: the answers are
    the beam search's, and eval_<split>.json records how they were decoded."""
    from tinyllm_jax.evaluation.run import evaluate_workdir

    workdir, _summary = finished_run
    greedy = evaluate_workdir(_tiny("steps=8"), str(workdir), split="valid")
    assert greedy["decoding"]["num_beams"] == 1
    greedy_rows = (workdir / "predictions_valid.jsonl").read_text().splitlines()
    cfg = _tiny("steps=8")
    cfg.train.eval_num_beams = 3
    cfg.train.eval_length_penalty = 0.5
    result = evaluate_workdir(cfg, str(workdir), split="valid")
    recorded = json.loads((workdir / "eval_valid.json").read_text())
    assert recorded["decoding"]["num_beams"] == 3 == result["decoding"]["num_beams"]
    assert recorded["decoding"]["length_penalty"] == 0.5
    rows = (workdir / "predictions_valid.jsonl").read_text().splitlines()
    assert len(rows) == len(greedy_rows) == 16


def test_workdir_outputs_and_student_load(finished_run):
    from tinyllm_jax import Student

    workdir, _summary = finished_run
    for name in ("summary.json", "metrics.jsonl"):
        assert (workdir / name).exists(), name
    assert list((workdir / "tb").iterdir()), "no TensorBoard event file"
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in records if r["kind"] == "train"]
    assert {"loss/answer", "loss/algebra", "loss/verbal", "lr", "examples_per_s",
            "tokens_per_s", "step_time_s"} <= set(train_rows[-1])
    student = Student.load(workdir)
    assert student.config.d_model == 64
    out = student.generate(["predict: Ann has 3 pens. How many pens does Ann have?"],
                           max_new_tokens=4)
    assert isinstance(out[0], str)


def test_student_from_workdir_picks_best_or_latest(finished_run):
    import jax
    import numpy as np

    from tinyllm_jax import Student

    workdir, summary = finished_run
    best, latest = Student.from_workdir(workdir), Student.from_workdir(workdir, which="latest")
    same = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                                        best.params, latest.params))
    assert all(same) == (summary["best_step"] == summary["step"])
    assert latest.tokenizer is not None and latest.config == best.config
    with pytest.raises(ValueError, match="which must be 'best' or 'latest'"):
        Student.from_workdir(workdir, which="newest")
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        Student.from_workdir(workdir / "tb")
    assert not (workdir / "tb" / "checkpoints").exists()


def test_student_from_workdir_skips_a_step_whose_parameters_are_damaged(finished_run, tmp_path,
                                                                         caplog):
    """Flipped bytes that TensorStore reads back without an error: the
    parameters' checksums catch them, and the previous intact step is used."""
    import logging
    import shutil

    from tinyllm_jax import Student

    workdir, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    steps = sorted(int(p.name) for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
    assert len(steps) >= 2, steps
    newest = copy / "checkpoints" / str(steps[-1])
    for path in (newest / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":  # every array data file
            data = bytearray(path.read_bytes())
            data[len(data) // 3] ^= 0x55
            path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="tinyllm_jax.checkpoint"):
        student = Student.from_workdir(copy, which="latest")
    assert student.checkpoint_step == steps[-2]
    assert f"checkpoint {newest} is damaged and is skipped" in caplog.text
    assert newest.is_dir(), "loading a student must not move checkpoints"


def test_restore_refuses_a_different_configuration(finished_run, tmp_path):
    import shutil

    from tinyllm_jax.checkpoint import CheckpointMismatchError
    from tinyllm_jax.train import train_and_evaluate

    workdir, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    cfg = _tiny("steps=12,teachers=algebra")
    with pytest.raises(CheckpointMismatchError, match="teachers"):
        train_and_evaluate(cfg, str(copy))
    cfg = _tiny("steps=12", model__d_ff=96)
    # The saved config.json refuses first; without it (older workdirs), the checkpoint's meta.
    with pytest.raises(CheckpointMismatchError, match=r"config\.model\.d_ff: saved 128, given 96"):
        train_and_evaluate(cfg, str(copy))
    (copy / "config.json").unlink()
    with pytest.raises(CheckpointMismatchError, match=r"model\.d_ff: checkpoint has 128, config has 96"):
        train_and_evaluate(cfg, str(copy))


def test_gradient_accumulation_matches_full_batch():
    import jax
    import jax.numpy as jnp
    import optax

    from tinyllm_jax.data import pipeline
    from tinyllm_jax.data.bundle import load_data
    from tinyllm_jax.optim import make_optimizer
    from tinyllm_jax.spec import parse
    from tinyllm_jax.train_step import STEP_KEYS, init_state, make_train_step, task_coefficients

    spec = parse(_tiny())
    bundle = load_data(spec.data, (), model_vocab=spec.model.vocab_size)
    batch = next(pipeline.make_iterator(spec.data, bundle.train_features, batch_size=8))
    batch = {k: jnp.asarray(batch[k]) for k in STEP_KEYS}
    config = spec.model
    tx, _ = make_optimizer(spec.optimizer, 10)
    coefs = task_coefficients(1.0, (), 2)
    state = init_state(config, tx, 0)
    s1, m1 = jax.jit(make_train_step(config, tx, coefs))(state, batch)
    s4, m4 = jax.jit(make_train_step(config, tx, coefs, accumulate_steps=4))(state, batch)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["per_task_ce"], m4["per_task_ce"], rtol=1e-5)
    # Adam's first moment is linear in the gradient: the accumulated gradient
    # itself must match the full batch's to summation-order rounding.
    mu1 = optax.tree_utils.tree_get(s1.opt_state, "mu")
    mu4 = optax.tree_utils.tree_get(s4.opt_state, "mu")
    for a, b in zip(jax.tree.leaves(mu1), jax.tree.leaves(mu4)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params)):
        # The first Adam step is lr * g / (|g| + eps): for a gradient of ~1e-8
        # the same rounding moves the update by a visible part of lr (1e-3), so
        # the parameters are held to 10% of one step.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_nonfinite_update_is_skipped_and_counted():
    import jax
    import jax.numpy as jnp

    from tinyllm_jax.data import pipeline
    from tinyllm_jax.data.bundle import load_data
    from tinyllm_jax.optim import make_optimizer
    from tinyllm_jax.spec import parse
    from tinyllm_jax.train_step import STEP_KEYS, init_state, make_train_step, task_coefficients

    spec = parse(_tiny())
    bundle = load_data(spec.data, (), model_vocab=spec.model.vocab_size)
    batch = next(pipeline.make_iterator(spec.data, bundle.train_features, batch_size=8))
    batch = {k: jnp.asarray(batch[k]) for k in STEP_KEYS}
    batch["decoder_loss_weights"] = batch["decoder_loss_weights"].at[0, 0].set(jnp.nan)
    config = spec.model
    tx, _ = make_optimizer(spec.optimizer, 10)
    state = init_state(config, tx, 0)
    new, m = jax.jit(make_train_step(config, tx, task_coefficients(1.0, (), 2)))(state, batch)
    assert not bool(m["finite"]) and int(new.nonfinite) == 1 and int(new.step) == 1
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params)):
        np.testing.assert_array_equal(a, b)
