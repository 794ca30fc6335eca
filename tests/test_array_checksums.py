"""Per-array checksums: every dtype a state holds, any changed element
detected, and the same value whatever the sharding (checked on 8 fake CPU
devices in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tinyllm_jax.array_checksums import checksum_record, mismatches, record_problems, tree_checksums

REPO = Path(__file__).resolve().parents[1]


def _tree() -> dict:
    w = jax.random.normal(jax.random.PRNGKey(0), (16, 8))
    return {
        "f32": w, "bf16": w.astype(jnp.bfloat16), "f16": w.astype(jnp.float16),
        "i32": jnp.arange(10, dtype=jnp.int32), "u8": jnp.arange(7, dtype=jnp.uint8),
        "bool": jnp.array([True, False, True]), "scalar": jnp.float32(3.0),
        "empty": jnp.zeros((0, 4)), "key": jax.random.key(1), "host": np.arange(4.0),
    }


def test_every_leaf_gets_a_64_bit_checksum_and_the_same_one_twice() -> None:
    sums = tree_checksums(_tree())
    assert sorted(sums) == sorted(_tree())
    assert all(len(v) == 16 and int(v, 16) >= 0 for v in sums.values())
    assert tree_checksums(_tree()) == sums
    # Different values give different checksums (bf16 and f32 of one array too).
    assert len({sums[k] for k in ("f32", "bf16", "f16", "i32", "u8")}) == 5


def test_any_changed_element_is_detected() -> None:
    w = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (16, 8)))
    base = tree_checksums({"w": w})["w"]
    bits = w.view(np.uint32)
    for flat in (0, 7, 64, 127):
        for bit in (0, 13, 31):
            changed = bits.copy()
            changed.flat[flat] ^= np.uint32(1 << bit)
            assert tree_checksums({"w": changed.view(np.float32)})["w"] != base, (flat, bit)
    swapped = w.copy()
    swapped[0, 0], swapped[3, 5] = w[3, 5], w[0, 0]
    assert tree_checksums({"w": swapped})["w"] != base


def test_mismatches_checks_only_the_given_part_and_names_arrays() -> None:
    state = {"params": {"w": jnp.ones((4, 4)), "b": jnp.zeros(4)}, "opt": jnp.ones(3)}
    record = checksum_record(state)
    assert record_problems(record) == []
    assert mismatches(record, {"params": state["params"]}) == ([], [])
    damaged = {"params": {"w": jnp.ones((4, 4)).at[1, 2].set(2.0), "b": jnp.zeros(4)}}
    problems, unverified = mismatches(record, damaged)
    assert unverified == [] and len(problems) == 1
    assert problems[0].startswith("array params/w does not match its checksum (recorded ")
    problems, _ = mismatches(record, {"params": {"extra": jnp.ones(2)}})
    assert problems == ["array params/extra has no recorded checksum"]
    # Restored into another dtype (a cast): its bits cannot be compared.
    assert mismatches(record, {"opt": jnp.ones(3, jnp.bfloat16)}) == ([], ["opt"])


@pytest.mark.parametrize("record, problem", [
    ([], "it holds no 'arrays' object"),
    ({"algorithm": "crc32", "arrays": {}}, "unknown checksum algorithm 'crc32'"),
    ({"algorithm": "murmur3-fmix32-sum-2x32", "arrays": {"w": {"checksum": 5}}},
     "array 'w' has no checksum string"),
])
def test_unusable_records_are_named(record: object, problem: str) -> None:
    assert record_problems(record)[0].startswith(problem)


SHARDED = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from tinyllm_jax.array_checksums import tree_checksums
    w = jax.random.normal(jax.random.PRNGKey(0), (16, 24))
    tree = {"w": w, "bf16": w.astype(jnp.bfloat16), "i": jnp.arange(48, dtype=jnp.int32)}
    mesh = jax.make_mesh((2, 4), ("a", "b"))
    results = [tree_checksums(tree)]
    for wspec, ispec in ((P("a", "b"), P("b")), (P(None, "b"), P(("a", "b"))), (P(), P())):
        placed = {k: jax.device_put(v, NamedSharding(mesh, ispec if k == "i" else wspec))
                  for k, v in tree.items()}
        results.append(tree_checksums(placed))
    print(json.dumps(results))
""")


def test_checksum_does_not_depend_on_the_sharding() -> None:
    import json

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    done = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True,
                          env=env, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(r == results[0] for r in results[1:]), results


def test_overhead_benchmark_runs(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import checkpoint_checksums

    out = checkpoint_checksums.main(["--size=tiny", "--repeats=1",
                                     f"--json={tmp_path / 'out.json'}"])
    assert out["arrays"] > 50 and out["checksum_s"] > 0
    assert {"save_overhead", "save_blocking_overhead", "restore_overhead"} <= set(out)
