"""The one setup path of the train step, shared by training, evaluation, the
ahead-of-time compile check (aot.py) and the benchmarks.

    mesh = run_mesh(spec)
    built = build(spec, mesh, total_steps=N)         # model, optimizer, shardings, step
    memory_report(built, batch_size=..., input_len=..., target_len=...)
    compiled, seconds = compile_step(built, batch)   # a real or an abstract batch
    state = create_state(built)                      # or restore into built.abstract_state

Everything that decides what the step computes (the model config, the task
coefficients, the optimizer and its schedule, the shardings, donation) is
decided here once, so a compile check on fake devices compiles exactly the
program that training runs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
from flax import linen as nn

from tinyllm_jax import memory as memory_lib
from tinyllm_jax import sharding as shard_lib
from tinyllm_jax.checkpoint import run_meta as checkpoint_meta
from tinyllm_jax.models.hf import load_hf_checkpoint, load_hf_config
from tinyllm_jax.models.t5 import T5Config, abstract_params
from tinyllm_jax.optim import make_optimizer
from tinyllm_jax.spec import RUNTIME_MODEL_FIELDS, RunSpec
from tinyllm_jax.train_step import (
    STEP_KEYS,
    TrainState,
    init_state,
    make_train_step,
    state_from_params,
    task_coefficients,
)


@dataclasses.dataclass(frozen=True)
class Built:
    """What one run's train step is made of; `step` is jitted, donating the state."""

    spec: RunSpec
    mesh: jax.sharding.Mesh
    model: T5Config
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    abstract_state: TrainState  # ShapeDtypeStructs carrying their shardings
    shardings: TrainState
    coefficients: np.ndarray
    batch_sharding: jax.sharding.NamedSharding
    step: Callable[..., Any]


def model_config(spec: RunSpec) -> T5Config:
    """The student's shape: `init_from`'s config.json when set (with this run's
    runtime choices: dtype, remat, dropout), else `config.model`."""
    if spec.init_from:
        runtime = {k: getattr(spec.model, k) for k in RUNTIME_MODEL_FIELDS}
        return load_hf_config(spec.init_from).replace(**runtime)
    return spec.model


def check_batch(mesh: jax.sharding.Mesh, batch_size: int, what: str) -> None:
    divisor = shard_lib.batch_divisor(mesh)
    if batch_size % divisor:
        raise ValueError(f"{what}={batch_size} must be divisible by the data*fsdp mesh size "
                         f"{divisor} (mesh {dict(mesh.shape)})")


def run_mesh(spec: RunSpec, devices: list | None = None, *, train: bool = True
             ) -> jax.sharding.Mesh:
    """The run's mesh, with the batch sizes checked against it before anything is read."""
    mesh = shard_lib.make_mesh(spec.mesh, devices)
    if train:
        check_batch(mesh, spec.train.batch_size, "config.train.batch_size")
        micro = spec.train.batch_size // spec.optimizer.accumulate_steps
        check_batch(mesh, micro, "the micro-batch (config.train.batch_size / "
                    "config.optimizer.accumulate_steps)")
    check_batch(mesh, spec.eval.batch_size, "config.train.eval_batch_size")
    return mesh


def state_shardings(config: T5Config, tx: Any, mesh: jax.sharding.Mesh) -> tuple[Any, Any]:
    """(abstract state, shardings) without allocating anything."""
    param_sh = shard_lib.logical_to_sharding(abstract_params(config), mesh)
    abstract = jax.eval_shape(lambda: init_state(config, tx, 0))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    opt_sh = shard_lib.like_params_sharding(abstract.opt_state, abstract.params, param_sh, mesh)
    shardings = TrainState(
        step=replicated, params=param_sh, opt_state=opt_sh, rng=replicated, nonfinite=replicated
    )
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return abstract, shardings


