"""Sharding strategies, the parameter table, the memory estimate and the compile check.

Checks on 8 devices run in subprocesses: XLA fixes the number of fake CPU
devices when JAX starts, and this pytest process has already started it.
The rest works on abstract meshes, which need no devices at all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import pytest
from jax.sharding import AbstractMesh

from tinyllm_jax import memory as memory_lib
from tinyllm_jax import sharding as shard_lib
from tinyllm_jax.configs import base_config
from tinyllm_jax.models.t5 import T5Config
from tinyllm_jax.optim import make_optimizer
from tinyllm_jax.setup import state_shardings

REPO = Path(__file__).resolve().parents[1]
HELPERS = REPO / "tests" / "helpers"

ONE_DEVICE = (1, 1, 1)
STRATEGIES = {"data parallel": (8, 1, 1), "fsdp": (1, 8, 1), "tensor x fsdp": (1, 4, 2)}


def fake_device_env(count: int | None) -> dict[str, str]:
    """The environment of a child process with `count` fake CPU devices
    (None: leave the count to the child, e.g. aot.use_fake_devices)."""
    env = dict(os.environ)
    if count is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def run_checked(cmd: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


# --- the same run on 1 and on 8 devices ------------------------------------------------------


@pytest.fixture(scope="module")
def strategy_runs(tmp_path_factory) -> dict[tuple[int, ...], dict]:
    out = tmp_path_factory.mktemp("strategies") / "runs.json"
    meshes = [ONE_DEVICE, *STRATEGIES.values()]
    run_checked(
        [sys.executable, str(HELPERS / "sharding_equivalence.py"), "--steps=2", f"--out={out}",
         "--meshes", *(",".join(map(str, m)) for m in meshes)],
        fake_device_env(8), timeout=600,
    )
    return {tuple(r["mesh"]): r for r in json.loads(out.read_text())}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_matches_one_device(strategy_runs, name):
    reference = strategy_runs[ONE_DEVICE]["losses"]
    losses = strategy_runs[STRATEGIES[name]]["losses"]
    assert len(losses) == len(reference) == 2
    # Step 1 checks the sharded init from the seed, step 2 the sharded update.
    for step, (got, want) in enumerate(zip(losses, reference), start=1):
        assert abs(got - want) <= 1e-4 * abs(want), f"{name}, step {step}: {got} vs {want}"


def test_fsdp8_holds_an_eighth_of_the_state_per_device(strategy_runs):
    run = strategy_runs[STRATEGIES["fsdp"]]
    total = run["totals"]["params"] + run["totals"]["opt"]
    assert len(run["per_device"]) == 8
    for device, held in run["per_device"].items():
        assert held["params"] + held["opt"] <= total / 8 * 1.05, f"device {device}: {held}"
    # memory.py's arithmetic is what the arrays really hold.
    largest = max(v["params"] for v in run["per_device"].values())
    assert run["estimate"]["params"] == largest
    assert run["estimate"]["opt"] == max(v["opt"] for v in run["per_device"].values())


def test_data_parallel_replicates_and_tensor_fsdp_shards(strategy_runs):
    dp = strategy_runs[STRATEGIES["data parallel"]]
    for held in dp["per_device"].values():
        assert held["params"] == dp["totals"]["params"]
    tp = strategy_runs[STRATEGIES["tensor x fsdp"]]
    total = tp["totals"]["params"] + tp["totals"]["opt"]
    for held in tp["per_device"].values():
        assert held["params"] + held["opt"] <= total / 8 * 1.05


# --- the parameter table and the memory estimate (abstract meshes) --------------------------

TINY = T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                dropout_rate=0.0)


def abstract_state(config: T5Config, dims: tuple[int, int, int]):
    cfg = base_config(dataset="synthetic", teachers=())
    tx, _ = make_optimizer(cfg.optimizer, 10)
    mesh = AbstractMesh(dims, shard_lib.MESH_AXES)
    abstract, shardings = state_shardings(config, tx, mesh)
    return abstract, shardings, mesh


def test_parameter_table_shows_every_parameter_and_its_layout():
    abstract, shardings, mesh = abstract_state(TINY, (1, 4, 2))
    rows = memory_lib.parameter_rows(TINY, shardings.params, dict(mesh.shape))
    assert len(rows) == len(jax.tree.leaves(abstract.params))
    by_path = {r.path: r for r in rows}
    query = by_path["encoder/layers_0/attention/query"]
    assert query.shape == (64, 4, 16)
    assert query.logical == ("embed", "heads", "kv")
    assert query.spec == "(fsdp, tensor, -)"
    assert query.device_bytes == 64 * 4 * 16 * 4 // 8
    relpos = by_path["encoder/relpos_bias/rel_embedding"]
    assert relpos.spec == "(-, tensor)" and relpos.device_bytes == relpos.global_bytes // 2
    table = memory_lib.format_table(rows)
    for header in ("parameter", "shape", "logical axes", "mesh sharding", "bytes/device"):
        assert header in table
    assert all(r.path in table for r in rows)


def test_indivisible_mesh_names_the_parameter_and_the_fix():
    six_heads = TINY.replace(num_heads=6)
    abstract, shardings, mesh = abstract_state(six_heads, (1, 1, 4))
    with pytest.raises(memory_lib.ShardingError) as err:
        memory_lib.report(six_heads, abstract, shardings, mesh, batch_size=8, input_len=32,
                          target_len=16, capacity=0)
    message = str(err.value)
    assert "attention/query dim 1 has size 6, not divisible by tensor=4" in message
    assert "config.mesh.tensor" in message


def estimate(config: T5Config, dims=(1, 1, 1), batch=16, accumulate=1, capacity=None):
    abstract, shardings, mesh = abstract_state(config, dims)
    rows = memory_lib.parameter_rows(config, shardings.params, dict(mesh.shape))
    return memory_lib.estimate(
        config, abstract, rows, dict(mesh.shape), batch_size=batch, input_len=256,
        target_len=128, accumulate_steps=accumulate, capacity=capacity,
    )


def test_memory_knobs_move_the_estimate_the_right_way():
    base = estimate(TINY)
    assert base.params == 4 * sum(
        x.size for x in jax.tree.leaves(abstract_state(TINY, (1, 1, 1))[0].params)
    )
    assert 2 * base.params <= base.optimizer <= 2 * base.params + 64  # Adam's moments, counts
    full = estimate(TINY.replace(remat="full"))
    dots = estimate(TINY.replace(remat="dots"))
    assert full.activations < dots.activations < base.activations
    assert estimate(TINY.replace(dtype="bfloat16")).activations < base.activations
    # Accumulating 4 micro-batches keeps a quarter of the activations (and a
    # second gradient buffer).
    acc = estimate(TINY, accumulate=4)
    assert acc.detail["rows"] == base.detail["rows"] // 4
    assert acc.activations < base.activations / 3
    assert acc.gradients == 2 * base.gradients
    fsdp = estimate(TINY, dims=(1, 8, 1))
    assert fsdp.params <= base.params / 8 * 1.05
    assert fsdp.detail["rows"] == base.detail["rows"] // 8


def test_a_configuration_that_cannot_fit_is_a_clear_error():
    base = estimate(TINY)
    # The lower bound holds the exact state and gradients, and sits below the estimate.
    assert base.params + base.optimizer + base.gradients < base.minimum < base.total
    est = estimate(TINY, capacity=base.minimum - 1)
    with pytest.raises(memory_lib.DoesNotFitError) as err:
        memory_lib.check_fit(est)
    message = str(err.value)
    assert "cannot fit" in message and "memory estimate per device" in message
    assert "remat='full'" in message and "config.mesh.fsdp" in message
    # Between the lower bound and the estimate, and just under the estimate:
    # warnings that point at the compile check, not errors.
    for capacity in (base.minimum + 1, int(base.total / 0.95)):
        warning = memory_lib.check_fit(estimate(TINY, capacity=capacity))
        assert warning.startswith("warning") and "tinyllm_jax.aot" in warning
    assert memory_lib.check_fit(estimate(TINY, capacity=10 * 1024**3)) is None
    assert memory_lib.check_fit(estimate(TINY, capacity=None)) is None  # CPU: unknown


def test_report_raises_before_anything_is_allocated():
    abstract, shardings, mesh = abstract_state(TINY, (1, 1, 1))
    with pytest.raises(memory_lib.DoesNotFitError):
        memory_lib.report(TINY, abstract, shardings, mesh, batch_size=8, input_len=64,
                          target_len=32, capacity=1024**2)


def test_report_prints_table_and_estimate(capsys):
    abstract, shardings, mesh = abstract_state(TINY, (2, 2, 2))
    est = memory_lib.report(TINY, abstract, shardings, mesh, batch_size=8, input_len=64,
                            target_len=32, capacity=0)
    out = capsys.readouterr().out
    assert "token_embedder/embedding" in out and "(tensor, fsdp)" in out
    assert "memory estimate per device" in out and "activations" in out
    assert est.detail["rows"] == 2


# --- the ahead-of-time compile check ---------------------------------------------------------------


def test_compile_check_reports_per_device_memory_without_allocating():
    script = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, "configs")
        from tinyllm_jax import aot
        aot.use_fake_devices(8)
        import jax, tiny
        cfg = tiny.get_config()
        cfg.model.num_layers = 1
        cfg.model.num_decoder_layers = 1
        one = aot.compile_check(cfg, mesh=(1, 8, 1), capacity=1024**3)
        print(json.dumps({"result": one, "live_arrays": len(jax.live_arrays())}))
    """)
    proc = run_checked([sys.executable, "-c", script], fake_device_env(None), timeout=300)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["live_arrays"] == 0  # abstract state and batch only
    r = out["result"]
    assert r["devices"] == 8 and r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    compiled, est = r["compiled_per_device"], r["estimate_per_device"]
    state = est["params"] + est["optimizer"]
    batch = 7 * 4 * (r["batch_size"] // 8) * (r["input_len"] + r["target_len"])
    # Arguments are this device's shard of the state plus its rows of the batch.
    assert state <= compiled["arguments"] <= state * 1.02 + batch + 64
    assert compiled["temp"] > 0 and compiled["peak"] >= compiled["arguments"]
    assert r["fits"] is True


def test_compile_mode_needs_a_complete_mesh():
    proc = subprocess.run(
        [sys.executable, "-m", "tinyllm_jax.main", "--config=configs/tiny.py", "--mode=compile"],
        cwd=REPO, env=fake_device_env(1), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "needs every config.mesh axis set" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None,
                    reason="libtpu is installed: --topology would compile for real")
def test_tpu_topology_without_libtpu_is_a_clear_error():
    proc = subprocess.run(
        [sys.executable, "-m", "tinyllm_jax.aot", "--config=configs/tiny.py", "--mesh=1,4,1",
         "--topology=v5e:2x2"],
        cwd=REPO, env=fake_device_env(None), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "cannot describe TPU topology 'v5e:2x2'" in proc.stderr and "libtpu" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_compile_check_rejects_a_mesh_that_does_not_divide_the_devices():
    proc = subprocess.run(
        [sys.executable, "-m", "tinyllm_jax.aot", "--config=configs/tiny.py", "--mesh=1,3,1",
         "--devices=8"],
        cwd=REPO, env=fake_device_env(1), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "does not divide the 8 devices" in proc.stderr
    assert "Traceback" not in proc.stderr
