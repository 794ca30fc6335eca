"""tinyllm_jax: multi-teacher rationale distillation into a Flax T5 student."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tinyllm_jax.student import Student


def __getattr__(name: str):
    # Lazy so `import tinyllm_jax` stays cheap for data-only tools.
    if name == "Student":
        from tinyllm_jax.student import Student

        return Student
    raise AttributeError(f"module 'tinyllm_jax' has no attribute {name!r}")


__all__ = ["Student"]
