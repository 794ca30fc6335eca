"""Per-device memory of a training run: parameter table, estimate, fit check.

`report()` runs in train.py right after the state's shardings are known and
before anything is allocated or compiled. It

1. checks that every sharded dimension divides by its mesh axes (JAX's own
   error names neither the parameter nor the fix),
2. prints every parameter's shape, logical axes, mesh sharding and bytes per
   device, with totals for parameters and optimizer state,
3. prints an estimate of the peak bytes per device (state + gradients +
   activations of one micro-batch + transient buffers), and
4. raises `DoesNotFitError` when even a lower bound (state, gradients and
   the activations no schedule avoids) exceeds the device's memory, and
   warns when the full estimate comes near or above it.

The activation part is arithmetic over the T5 layer structure, not a
compile: compiling FLAN-T5-large takes minutes, and a configuration that
cannot fit should fail in seconds with a breakdown that says which knob to
turn. `python -m tinyllm_jax.aot` compiles the real step and reports XLA's
figure; docs/scaling.md compares the two.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from tinyllm_jax.models.t5 import T5Config, abstract_params

log = logging.getLogger(__name__)

GiB = 1024**3
# Above this fraction of device memory the run may still fail (fragmentation,
# XLA workspace, the estimate's error): warn, but do not refuse.
WARN_FRACTION = 0.9


class ShardingError(ValueError):
    """A parameter dimension is not divisible by the mesh axes it is split over."""


class DoesNotFitError(ValueError):
    """Even a lower bound on the step's memory exceeds the device's."""


# --- per-leaf arithmetic -----------------------------------------------------------


def _spec_entries(spec: Any, ndim: int) -> tuple[Any, ...]:
    entries = tuple(spec) if spec is not None else ()
    return entries + (None,) * (ndim - len(entries))


def _axis_names(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple | list) else (entry,)


def split_factor(entry: Any, mesh_shape: Mapping[str, int]) -> int:
    """How many ways one array dimension is split by a PartitionSpec entry."""
    return math.prod(int(mesh_shape[a]) for a in _axis_names(entry))


def device_shape(
    shape: tuple[int, ...], spec: Any, mesh_shape: Mapping[str, int]
) -> tuple[int, ...]:
    """The shape of one device's shard (dimensions assumed divisible)."""
    entries = _spec_entries(spec, len(shape))
    return tuple(d // split_factor(e, mesh_shape) for d, e in zip(shape, entries))


def _nbytes(shape: tuple[int, ...], dtype: Any) -> int:
    return int(math.prod(shape)) * np.dtype(dtype).itemsize


def _format_spec(spec: Any, ndim: int) -> str:
    parts = []
    for e in _spec_entries(spec, ndim):
        names = _axis_names(e)
        parts.append("+".join(names) if names else "-")
    return "(" + ", ".join(parts) + ")"


def _path_str(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


# --- the parameter table -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParamRow:
    path: str
    shape: tuple[int, ...]
    dtype: str
    logical: tuple[str | None, ...]
    spec: str  # mesh axes per dimension, "-" for replicated
    global_bytes: int
    device_bytes: int


def parameter_rows(config: T5Config, param_shardings: Any, mesh_shape: Mapping[str, int]) -> list[ParamRow]:
    """One row per parameter, in tree order.

    Logical names come from the model's boxed abstract parameters; the mesh
    spec from `param_shardings` (what training uses), so the table shows the
    layout that is really applied.
    """
    boxed = abstract_params(config)
    is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731
    boxes = jax.tree_util.tree_flatten_with_path(boxed, is_leaf=is_box)[0]
    shardings = jax.tree_util.tree_flatten_with_path(
        param_shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)
    )[0]
    if [_path_str(p) for p, _ in boxes] != [_path_str(p) for p, _ in shardings]:
        raise ValueError("parameter shardings do not match the model's parameter tree")
    check_divisible(
        [(_path_str(p), b.value.shape, s.spec) for (p, b), (_, s) in zip(boxes, shardings)],
        mesh_shape,
    )
    rows = []
    for (path, box), (_, sharding) in zip(boxes, shardings):
        shape, dtype = tuple(box.value.shape), box.value.dtype
        rows.append(ParamRow(
            path=_path_str(path), shape=shape, dtype=str(np.dtype(dtype)),
            logical=tuple(box.names), spec=_format_spec(sharding.spec, len(shape)),
            global_bytes=_nbytes(shape, dtype),
            device_bytes=_nbytes(device_shape(shape, sharding.spec, mesh_shape), dtype),
        ))
    return rows


def check_divisible(
    leaves: list[tuple[str, tuple[int, ...], Any]], mesh_shape: Mapping[str, int]
) -> None:
    """Raise ShardingError naming every (path, dim) a mesh axis does not divide."""
    problems = []
    for path, shape, spec in leaves:
        for dim, (size, entry) in enumerate(zip(shape, _spec_entries(spec, len(shape)))):
            factor = split_factor(entry, mesh_shape)
            if size % factor:
                axes = "*".join(f"{a}={mesh_shape[a]}" for a in _axis_names(entry))
                problems.append(f"{path} dim {dim} has size {size}, not divisible by {axes}")
    if problems:
        listing = "\n  ".join(problems[:12])
        more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
        raise ShardingError(
            f"config.mesh {dict(mesh_shape)} cannot shard this model evenly:\n  {listing}{more}\n"
            "Pick config.mesh.tensor to divide num_heads, d_ff and vocab_size, and "
            "config.mesh.fsdp to divide d_model (e.g. FLAN-T5-small's 6 heads allow "
            "tensor=1, 2, 3 or 6)."
        )


def format_table(rows: list[ParamRow]) -> str:
    header = ("parameter", "shape", "logical axes", "mesh sharding", "bytes/device")
    body = [
        (r.path, "x".join(map(str, r.shape)) or "()",
         "(" + ", ".join(n or "-" for n in r.logical) + ")", r.spec, f"{r.device_bytes:,}")
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        left = [c.ljust(w) for c, w in zip(cells[:-1], widths[:-1])]
        return "  ".join([*left, cells[-1].rjust(widths[-1])])

    total_g = sum(r.global_bytes for r in rows)
    total_d = sum(r.device_bytes for r in rows)
    count = sum(math.prod(r.shape) for r in rows)
    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    out.append(
        f"{len(rows)} parameters, {count:,} values: {format_bytes(total_g)} in all, "
        f"{format_bytes(total_d)} on each device"
    )
    return "\n".join(out)


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; binary units up to GiB."""
    if n >= GiB:
        return f"{n / GiB:.2f} GiB"
    if n >= 1024**2:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024:.1f} KiB"


# --- state bytes ---------------------------------------------------------------------


def tree_bytes(abstract: Any, mesh_shape: Mapping[str, int]) -> tuple[int, int]:
    """(global, per-device) bytes of a tree of ShapeDtypeStructs with shardings."""
    glob = dev = 0
    for leaf in jax.tree.leaves(abstract):
        shape = tuple(leaf.shape)
        spec = leaf.sharding.spec if getattr(leaf, "sharding", None) is not None else None
        glob += _nbytes(shape, leaf.dtype)
        dev += _nbytes(device_shape(shape, spec, mesh_shape), leaf.dtype)
    return glob, dev


def _check_state_divisible(abstract_state: Any, mesh_shape: Mapping[str, int]) -> None:
    leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    check_divisible(
        [(_path_str(p), tuple(x.shape), getattr(x.sharding, "spec", None)) for p, x in leaves],
        mesh_shape,
    )


# --- activations -----------------------------------------------------------------------


def _per_row_layer_bytes(cfg: T5Config, tensor: int, li: int, lt: int) -> dict[str, float]:
    """Bytes one row keeps for the backward pass per encoder / decoder layer.

    Counted from the layer code: layer-norm inputs and outputs, q/k/v and the
    attention context, the float32 softmax output (plus its compute-dtype
    copy when that is narrower), dropout masks, MLP pre- and post-activation.
    Heads and d_ff are split over `tensor`; d_model-sized activations are not.
    """
    c = np.dtype(cfg.dtype).itemsize
    narrow = c if c < 4 else 0  # probs cast to the compute dtype is a 2nd buffer
    drop = 1 if cfg.dropout_rate > 0 else 0  # a bool mask per dropped element
    h = -(-cfg.num_heads // tensor)
    f = -(-cfg.d_ff // tensor)
    d, hk = cfg.d_model, h * cfg.d_kv
    mlp_bufs = 4 if cfg.gated else 2

    def attention(q_len: int, kv_len: int, self_attn: bool) -> float:
        proj = (3 if self_attn else 1) * q_len * hk * c + (0 if self_attn else 2 * kv_len * hk * c)
        probs = h * q_len * kv_len * (4 + narrow + drop)
        return proj + probs + q_len * hk * c  # + context

    def norm_and_residual(length: int, blocks: int) -> float:
        # per block: norm input and output, the block output, dropout mask
        return blocks * length * d * (3 * c + drop)

    def mlp(length: int) -> float:
        return length * f * (mlp_bufs * c + drop)

    enc = norm_and_residual(li, 2) + attention(li, li, True) + mlp(li)
    dec = norm_and_residual(lt, 3) + attention(lt, lt, True) + attention(lt, li, False) + mlp(lt)
    return {"encoder": enc, "decoder": dec, "enc_input": li * d * c, "dec_input": lt * d * c}


def _per_row_saved_dots(cfg: T5Config, tensor: int, li: int, lt: int) -> dict[str, float]:
    """Bytes per row per layer that the "dots" remat policy keeps: outputs of
    weight matmuls (no batch dimension), i.e. projections and MLP products."""
    c = np.dtype(cfg.dtype).itemsize
    h, f = -(-cfg.num_heads // tensor), -(-cfg.d_ff // tensor)
    hk, d = h * cfg.d_kv, cfg.d_model
    mlp_dots = 2 if cfg.gated else 1
    enc = li * (3 * hk + d + mlp_dots * f + d) * c
    dec = lt * (3 * hk + d) * c + (lt * hk + 2 * li * hk + lt * d) * c + lt * (mlp_dots * f + d) * c
    return {"encoder": enc, "decoder": dec}


def activation_bytes(
    cfg: T5Config, *, rows: int, input_len: int, target_len: int, tensor: int = 1
) -> dict[str, int]:
    """Peak activation bytes per device for `rows` rows of one micro-batch."""
    per = _per_row_layer_bytes(cfg, tensor, input_len, target_len)
    n_enc, n_dec = cfg.num_layers, cfg.n_decoder_layers
    one_layer = max(per["encoder"], per["decoder"])
    if cfg.remat == "none":
        # Everything saved, plus one layer's gradients while its backward runs.
        layers = n_enc * per["encoder"] + n_dec * per["decoder"] + one_layer
    else:
        # Each layer keeps its input (plus, for "dots", its matmul outputs);
        # the backward recomputes one layer at a time and holds its gradients.
        kept = n_enc * per["enc_input"] + n_dec * per["dec_input"]
        if cfg.remat == "dots":
            dots = _per_row_saved_dots(cfg, tensor, input_len, target_len)
            kept += n_enc * dots["encoder"] + n_dec * dots["decoder"]
        layers = kept + 2 * one_layer
    c = np.dtype(cfg.dtype).itemsize
    vocab = -(-cfg.vocab_size // tensor)
    # float32 logits, the compute-dtype logits they come from, and the
    # float32 gradient of the logits, which coexist at the loss.
    logits = target_len * vocab * (4 + 4 + (c if c < 4 else 0))
    # Embedding outputs, the encoder output every decoder layer reads, masks.
    other = (input_len + 2 * target_len) * cfg.d_model * c + (
        input_len * input_len + target_len * target_len + target_len * input_len
    )
    # What no schedule can avoid: every layer's input kept for the backward
    # (or recomputation) and the float32 logits once.
    floor = n_enc * per["enc_input"] + n_dec * per["dec_input"] + target_len * vocab * 4
    return {
        "layers": int(rows * layers),
        "logits": int(rows * logits),
        "other": int(rows * other),
        "floor": int(rows * floor),
    }


# --- the estimate -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device. `capacity` is None where the device does not say."""

    params: int
    optimizer: int
    gradients: int
    activations: int
    transient: int
    capacity: int | None
    detail: dict[str, Any]
    # A lower bound: the state, gradients and the activations no compiler can
    # drop. Above capacity, the run cannot fit whatever XLA does.
    minimum: int = 0

    @property
    def total(self) -> int:
        return self.params + self.optimizer + self.gradients + self.activations + self.transient

    def format(self) -> str:
        d = self.detail
        lines = [
            f"memory estimate per device (mesh {d['mesh']}, {d['rows']} rows of "
            f"{d['input_len']}+{d['target_len']} tokens per micro-batch, "
            f"{d['accumulate_steps']} micro-batch(es), dtype {d['dtype']}, remat {d['remat']}):",
            f"  parameters      {format_bytes(self.params):>12}",
            f"  optimizer state {format_bytes(self.optimizer):>12}",
            f"  gradients       {format_bytes(self.gradients):>12}",
            f"  activations     {format_bytes(self.activations):>12}   (layers {format_bytes(d['layers'])}, "
            f"logits {format_bytes(d['logits'])}, other {format_bytes(d['other'])})",
            f"  transient       {format_bytes(self.transient):>12}   (gathered weights, updates, batch)",
            f"  total           {format_bytes(self.total):>12}   (at least {format_bytes(self.minimum)})",
        ]
        if self.capacity:
            lines.append(f"  device memory   {format_bytes(self.capacity):>12}   "
                         f"({100 * self.total / self.capacity:.0f}% used)")
        else:
            lines.append("  device memory   unknown (this backend does not report it; not checked)")
        return "\n".join(lines)


def _largest_layer_bytes(rows: list[ParamRow], mesh_shape: Mapping[str, int]) -> int:
    """Bytes of the largest layer's weights gathered over fsdp (still split by tensor)."""
    per_layer: dict[str, int] = {}
    for r in rows:
        parts = r.path.split("/")
        key = "/".join(parts[:2]) if len(parts) > 2 and parts[1].startswith("layers") else r.path
        # A scanned stack ("encoder/layers/...", leading layers axis) gathers
        # one layer's slice per iteration.
        size = r.global_bytes // r.shape[0] if parts[1:2] == ["layers"] else r.global_bytes
        per_layer[key] = per_layer.get(key, 0) + size
    return max(per_layer.values(), default=0) // int(mesh_shape.get("tensor", 1))


def estimate(
    config: T5Config, abstract_state: Any, param_rows: list[ParamRow], mesh_shape: Mapping[str, int],
    *, batch_size: int, input_len: int, target_len: int, accumulate_steps: int = 1,
    capacity: int | None = None,
) -> MemoryEstimate:
    """Peak bytes per device of one train step (see the module docstring)."""
    replicas = int(mesh_shape.get("data", 1)) * int(mesh_shape.get("fsdp", 1))
    tensor = int(mesh_shape.get("tensor", 1))
    accumulate_steps = max(int(accumulate_steps), 1)
    rows = -(-int(batch_size) // (replicas * accumulate_steps))
    _, params = tree_bytes(abstract_state.params, mesh_shape)
    _, opt = tree_bytes(abstract_state.opt_state, mesh_shape)
    # Gradients are reduce-scattered to the parameters' layout; accumulation
    # holds a running sum next to each micro-batch's gradients.
    grads = params * (2 if accumulate_steps > 1 else 1)
    acts = activation_bytes(config, rows=rows, input_len=input_len, target_len=target_len,
                            tensor=tensor)
    floor = acts.pop("floor")
    gathered = 0
    if int(mesh_shape.get("fsdp", 1)) > 1:
        # One layer's weights all-gathered for use, the next one prefetched,
        # and the unreduced gradient of one layer in the backward.
        gathered = 3 * _largest_layer_bytes(param_rows, mesh_shape)
    batch_bytes = 7 * 4 * rows * accumulate_steps * (input_len + target_len)
    # The optimizer's update tree is a parameter-sized temporary.
    transient = gathered + params + batch_bytes
    detail = {
        "mesh": dict(mesh_shape), "rows": rows, "input_len": input_len, "target_len": target_len,
        "accumulate_steps": accumulate_steps, "dtype": config.dtype, "remat": config.remat,
        **acts,
    }
    return MemoryEstimate(
        params=params, optimizer=opt, gradients=grads, activations=sum(acts.values()),
        transient=transient, capacity=capacity, detail=detail,
        minimum=params + opt + grads + floor + batch_bytes,
    )


# --- fit check and the entry point train.py calls ------------------------------------------


def device_memory_capacity(device: Any = None) -> int | None:
    """Bytes XLA may use on one device (GPU/TPU), or None (CPU)."""
    device = device if device is not None else jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory stats raise assorted errors
        return None
    limit = (stats or {}).get("bytes_limit")
    return int(limit) if limit else None


def _hints(est: MemoryEstimate) -> str:
    d = est.detail
    hints = []
    if d["remat"] != "full":
        hints.append("config.model.remat='full' (recompute layers in the backward)")
    if d["dtype"] == "float32":
        hints.append("config.model.dtype='bfloat16'")
    if d["rows"] > 1:
        hints.append("config.optimizer.accumulate_steps to split the batch into micro-batches")
    hints.append("a larger config.mesh.fsdp (shards parameters and optimizer state)")
    hints.append("config.mesh.tensor > 1 (shards heads, MLP and vocabulary)")
    hints.append("config.optimizer.name='adafactor' (smaller optimizer state)")
    return "; ".join(hints)


def check_fit(est: MemoryEstimate) -> str | None:
    """Raise DoesNotFitError when the run cannot fit; return a warning when it may not.

    Two tiers, because compilers differ: XLA:TPU fuses and rematerialises
    attention on its own and can need several times less than the estimate,
    the CPU compiler more. So the error is reserved for the lower bound
    (state, gradients, unavoidable activations) exceeding the device; the
    full estimate exceeding it, or coming within 10%, is a warning that
    points at the compile check.
    """
    if not est.capacity:
        return None
    if est.minimum > est.capacity:
        raise DoesNotFitError(
            f"this configuration cannot fit: parameters, optimizer state, gradients and the "
            f"activations no schedule avoids need at least {format_bytes(est.minimum)} per device, more "
            f"than the device's {format_bytes(est.capacity)}.\n{est.format()}\nTo fit, try: "
            f"{_hints(est)}."
        )
    if est.total > WARN_FRACTION * est.capacity:
        return (
            f"warning: the estimated peak memory per device, {format_bytes(est.total)}, is "
            f"{100 * est.total / est.capacity:.0f}% of the device's {format_bytes(est.capacity)}: the "
            "step may not fit (the estimate is conservative; XLA often needs less). "
            "`python -m tinyllm_jax.aot` gives the compiler's figure. To save memory: "
            f"{_hints(est)}."
        )
    return None


def report(
    config: T5Config, abstract_state: Any, shardings: Any, mesh: Any, *, batch_size: int,
    input_len: int, target_len: int, accumulate_steps: int = 1, capacity: int | None = None,
    print_table: bool = True, check: bool = True,
) -> MemoryEstimate:
    """Check divisibility, print the table and estimate (process 0), check the fit.

    `capacity` defaults to what the first local device reports (0: unknown).
    `check=False` only reports (the compile check judges by XLA's figure).
    """
    mesh_shape = dict(mesh.shape)
    _check_state_divisible(abstract_state, mesh_shape)
    rows = parameter_rows(config, shardings.params, mesh_shape)
    if capacity is None:
        capacity = device_memory_capacity()
    est = estimate(
        config, abstract_state, rows, mesh_shape, batch_size=batch_size, input_len=input_len,
        target_len=target_len, accumulate_steps=accumulate_steps, capacity=capacity,
    )
    if jax.process_index() == 0:
        opt_g, opt_d = tree_bytes(abstract_state.opt_state, mesh_shape)
        text = [format_table(rows)] if print_table else []
        text.append(f"optimizer state: {format_bytes(opt_g)} in all, {format_bytes(opt_d)} on each device")
        text.append(est.format())
        print("\n".join(text), flush=True)
    warning = check_fit(est) if check else None
    if warning and jax.process_index() == 0:
        print(warning, flush=True)
    return est
