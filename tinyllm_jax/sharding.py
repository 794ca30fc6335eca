"""Device mesh, logical-axis rules and placement of state and batches.

The mesh has three axes: `data` (pure data parallel), `fsdp` (data parallel
whose parameters, gradients and optimizer state are sharded too) and
`tensor` (heads, MLP and vocabulary split across devices). Model code only
names logical axes; `LOGICAL_RULES` maps them onto the mesh. Flax assigns a
mesh axis at most once per array, so activations' `embed` stays unsharded
where `batch` already uses `fsdp`.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tinyllm_jax.spec import DistributedSpec, MeshSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),
    ("kv", None),
    ("length", None),
    ("relpos_buckets", None),
    ("layers", None),
)


def mesh_shape(mesh_cfg: MeshSpec, num_devices: int) -> tuple[int, int, int]:
    """Resolve -1 (at most one) to the devices left over; check the product."""
    dims = [int(mesh_cfg.data), int(mesh_cfg.fsdp), int(mesh_cfg.tensor)]
    if dims.count(-1) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, dims))}")
    known = math.prod(d for d in dims if d != -1)
    if any(d == 0 or d < -1 for d in dims) or num_devices % known:
        raise ValueError(
            f"config.mesh {dict(zip(MESH_AXES, dims))} does not divide the {num_devices} devices"
        )
    dims = [num_devices // known if d == -1 else d for d in dims]
    if math.prod(dims) != num_devices:
        raise ValueError(
            f"config.mesh {dict(zip(MESH_AXES, dims))} uses {math.prod(dims)} devices but "
            f"{num_devices} are present; set one axis to -1 to use the rest"
        )
    return tuple(dims)  # type: ignore[return-value]


def make_mesh(mesh_cfg: MeshSpec, devices: list | None = None) -> Mesh:
    devices = devices if devices is not None else jax.devices()
    shape = mesh_shape(mesh_cfg, len(devices))
    # Auto axes: shardings are given to jit and to logical constraints, and
    # XLA propagates the rest (the "explicit" mode would put them in types).
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def logical_to_sharding(boxed_tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a tree of LogicallyPartitioned leaves (or ShapeDtypeStructs)."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)


def like_params_sharding(tree: Any, params: Any, param_shardings: Any, mesh: Mesh) -> Any:
    """Shardings for an optimizer state: subtrees shaped like the params follow
    the params' shardings (Adam's mu, nu); anything else (counts, Adafactor's
    factored moments) is replicated."""
    replicated = NamedSharding(mesh, P())
    p_def = jax.tree.structure(params)
    p_leaves = jax.tree.leaves(params)
    s_leaves = jax.tree.leaves(param_shardings, is_leaf=lambda x: isinstance(x, NamedSharding))

    def is_param_tree(x: Any) -> bool:
        return jax.tree.structure(x) == p_def

    def assign(x: Any) -> Any:
        if is_param_tree(x):
            leaves = jax.tree.leaves(x)
            return jax.tree.unflatten(
                p_def,
                [
                    s if getattr(leaf, "shape", None) == p.shape else replicated
                    for leaf, p, s in zip(leaves, p_leaves, s_leaves)
                ],
            )
        return jax.tree.map(lambda _: replicated, x)

    return jax.tree.map(assign, tree, is_leaf=is_param_tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's rows -> global arrays sharded over (data, fsdp)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def batch_divisor(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


# --- multi-host ---------------------------------------------------------------

_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID",
                "OMPI_COMM_WORLD_SIZE")


def maybe_initialize_distributed(dist_cfg: DistributedSpec) -> bool:
    """Call jax.distributed.initialize() when the config or environment asks.

    Must run before anything touches a JAX device. Returns whether it ran.
    """
    mode = str(dist_cfg.initialize)
    explicit = bool(dist_cfg.coordinator_address)
    if mode == "no" or (mode == "auto" and not explicit and not any(
            os.environ.get(k) for k in _CLUSTER_ENV)):
        return False
    if mode not in ("auto", "yes", "no"):
        raise ValueError(f"config.distributed.initialize must be auto, yes or no, got {mode!r}")
    kwargs: dict[str, Any] = {}
    if explicit:
        kwargs = dict(
            coordinator_address=dist_cfg.coordinator_address,
            num_processes=int(dist_cfg.num_processes),
            process_id=int(dist_cfg.process_id),
        )
    # CPU clusters (tests, laptops) need a collectives implementation; the
    # setting only affects the CPU backend. Asking which backend is in use
    # here would start it, after which initialize() refuses to run.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d global devices",
             jax.process_index(), jax.process_count(), jax.device_count())
    return True