def build(spec: RunSpec, mesh: jax.sharding.Mesh, *, total_steps: int,
          model: T5Config | None = None) -> Built:
    """Model config, optimizer, shardings, coefficients and the jitted step.

    `total_steps` sets the learning-rate schedule's length; `model` replaces
    the spec's model (the compile check's `--model`)."""
    config = model or model_config(spec)
    tx, schedule = make_optimizer(spec.optimizer, total_steps)
    abstract, shardings = state_shardings(config, tx, mesh)
    coefs = task_coefficients(spec.loss.answer_weight, spec.loss.rationale_weights,
                              len(spec.data.teachers))
    step = make_train_step(
        config, tx, coefs, z_loss=spec.loss.z_loss, label_smoothing=spec.loss.label_smoothing,
        accumulate_steps=spec.optimizer.accumulate_steps, schedule=schedule,
    )
    batch_sh = shard_lib.batch_sharding(mesh)
    jitted = jax.jit(
        step, in_shardings=(shardings, {k: batch_sh for k in STEP_KEYS}),
        out_shardings=(shardings, None), donate_argnums=(0,),
    )
    return Built(spec=spec, mesh=mesh, model=config, tx=tx, schedule=schedule,
                 abstract_state=abstract, shardings=shardings, coefficients=coefs,
                 batch_sharding=batch_sh, step=jitted)


def memory_report(built: Built, *, batch_size: int, input_len: int, target_len: int,
                  capacity: int | None = None, print_table: bool = True, check: bool = True,
                  ) -> memory_lib.MemoryEstimate:
    """Parameter table and memory estimate; fails before any allocation when a
    dimension does not divide its mesh axes or (`check`) the step cannot fit."""
    return memory_lib.report(
        built.model, built.abstract_state, built.shardings, built.mesh, batch_size=batch_size,
        input_len=input_len, target_len=target_len,
        accumulate_steps=built.spec.optimizer.accumulate_steps, capacity=capacity,
        print_table=print_table, check=check,
    )


def abstract_batch(built: Built, batch_size: int, input_len: int, target_len: int
                   ) -> dict[str, jax.ShapeDtypeStruct]:
    """The step's batch as shapes only (the compile check allocates nothing)."""
    lengths = {"encoder": input_len, "decoder": target_len}
    return {
        k: jax.ShapeDtypeStruct(
            (batch_size, lengths[k.split("_")[0]]),
            np.float32 if k == "decoder_loss_weights" else np.int32,
            sharding=built.batch_sharding,
        )
        for k in STEP_KEYS
    }


def device_batch(built: Built, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This host's rows of a batch as global arrays on the mesh (the step's keys only)."""
    return shard_lib.global_batch({k: host_batch[k] for k in STEP_KEYS}, built.mesh)


def compile_step(built: Built, batch: dict[str, Any], state: Any = None) -> tuple[Any, float]:
    """(compiled step, seconds to lower and compile) for `batch`'s shapes."""
    t0 = time.perf_counter()
    with jax.set_mesh(built.mesh), nn.logical_axis_rules(shard_lib.LOGICAL_RULES):
        lowered = built.step.lower(built.abstract_state if state is None else state, batch)
        compiled = lowered.compile()
    return compiled, time.perf_counter() - t0


def _global_from_host(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx: np.asarray(x)[idx]),
        tree, shardings,
    )


def create_state(built: Built) -> TrainState:
    """A fresh sharded state: `init_from`'s weights when set, else a random init."""
    spec = built.spec
    if spec.init_from:
        _, params = load_hf_checkpoint(spec.init_from, scan_layers=built.model.scan_layers)
        params = _global_from_host(params, built.shardings.params)
        fn = jax.jit(lambda p: state_from_params(p, built.tx, spec.seed),
                     out_shardings=built.shardings)
        return fn(params)
    fn = jax.jit(lambda: init_state(built.model, built.tx, spec.seed),
                 out_shardings=built.shardings)
    return fn()


def run_meta(spec: RunSpec, model: T5Config, vocab: int) -> dict[str, Any]:
    """What a checkpoint of this run records about it (checked on resume and eval)."""
    return checkpoint_meta(model, teachers=spec.data.teachers, tokenizer=spec.data.tokenizer,
                           dataset=spec.data.name, vocab=vocab)
