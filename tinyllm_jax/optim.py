"""Optimizer and learning-rate schedule from `config.optimizer`."""

from __future__ import annotations

from typing import Any

import optax


def schedule(opt_cfg: Any, total_steps: int) -> optax.Schedule:
    lr, warm = float(opt_cfg.lr), int(opt_cfg.warmup_steps)
    end = lr * float(opt_cfg.end_lr_fraction)
    decay_steps = max(total_steps - warm, 1)
    if opt_cfg.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif opt_cfg.schedule == "linear":
        after = optax.linear_schedule(lr, end, decay_steps)
    elif opt_cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
    else:
        raise ValueError(
            f"config.optimizer.schedule must be constant, linear or cosine, got {opt_cfg.schedule!r}"
        )
    if warm <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def make_optimizer(opt_cfg: Any, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    sched = schedule(opt_cfg, total_steps)
    if opt_cfg.name == "adamw":
        core = optax.adamw(
            sched, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
            weight_decay=opt_cfg.weight_decay,
        )
    elif opt_cfg.name == "adafactor":
        core = optax.adafactor(sched, weight_decay_rate=opt_cfg.weight_decay or None)
    else:
        raise ValueError(f"config.optimizer.name must be adamw or adafactor, got {opt_cfg.name!r}")
    parts = []
    if opt_cfg.clip_norm:
        parts.append(optax.clip_by_global_norm(float(opt_cfg.clip_norm)))
    parts.append(core)
    return optax.chain(*parts), sched
