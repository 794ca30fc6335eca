"""The train state and the pure, jittable multi-task train step.

One forward pass covers every task of the packed batch; the loss is
gamma*CE(answer) + sum_k alpha_k*CE(rationale_k), each CE normalised over
that task's real tokens in the whole global batch. Gradient accumulation
splits the batch into micro-batches inside the step (a `lax.scan`), with the
normalisers taken from the full batch first, so accumulating k micro-batches
gives the same update as one big batch.

Non-finite loss or gradients are detected inside the step: the update is
skipped and `state.nonfinite` counts it, so the host only needs to look at a
counter it fetches with the other metrics anyway, never a sync per step.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tinyllm_jax.losses import combine, task_sums
from tinyllm_jax.models.t5 import T5, T5Config, init_params

Array = jax.Array

# Keys of the Batch contract that the step reads (positions are not needed:
# relative attention uses in-row offsets, which equal in-segment offsets).
STEP_KEYS = (
    "encoder_input_tokens", "encoder_segment_ids", "decoder_input_tokens",
    "decoder_target_tokens", "decoder_segment_ids", "decoder_task_ids", "decoder_loss_weights",
)


@flax.struct.dataclass
class TrainState:
    step: Array
    params: Any
    opt_state: Any
    rng: Array  # raw uint32[2] key data: plain arrays checkpoint everywhere
    nonfinite: Array  # updates skipped because loss or gradients were not finite


def init_state(config: T5Config, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Fresh state; jit this with out_shardings to create it already sharded."""
    key = jax.random.PRNGKey(seed)
    init_key, rng = jax.random.split(key)
    params = flax.linen.meta.unbox(init_params(config, init_key))
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng,
        nonfinite=jnp.zeros((), jnp.int32),
    )


def state_from_params(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
    rng = jax.random.split(jax.random.PRNGKey(seed))[1]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng,
        nonfinite=jnp.zeros((), jnp.int32),
    )


def task_coefficients(answer_weight: float, rationale_weights: Any, num_teachers: int) -> np.ndarray:
    weights = tuple(rationale_weights) or (1.0,) * num_teachers
    if len(weights) != num_teachers:
        raise ValueError(
            f"config.loss.rationale_weights has {len(weights)} values for {num_teachers} teachers"
        )
    return np.asarray((answer_weight, *weights), np.float32)


def make_train_step(
    config: T5Config, tx: optax.GradientTransformation, coefs: np.ndarray, *,
    z_loss: float = 0.0, label_smoothing: float = 0.0, accumulate_steps: int = 1,
    schedule: optax.Schedule | None = None,
):
    """`step(state, batch) -> (state, metrics)`; pure, ready for jax.jit."""
    model = T5(config)
    num_tasks = len(coefs)
    coefs = jnp.asarray(coefs)

    def sums(params: Any, mb: dict[str, Array], rng: Array) -> tuple[Array, Array, Array]:
        logits = model.apply(
            {"params": params}, mb["encoder_input_tokens"], mb["decoder_input_tokens"],
            mb["encoder_segment_ids"], mb["decoder_segment_ids"], enable_dropout=True,
            rngs={"dropout": rng},
        )
        return task_sums(
            logits, mb["decoder_target_tokens"], mb["decoder_loss_weights"],
            mb["decoder_task_ids"], num_tasks, label_smoothing,
        )

    def step(state: TrainState, batch: dict[str, Array]) -> tuple[TrainState, dict[str, Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        onehot = jax.nn.one_hot(batch["decoder_task_ids"], num_tasks) * batch[
            "decoder_loss_weights"][..., None]
        count = onehot.sum(axis=(0, 1))  # the normalisers, from the full batch
        total_tokens = jnp.maximum(count.sum(), 1.0)
        norm = coefs / jnp.maximum(count, 1.0)

        def objective(params: Any, mb: dict[str, Array], key: Array) -> tuple[Array, tuple]:
            ce_sum, _, z_sum = sums(params, mb, key)
            loss = jnp.sum(norm * ce_sum) + z_loss * z_sum / total_tokens
            return loss, (ce_sum, z_sum)

        grad_fn = jax.value_and_grad(objective, has_aux=True)
        if accumulate_steps == 1:
            (loss, (ce_sum, z_sum)), grads = grad_fn(state.params, batch, rng)
        else:
            # Micro-batch j takes rows j, j+k, j+2k...: each keeps the batch's
            # sharding over devices instead of living on a subset of them.
            def split(x: Array) -> Array:
                b = x.shape[0]
                return x.reshape(b // accumulate_steps, accumulate_steps, *x.shape[1:]).swapaxes(0, 1)

            micro = jax.tree.map(split, batch)
            keys = jax.random.split(rng, accumulate_steps)

            def body(carry: tuple, xs: tuple) -> tuple[tuple, None]:
                g_acc, l_acc, ce_acc, z_acc = carry
                mb, key = xs
                (lval, (ce, z)), g = grad_fn(state.params, mb, key)
                g_acc = jax.tree.map(jnp.add, g_acc, g)
                return (g_acc, l_acc + lval, ce_acc + ce, z_acc + z), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            init = (zeros, jnp.zeros(()), jnp.zeros((num_tasks,)), jnp.zeros(()))
            (grads, loss, ce_sum, z_sum), _ = jax.lax.scan(body, init, (micro, keys))

        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt = tx.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)

        def keep_if_finite(new: Any, old: Any) -> Any:
            return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

        new_state = state.replace(
            step=state.step + 1,
            params=keep_if_finite(new_params, state.params),
            opt_state=keep_if_finite(new_opt, state.opt_state),
            nonfinite=state.nonfinite + (~finite).astype(jnp.int32),
        )
        _, per_task = combine(ce_sum, count, z_sum, coefs)
        metrics = {
            "loss": loss, "per_task_ce": per_task, "task_tokens": count,
            "grad_norm": grad_norm, "finite": finite, "nonfinite_total": new_state.nonfinite,
        }
        if z_loss:
            metrics["z_loss"] = z_sum / total_tokens
        if schedule is not None:
            metrics["lr"] = schedule(state.step)
        return new_state, metrics

    return step
