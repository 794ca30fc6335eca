"""Checks of the tracking fields: `config.train.wandb` and `config.train.profile_steps`."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from tinyllm_jax.spec.fields import Fields, as_dict, split_known
from tinyllm_jax.spec.types import WandbSpec

WANDB_MODES = ("", "online", "offline", "disabled")
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
PROFILE_FORMS = "'' (none), a step '5', a range '5-7' or consecutive steps '5,6'"


def wandb_spec(section: Any, problems: list[str]) -> WandbSpec:
    where = "config.train.wandb"
    values = split_known(as_dict(section, where, problems),
                         [x.name for x in dataclasses.fields(WandbSpec)], where, problems)
    f = Fields(values, WandbSpec, where, problems)
    return WandbSpec(project=f.text("project"), name=f.text("name"), entity=f.text("entity"),
                     mode=f.text("mode", WANDB_MODES))


def profile_range(text: str) -> tuple[int, int] | None:
    """(first, last) step of a `profile_steps` value, None for ""; ValueError
    (saying the accepted forms) for anything else."""
    text = text.strip()
    if not text:
        return None
    if m := _RANGE.match(text):
        first, last = int(m.group(1)), int(m.group(2))
    else:
        try:
            steps = [int(x) for x in text.split(",")]
        except ValueError:
            raise ValueError(f"must be {PROFILE_FORMS}") from None
        if steps != list(range(steps[0], steps[0] + len(steps))):
            raise ValueError(f"{steps} are not consecutive steps: one trace covers one range; "
                             f"give {PROFILE_FORMS}")
        first, last = steps[0], steps[-1]
    if first < 1 or last < first:
        raise ValueError(f"must name steps >= 1, first <= last ({PROFILE_FORMS})")
    return first, last


def profile_steps(f: Fields, steps: int, epochs: float) -> str:
    """The checked `config.train.profile_steps` text."""
    text = f.text("profile_steps")
    try:
        span = profile_range(text)
    except ValueError as e:
        return f.bad("profile_steps", text, str(e))
    if span and not epochs and span[0] > steps:
        return f.bad("profile_steps", text, f"starts after the run's last step "
                     f"(config.train.steps={steps}): nothing would be traced")
    return text
