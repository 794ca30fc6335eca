"""The interface every timed system of the train-step benchmark implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

from tinyllm_jax.data.features import TaskFeature


class System(abc.ABC):
    """prepare(features) builds a batch on the host (untimed); step(prepared) -> loss."""

    name: str
    row_shape: tuple[int, int, int] | None = None  # (rows, input_len, target_len) if fixed

    @abc.abstractmethod
    def executed_flops(self, features: Sequence[TaskFeature]) -> float:
        """FLOPs a step on these pairs executes, padding and whole-row attention included."""

    @abc.abstractmethod
    def prepare(self, features: Sequence[TaskFeature]) -> Any:
        """The host-side batch for these pairs (untimed)."""

    @abc.abstractmethod
    def step(self, prepared: Any) -> float:
        """One optimizer update on a prepared batch; returns its loss once the step is done."""

    def compile_all(self, prepared: Sequence[Any]) -> float:
        """Seconds spent compiling for these batches before any step (0 when eager)."""
        return 0.0

    def after_step(self) -> None:  # noqa: B027 - optional hook, most systems need none
        """Untimed housekeeping between steps."""
