"""Restoring a checkpoint written in the other layer layout.

A run with `config.model.scan_layers=True` saves its parameters (and
AdamW's moments) stacked on a leading layers axis; an unrolled run saves
`layers_{i}` arrays. `scan_layers` is a runtime choice (it is not part of
the run description), so a resume, an evaluation or `Student.from_workdir`
may ask for either layout. The checkpointer reads the arrays as they were
saved (so their checksums are checked against what was written), then
converts them here (models/layer_stacking.py: exact, no arithmetic) and
places them like the requested state.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jax

from tinyllm_jax import array_checksums
from tinyllm_jax.models.layer_stacking import convert_state, layout_of_paths


def layout_of_tree(tree: Any) -> bool | None:
    """True scanned, False unrolled, None when the tree holds no layer arrays."""
    return layout_of_paths(name for name, _ in array_checksums.named_leaves(tree))


def saved_target(saved_paths: Iterable[str], abstract: Any) -> Any:
    """`abstract` (ShapeDtypeStructs) in the layout of the saved arrays whose
    paths are `saved_paths`; `abstract` itself when the layouts agree."""
    saved, wanted = layout_of_paths(saved_paths), layout_of_tree(abstract)
    if saved is None or wanted is None or saved == wanted:
        return abstract
    return convert_state(abstract, saved)


def placed_like(tree: Any, abstract: Any) -> Any:
    """`tree` (as restored) converted to `abstract`'s layout and placed with its
    shardings; `tree` itself when it is already in that layout."""
    wanted = layout_of_tree(abstract)
    if wanted is None or layout_of_tree(tree) in (None, wanted):
        return tree
    convert = functools.partial(convert_state, scanned=wanted)
    shardings = [getattr(a, "sharding", None) for a in jax.tree.leaves(abstract)]
    if any(s is None for s in shardings):
        return convert(tree)
    # One program: the stacked (or sliced) arrays land on their final devices.
    out_shardings = jax.tree.unflatten(jax.tree.structure(abstract), shardings)
    return jax.jit(convert, out_shardings=out_shardings)(tree)
