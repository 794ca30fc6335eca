"""Convert T5 parameter trees between the unrolled and the scanned layout.

Unrolled (`scan_layers=False`): `encoder/layers_0/...`, `encoder/layers_1/...`.
Scanned (`scan_layers=True`): `encoder/layers/...`, every array with a
leading axis of length num_layers (layer i is index i). The rest of the tree
(embedding, relative position bias, final norms, LM head) is the same in
both. The conversion is exact (stack and index, no arithmetic), so an HF
checkpoint, or an Orbax checkpoint trained one way, loads the other way.

Leaves may be numpy or JAX arrays, or `jax.ShapeDtypeStruct`s (the abstract
targets of a checkpoint restore); a struct's NamedSharding gains or loses an
unsharded leading axis, matching the `("layers", None)` logical rule.
`convert_state` applies the conversion to every params-shaped subtree of a
larger tree: the train state's params and AdamW's moments.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

STACKS = ("encoder", "decoder")
SCANNED_KEY = "layers"
_LAYER_KEY = re.compile(r"^layers_(\d+)$")


class LayoutError(ValueError):
    """A tree that is neither layout, or a stack whose layers do not line up."""


def _layer_index(key: str) -> int | None:
    m = _LAYER_KEY.match(key)
    return int(m.group(1)) if m else None


def is_params_tree(x: Any) -> bool:
    """A T5 parameter tree (or one shaped like it, e.g. Adam's moments)."""
    return (isinstance(x, Mapping) and all(s in x for s in STACKS)
            and all(isinstance(x[s], Mapping) for s in STACKS))


def layout_of(params: Mapping[str, Any]) -> bool | None:
    """True when scanned, False when unrolled, None when the tree has no layers."""
    return _layout((key for stack in STACKS for key in params.get(stack, {})),
                   "the parameter tree")


def layout_of_paths(paths: Iterable[str]) -> bool | None:
    """The layout of a saved tree from its leaf paths ("params/encoder/layers_0/..."):
    True scanned, False unrolled, None neither (no layer arrays found)."""
    return _layout((b for path in paths for a, b in itertools.pairwise(path.split("/"))
                    if a in STACKS), "the saved tree")


def _layout(keys: Iterable[str], what: str) -> bool | None:
    """The layout the keys found directly under a stack name, or None."""
    found = {key == SCANNED_KEY for key in keys
             if key == SCANNED_KEY or _layer_index(key) is not None}
    if len(found) > 1:
        raise LayoutError(f"{what} mixes scanned ('layers') and unrolled ('layers_N') layers")
    return found.pop() if found else None


# --- leaves -------------------------------------------------------------------


def _stack_spec(sharding: Any, add: bool) -> Any:
    if not isinstance(sharding, NamedSharding):
        return sharding
    spec = tuple(sharding.spec)
    if add:
        return NamedSharding(sharding.mesh, P(None, *spec))
    if spec and spec[0] is not None:
        raise LayoutError(f"the layers axis is sharded ({sharding.spec}); it must stay unsharded")
    return NamedSharding(sharding.mesh, P(*spec[1:]))


def _stack_leaves(leaves: list[Any]) -> Any:
    first = leaves[0]
    if any(getattr(x, "shape", None) != first.shape for x in leaves):
        shapes = sorted({tuple(x.shape) for x in leaves})
        raise LayoutError(f"layers of one stack have different shapes {shapes}")
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype,
                                    sharding=_stack_spec(first.sharding, add=True))
    if isinstance(first, np.ndarray):
        return np.stack(leaves)
    return jnp.stack(leaves)


def _layer_leaf(x: Any, i: int) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=_stack_spec(x.sharding, add=False))
    return x[i]


# --- one parameter tree ---------------------------------------------------------


def _stack_one(stack: Mapping[str, Any], where: str) -> dict[str, Any]:
    layers = {i: v for k, v in stack.items() if (i := _layer_index(k)) is not None}
    rest = {k: v for k, v in stack.items() if _layer_index(k) is None}
    if not layers:
        return dict(stack)
    if sorted(layers) != list(range(len(layers))):
        raise LayoutError(f"{where}: layers {sorted(layers)} are not numbered 0..{len(layers) - 1}")
    if SCANNED_KEY in rest:
        raise LayoutError(f"{where}: holds both 'layers' and 'layers_N'")
    structures = {jax.tree.structure(layers[i]) for i in layers}
    if len(structures) > 1:
        raise LayoutError(f"{where}: the layers hold different parameters")
    ordered = [layers[i] for i in range(len(layers))]
    rest[SCANNED_KEY] = jax.tree.map(lambda *xs: _stack_leaves(list(xs)), *ordered)
    return rest


def _unstack_one(stack: Mapping[str, Any], where: str) -> dict[str, Any]:
    if SCANNED_KEY not in stack:
        return dict(stack)
    rest = {k: v for k, v in stack.items() if k != SCANNED_KEY}
    stacked = stack[SCANNED_KEY]
    lengths = {int(x.shape[0]) if getattr(x, "shape", ()) else None
               for x in jax.tree.leaves(stacked)}
    if len(lengths) != 1 or None in lengths:
        raise LayoutError(f"{where}/layers: arrays disagree on the number of layers "
                          f"(leading axes {sorted(map(str, lengths))})")
    n = lengths.pop()
    for i in range(n):
        rest[f"layers_{i}"] = jax.tree.map(lambda x, i=i: _layer_leaf(x, i), stacked)
    return rest


def to_layout(params: Mapping[str, Any], scanned: bool) -> dict[str, Any]:
    """`params` in the scanned (True) or unrolled (False) layout; a tree already
    in that layout comes back unchanged (a shallow copy)."""
    convert = _stack_one if scanned else _unstack_one
    out = dict(params)
    for stack in STACKS:
        if stack in out:
            out[stack] = convert(out[stack], stack)
    return out


def stack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
    return to_layout(params, scanned=True)


def unstack_layers(params: Mapping[str, Any]) -> dict[str, Any]:
    return to_layout(params, scanned=False)


def convert_state(tree: Any, scanned: bool) -> Any:
    """Every params-shaped subtree of `tree` (a TrainState: params, Adam's
    mu and nu) converted to the layout; everything else as it is."""
    return jax.tree.map(lambda x: to_layout(x, scanned) if is_params_tree(x) else x, tree,
                        is_leaf=is_params_tree)
