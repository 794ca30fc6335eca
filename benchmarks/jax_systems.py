"""System (a), our jitted train step, and its ablations (variants with one optimisation off).

(a) runs the trainer's step as `tinyllm_jax.setup.build` makes it (jitted,
donating the state, on a one-device mesh) on the batch's pairs packed into rows by the trainer's packer
(workload.py), every task in one forward. Each ablation changes one thing:
the row layout, donation, the model dtype or remat, or one of the model's
XLA:CPU workarounds swapped back for the straightforward code (MODEL_SWAPS).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flops import row_flops
from system import System
from workload import Workload

from tinyllm_jax import setup as setup_lib
from tinyllm_jax.data.features import TaskFeature
from tinyllm_jax.data.packing import materialize_rows
from tinyllm_jax.losses import token_cross_entropy
from tinyllm_jax.models import layers
from tinyllm_jax.models.t5 import T5, T5Config
from tinyllm_jax.optim import make_optimizer
from tinyllm_jax.sharding import make_mesh
from tinyllm_jax.spec import DataSpec, MeshSpec, OptimizerSpec, RunSpec, TrainSpec
from tinyllm_jax.train_step import STEP_KEYS, make_train_step, state_from_params

ABLATIONS = ("bucketed-rows", "unpacked", "per-task", "threefry-dropout", "3d-dots", "bias-reduce",
             "no-donation", "bf16", "remat-full", "remat-dots")


def optimizer_spec(args: argparse.Namespace) -> OptimizerSpec:
    """The trainer's AdamW at a constant learning rate, from the benchmark's flags."""
    return OptimizerSpec(name="adamw", lr=args.lr, schedule="constant",
                         weight_decay=args.weight_decay, clip_norm=args.clip_norm)


def make_tx(args: argparse.Namespace) -> optax.GradientTransformation:
    return make_optimizer(optimizer_spec(args), total_steps=1)[0]


def run_spec(cfg: T5Config, args: argparse.Namespace, num_teachers: int, rows: int) -> RunSpec:
    """The training run this benchmark's (a) steps: one device, the flags' optimizer."""
    teachers = tuple(f"teacher{k}" for k in range(1, num_teachers + 1))
    return RunSpec(seed=args.seed, model=cfg, data=DataSpec(teachers=teachers),
                   optimizer=optimizer_spec(args), train=TrainSpec(batch_size=rows),
                   mesh=MeshSpec(data=1))


def _bernoulli_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    return jax.random.bernoulli(key, 1.0 - rate, shape)  # Flax nn.Dropout's threefry way


def _tensordot(x: jax.Array, w: jax.Array, n: int, dtype: Any) -> jax.Array:
    return jnp.tensordot(x.astype(dtype), w.astype(dtype), axes=n)  # 3-D dots, as einsum did


def _plain_add(scores: jax.Array, bias: jax.Array) -> jax.Array:
    return scores + bias  # autodiff's leading-axis reduce for the bias gradient


# Ablations that trace the model with one of its optimisations swapped back
# for the straightforward code: (tinyllm_jax.models.layers attribute, replacement).
MODEL_SWAPS = {
    "threefry-dropout": ("dropout_keep_mask", _bernoulli_mask),
    "3d-dots": ("dense", _tensordot),
    "bias-reduce": ("add_shared_bias", _plain_add),
}


@contextlib.contextmanager
def _swapped(ablation: str | None) -> Iterator[None]:
    """Trace with tinyllm_jax.models.layers.<attr> replaced (looked up at trace time)."""
    if ablation not in MODEL_SWAPS:
        yield
        return
    attr, replacement = MODEL_SWAPS[ablation]
    original = getattr(layers, attr)
    setattr(layers, attr, replacement)
    try:
        yield
    finally:
        setattr(layers, attr, original)


def make_per_task_step(cfg: T5Config, tx: optax.GradientTransformation,
                       coefs: np.ndarray) -> Callable:
    """Ablation: the recipe's structure in JAX, one forward per task, losses summed."""
    model = T5(cfg)
    coefs = np.asarray(coefs, np.float32)

    def step(state: Any, batches: tuple[dict[str, jax.Array], ...]) -> tuple[Any, dict]:
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params: Any) -> jax.Array:
            total = jnp.zeros(())
            for t, b in enumerate(batches):
                logits = model.apply(
                    {"params": params}, b["encoder_input_tokens"], b["decoder_input_tokens"],
                    b["encoder_segment_ids"], b["decoder_segment_ids"], enable_dropout=True,
                    rngs={"dropout": jax.random.fold_in(rng, t)},
                )
                nll, _ = token_cross_entropy(logits, b["decoder_target_tokens"])
                w = b["decoder_loss_weights"]
                total = total + coefs[t] * jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)
            return total

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {
            "loss": loss}

    return step


