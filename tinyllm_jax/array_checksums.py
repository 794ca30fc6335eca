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
bits of the term). Integer addition is exact and order-free, so the sum
can be split any way: each device sums the shards it holds (replica 0 of
each, so every element counts once), each process adds its devices' sums,
and one all-gather adds the processes'. Any sharding, on any number of
hosts, gives the same value. Two such sums with different mixing make the
64-bit value a restore compares. It detects damage, not tampering: it is
not a cryptographic hash.

Cost: one fused pass per shard on its own device (no host copy; one small
program per shard shape, compiled once). docs/reliability.md gives the
measured figures.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import multihost_utils

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


@jax.jit
def _shard_sums(x: jax.Array, offsets: jax.Array, strides: jax.Array) -> jax.Array:
    """The two sums over one shard; `offsets` is where the shard starts in
    the global array of words and `strides` that array's row-major strides
    (both mod 2**32, traced: one program per shard shape, not per array)."""
    words = _words(x)
    index = jnp.zeros(words.shape, jnp.uint32)
    for axis in range(words.ndim):
        index = index + (lax.broadcasted_iota(jnp.uint32, words.shape, axis)
                         + offsets[axis]) * strides[axis]
    mixed = _fmix32(words ^ (index * _INDEX_MIX))
    return jnp.stack([jnp.sum(mixed, dtype=jnp.uint32),
                      jnp.sum(_fmix32(mixed ^ _SECOND_LANE), dtype=jnp.uint32)])


@functools.lru_cache(maxsize=256)
def _word_layout(shape: tuple[int, ...], dtype: Any) -> tuple[int, np.ndarray]:
    """(trailing word axes, row-major strides mod 2**32) of the global array
    of words of an array: 8-byte types and PRNG keys have more than one word
    per element."""
    word_shape = jax.eval_shape(_words, jax.ShapeDtypeStruct(shape, dtype)).shape
    strides, stride = [], 1
    for size in reversed(word_shape):
        strides.append(stride % 2**32)
        stride *= size
    return len(word_shape) - len(shape), np.array(strides[::-1], np.uint32)


def _my_shards(x: jax.Array) -> list[tuple[jax.Array, tuple[slice, ...]]]:
    """(data, global index) of the shards this process counts: of a global
    array, its addressable shards that are replica 0 (each element counted
    once across all processes); an array of this process alone (host data
    included) counts on process 0 only."""
    if not x.is_fully_addressable:
        return [(s.data, s.index) for s in x.addressable_shards if s.replica_id == 0]
    if jax.process_index() != 0:
        return []
    return [(s.data, s.index) for s in x.addressable_shards if s.replica_id == 0]


def tree_checksums(tree: Any) -> dict[str, str]:
    """{path name: 16 hex digits} for every array leaf of `tree`.

    Each device sums its own shards; on several processes the partial sums
    are added with one all-gather, so every process must call this, and all
    get the same result. No program holds a cross-device collective: many
    of them in flight at once could deadlock on CPU collectives (gloo)."""
    named = named_leaves(tree)
    pending: list[tuple[int, jax.Array]] = []
    for i, (_, x) in enumerate(named):
        x = x if isinstance(x, jax.Array) else jnp.asarray(x)
        extra, strides = _word_layout(x.shape, x.dtype)
        for data, index in _my_shards(x):
            offsets = np.array([s.start or 0 for s in index] + [0] * extra, np.uint64)
            pending.append((i, _shard_sums(data, (offsets % 2**32).astype(np.uint32), strides)))
    totals = np.zeros((len(named), 2), np.uint64)
    for (i, _), sums in zip(pending, jax.device_get([p for _, p in pending])):
        totals[i] += np.asarray(sums, np.uint64)
    totals %= 2**32
    if jax.process_count() > 1:
        gathered = multihost_utils.process_allgather(totals.astype(np.uint32))
        totals = np.asarray(gathered, np.uint64).reshape(-1, len(named), 2).sum(axis=0) % 2**32
    return {name: f"{int(a):08x}{int(b):08x}" for (name, _), (a, b) in zip(named, totals)}


def _dtype_name(x: Any) -> str:
    # As tree_checksums sees it: host data goes through jnp.asarray (float32
    # for a Python float, as a restore gives it back).
    return str(x.dtype if isinstance(x, jax.Array) else jnp.asarray(x).dtype)


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
