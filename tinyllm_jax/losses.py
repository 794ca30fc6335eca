"""Multi-task token cross-entropy: gamma*CE(answer) + sum_k alpha_k*CE(rationale_k).

Each task's CE is normalised over that task's own real target tokens in the
(global) batch, so a long rationale does not drown the short answer task and
packing several tasks into one row changes nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def token_cross_entropy(
    logits: Array, targets: Array, label_smoothing: float = 0.0
) -> tuple[Array, Array]:
    """Per-token CE [B, L] and log-partition log Z [B, L], float32."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = log_z - target_logit
    if label_smoothing:
        mean_nll = log_z - jnp.mean(logits, axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * mean_nll
    return nll, log_z


def task_sums(
    logits: Array, targets: Array, weights: Array, task_ids: Array, num_tasks: int,
    label_smoothing: float = 0.0,
) -> tuple[Array, Array, Array]:
    """Per-task summed CE [T], per-task token counts [T], summed log Z^2."""
    nll, log_z = token_cross_entropy(logits, targets, label_smoothing)
    onehot = jax.nn.one_hot(task_ids, num_tasks, dtype=jnp.float32) * weights[..., None]
    ce_sum = jnp.einsum("bl,blt->t", nll, onehot)
    count = jnp.sum(onehot, axis=(0, 1))
    z_sum = jnp.sum(jnp.square(log_z) * weights)
    return ce_sum, count, z_sum


def combine(
    ce_sum: Array, count: Array, z_sum: Array, coefs: Array, z_loss: float = 0.0
) -> tuple[Array, Array]:
    """Total loss and per-task mean CE from sums taken over the whole batch."""
    per_task = ce_sum / jnp.maximum(count, 1.0)
    loss = jnp.sum(coefs * per_task)
    if z_loss:
        loss = loss + z_loss * z_sum / jnp.maximum(jnp.sum(count), 1.0)
    return loss, per_task