class JaxSystem(System):
    """Our step. Layouts:

    - "packed" (a): the pairs in the trainer's packed rows of (input_len,
      target_len). With `fixed_rows` (what (a) runs, training's policy: one
      row count per step, one compiled program), every batch is padded with
      empty rows to `rows`, the most any batch of the split needs. Without
      it (the bucketed-rows ablation), as many rows as the pairs take, one
      compiled program per row count met (all compiled before timing).
    - "unpacked": a pair per row, `rows` rows, one forward for all tasks.
    - "per-task": as unpacked, one forward per task (`rows` rows each).
    """

    def __init__(
        self, name: str, cfg: T5Config, params: Any, coefs: np.ndarray, args: argparse.Namespace,
        *, layout: str, shape: tuple[int, int, int],
        pack: Callable[[Sequence[TaskFeature]], list[list[int]]] | None = None,
        donate: bool = True, swap: str | None = None, fixed_rows: bool = False,
    ) -> None:
        if layout == "packed" and pack is None:
            raise ValueError(f"{name}: the packed layout needs a packer")
        self.name, self.cfg, self.layout, self.pack = name, cfg, layout, pack
        self.dtype = cfg.dtype
        self.rows, self.input_len, self.target_len = shape
        self.bucketed = layout == "packed" and not fixed_rows
        self.row_shape = shape
        self.swap = swap
        tx = make_tx(args)
        self.state = state_from_params(jax.tree.map(jnp.asarray, params), tx, args.seed)
        self.built = None
        if layout == "per-task":
            self.fn = jax.jit(make_per_task_step(cfg, tx, coefs), donate_argnums=(0,))
        elif not donate:
            self.fn = jax.jit(make_train_step(cfg, tx, coefs))
        else:
            # The trainer's own step, from the one setup path training uses.
            spec = run_spec(cfg, args, len(coefs) - 1, self.rows)
            mesh = make_mesh(spec.mesh, jax.devices()[:1])
            self.built = setup_lib.build(spec, mesh, total_steps=1, model=cfg)
            self.fn = self.built.step
        self.compiled: dict[int, Any] = {}  # rows -> executable
        self.num_tasks = len(coefs)

    def _plan(self, features: Sequence[TaskFeature]) -> list[list[int]]:
        if self.layout == "packed":
            plan = self.pack(features)
        else:
            plan = [[i] for i in range(len(features))]
        if len(plan) > self.rows:
            raise ValueError(f"{self.name}: batch needs {len(plan)} rows, the step has {self.rows}")
        return plan if self.bucketed else plan + [[]] * (self.rows - len(plan))

    def executed_flops(self, features: Sequence[TaskFeature]) -> float:
        rows = self.num_tasks * self.rows if self.layout == "per-task" else len(
            self._plan(features))
        return rows * row_flops(self.cfg, self.input_len, self.target_len)

    def prepare(self, features: Sequence[TaskFeature]) -> Any:
        li, lt = self.input_len, self.target_len
        if self.layout == "per-task":
            per_task = []
            for t in range(self.num_tasks):
                plan = [[i] for i, f in enumerate(features) if f.task_id == t]
                b = materialize_rows(features, plan + [[]] * (self.rows - len(plan)), li, lt)
                per_task.append({k: jnp.asarray(b[k]) for k in STEP_KEYS})
            return tuple(per_task)
        b = materialize_rows(features, self._plan(features), li, lt)
        return {k: jnp.asarray(b[k]) for k in STEP_KEYS}

    @staticmethod
    def rows_of(prepared: Any) -> int:
        """Rows of a prepared batch (of each task's batch for per-task)."""
        first = prepared[0] if isinstance(prepared, tuple) else prepared
        return int(first["encoder_input_tokens"].shape[0])

    def compile_all(self, prepared: Sequence[Any]) -> float:
        t0 = time.perf_counter()
        for p in prepared:
            key = self.rows_of(p)
            if key not in self.compiled:
                with _swapped(self.swap):
                    if self.built is not None:
                        self.compiled[key], _ = setup_lib.compile_step(self.built, p, self.state)
                    else:
                        self.compiled[key] = self.fn.lower(self.state, p).compile()
        return time.perf_counter() - t0

    def executable(self, prepared: Any) -> Any:
        """The compiled program that steps this prepared batch."""
        return self.compiled[self.rows_of(prepared)]

    def step(self, prepared: Any) -> float:
        self.state, metrics = self.executable(prepared)(self.state, prepared)
        return float(metrics["loss"])  # blocks until the step is done


