"""Per-array checksums of a saved train state, the same on every topology.

Orbax and TensorStore check no array contents: a flipped byte or a damaged
block inside an array data file reads back without an error, as different
numbers. So every checkpoint records one checksum per array, and a restore
compares the arrays it read with them.

The checksum must come out the same whether the array lives on one device
or is sharded over the hosts of a pod, and whichever topology restores it.
It is a sum, modulo 2**32, of one mixed 32-bit word per element: the
element's bits mixed with its global flat index (so moved elements count),
through MurmurHash3's finaliser (so one flipped bit changes about half the
bits of the term). Integer addition is exact and order-free, so XLA may
split the sum over devices and hosts in any way and every process gets the
same result; each device reads only its own shards. Two such sums with
different mixing make the 64-bit value a restore compares. It detects
damage, not tampering: it is not a cryptographic hash.

Cost: one fused pass over the state on its devices (no host copy), compiled
once per state structure. docs/reliability.md gives the measured figures.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

ALGORITHM = "murmur3-fmix32-sum-2x32"
_M1, _M2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)
_INDEX_MIX = np.uint32(0x9E3779B1)  # 2**32 / golden ratio
_SECOND_LANE = np.uint32(0x27D4EB2F)
_NARROW = {1: jnp.uint8, 2: jnp.uint16}


def path_name(path: tuple[Any, ...]) -> str:
    """"params/encoder/layers_0/..." for a pytree key path (dict keys,
    dataclass fields and sequence indices)."""
    names = []
    for k in path:
        for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
            if hasattr(k, attr):
                names.append(str(getattr(k, attr)))
                break
    return "/".join(names)


def named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """(path name, leaf) for every leaf of a pytree, in tree order."""
    return [(path_name(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _fmix32(h: jax.Array) -> jax.Array:
    h = h ^ (h >> 16)
    h = h * _M1
    h = h ^ (h >> 13)
    h = h * _M2
    return h ^ (h >> 16)


def _words(x: jax.Array) -> jax.Array:
    """The array's bits as uint32 words, one per element (two for 64-bit types)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size in _NARROW:
        return lax.bitcast_convert_type(x, _NARROW[size]).astype(jnp.uint32)
    # 4 bytes: one word; 8 bytes: a trailing axis of two words.
    return lax.bitcast_convert_type(x, jnp.uint32)


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
    """Each element's row-major index in the global array (mod 2**32). Built
    from iotas, which XLA generates per shard: nothing is materialised."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        index = index + lax.broadcasted_iota(jnp.uint32, shape, axis) * np.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


def _leaf_sums(x: jax.Array) -> jax.Array:
    words = _words(x)
    mixed = _fmix32(words ^ (_flat_index(words.shape) * _INDEX_MIX))
    return jnp.stack([jnp.sum(mixed, dtype=jnp.uint32),
                      jnp.sum(_fmix32(mixed ^ _SECOND_LANE), dtype=jnp.uint32)])


@functools.lru_cache(maxsize=8)
def _program(out_sharding: NamedSharding | None) -> Any:
    # One small program per array shape, not one over the whole tree: XLA
    # compiles a 500-array program for seconds, these in milliseconds each,
    # and the dispatches overlap. Replicated output: every process reads the
    # same value from its own devices.
    return jax.jit(_leaf_sums, out_shardings=out_sharding)


def _replicated_like(x: Any) -> NamedSharding | None:
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    return None


def tree_checksums(tree: Any) -> dict[str, str]:
    """{path name: 16 hex digits} for every array leaf of `tree`.

    Every process must call this on a sharded tree (each array's program is
    a collective); all of them get the same result."""
    named = named_leaves(tree)
    pending = []
    for _, x in named:
        x = x if isinstance(x, jax.Array) else jnp.asarray(x)
        pending.append(_program(_replicated_like(x))(x))
    sums = jax.device_get(pending)
    return {name: f"{int(a):08x}{int(b):08x}" for (name, _), (a, b) in zip(named, sums)}


def _dtype_name(x: Any) -> str:
    return str(x.dtype) if hasattr(x, "dtype") else str(np.asarray(x).dtype)


def checksum_record(tree: Any) -> dict[str, Any]:
    """What a checkpoint stores: the algorithm, and each array's checksum,
    shape and dtype (a restore into another dtype cannot be compared)."""
    sums = tree_checksums(tree)
    arrays = {name: {"checksum": sums[name], "shape": list(np.shape(x)), "dtype": _dtype_name(x)}
              for name, x in named_leaves(tree)}
    return {"algorithm": ALGORITHM, "arrays": arrays}


def record_problems(record: Any) -> list[str]:
    """Why a stored record cannot be used to verify arrays ([] = usable)."""
    if not isinstance(record, dict) or not isinstance(record.get("arrays"), dict):
        return ["it holds no 'arrays' object"]
    if record.get("algorithm") != ALGORITHM:
        return [f"unknown checksum algorithm {record.get('algorithm')!r} (expected {ALGORITHM!r})"]
    bad = [name for name, entry in record["arrays"].items()
           if not (isinstance(entry, dict) and isinstance(entry.get("checksum"), str))]
    return [f"array {bad[0]!r} has no checksum string"] if bad else []


def mismatches(record: dict[str, Any], tree: Any, limit: int = 5) -> tuple[list[str], list[str]]:
    """(problems, unverified) of the arrays of `tree` against a stored record.

    A problem is an array whose checksum differs, or one the record does not
    list; `unverified` names arrays restored into another dtype than saved
    (a cast), whose bits cannot be compared. `tree` may be part of the saved
    state (e.g. only the parameters): only its arrays are checked."""
    arrays = record["arrays"]
    named = named_leaves(tree)
    comparable = {}
    problems, unverified = [], []
    for name, x in named:
        entry = arrays.get(name)
        if entry is None:
            problems.append(f"array {name} has no recorded checksum")
        elif entry.get("dtype") not in (None, _dtype_name(x)):
            unverified.append(name)
        else:
            comparable[name] = x
    if comparable:
        for name, got in tree_checksums(comparable).items():
            want = arrays[name]["checksum"]
            if got != want:
                problems.append(f"array {name} does not match its checksum "
                                f"(recorded {want}, read {got})")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more arrays"]
    return problems, unverified