def jax_systems(
    args: argparse.Namespace, cfg: T5Config, params: Any, coefs: np.ndarray, work: Workload,
    ablations: Sequence[str],
) -> list[JaxSystem]:
    """(a) when asked for, then one variant of it per ablation, each with its own state."""
    li, lt = work.row_shape
    most = max(len(work.packed_rows(b)) for b in work.all_batches)
    packed = (most, li, lt)
    # Unpacked ablations: a pair per row, padded to the longest input / target
    # of the split rounded up to 64 (a fixed shape; not to the 512 / 256
    # limits, which would need more memory than the machine has).
    longest_in = max(len(f.inputs) for b in work.all_batches for f in b)
    longest_t = max(len(f.targets) for b in work.all_batches for f in b)
    ui, ut = -(-longest_in // 64) * 64, -(-longest_t // 64) * 64
    unpacked = (max(len(b) for b in work.all_batches), ui, ut)
    per_task = (args.batch, ui, ut)
    systems = []
    wanted = args.systems.split(",")
    # Training's policy: a fixed row count per step, so one program.
    if "a" in wanted:
        systems.append(JaxSystem("(a) tinyllm_jax packed, float32", cfg, params, coefs, args,
                                 layout="packed", shape=packed, pack=work.packed_rows,
                                 fixed_rows=True))
    if "a16" in wanted:
        systems.append(JaxSystem("(a16) tinyllm_jax packed, bf16 compute", cfg.replace(
            dtype="bfloat16"), params, coefs, args, layout="packed", shape=packed,
            pack=work.packed_rows, fixed_rows=True))
    for abl in ablations:
        c, kw = cfg, {"layout": "packed", "shape": packed, "pack": work.packed_rows,
                      "fixed_rows": True}
        if abl == "bucketed-rows":
            kw["fixed_rows"] = False  # as many rows as each batch needs: a program per count
        elif abl == "no-donation":
            kw["donate"] = False
        elif abl in MODEL_SWAPS:
            kw["swap"] = abl
        elif abl == "unpacked":
            kw.update(layout="unpacked", shape=unpacked)
        elif abl == "per-task":
            kw.update(layout="per-task", shape=per_task)
        elif abl == "bf16":
            c = cfg.replace(dtype="bfloat16")
        else:
            c = cfg.replace(remat=abl.split("-")[1])
        systems.append(JaxSystem(f"(a) {abl}", c, params, coefs, args, **kw))
    return systems
