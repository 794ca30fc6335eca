"""Ahead-of-time check: compile the train step for a target mesh on fake CPU devices.

    python -m tinyllm_jax.aot --config=configs/tiny.py --model=large \\
        --mesh=1,16,1 --devices=16 --chip=v5e --batch_size=64 \\
        --input_len=512 --target_len=256 --config.model.dtype=bfloat16

or `python -m tinyllm_jax.main --config=... --mode=compile` (mesh and sizes
from the config, one fake device per mesh slot).

With `--topology=v5e:4x4` (or v4:2x2x4, ...) the step is compiled by the TPU
compiler for that slice instead, still on this CPU-only machine: that needs
libtpu importable (`pip install 'jax[tpu]'`), and gives TPU's own figure.

Nothing is allocated: the state is a tree of ShapeDtypeStructs with their
shardings (`setup.build`, the path training takes), the batch likewise, and the step is
lowered and compiled for `--devices` fake CPU devices. XLA's memory analysis
of that program is per device. It is the CPU compiler's figure: TPU and GPU
compilers fuse and lay out differently, so treat it as a close guide, not a
guarantee (docs/scaling.md compares them), and keep some headroom.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from tinyllm_jax import setup as setup_lib
from tinyllm_jax.atomic import write_json_atomic
from tinyllm_jax.cli import config_value, error_boundary, fail, parse_flags
from tinyllm_jax.configs import MODEL_SIZES
from tinyllm_jax.memory import format_bytes
from tinyllm_jax.models.t5 import abstract_params, count_params
from tinyllm_jax.models.t5_config import SIZES
from tinyllm_jax.preemption import Preemption
from tinyllm_jax.sharding import make_mesh
from tinyllm_jax.spec import RUNTIME_MODEL_FIELDS, ConfigError, MeshSpec, RunSpec, parse
from tinyllm_jax.workdir import check_output_file

# Usable memory per chip in GiB, for --chip. TPU figures are HBM per chip;
# GPUs are what the card reports. JAX on GPU preallocates 75% by default
# (XLA_PYTHON_CLIENT_MEM_FRACTION), which --device_memory_gb can express.
CHIPS: dict[str, float] = {
    "v4": 32.0, "v5e": 16.0, "v5p": 95.0, "v6e": 32.0,
    "a100-40gb": 40.0, "a100-80gb": 80.0, "h100-80gb": 80.0, "h200": 141.0, "l4": 24.0,
}

def use_fake_devices(count: int) -> None:
    """Make JAX see `count` CPU devices. Must run before JAX touches a device."""
    from jax._src import xla_bridge

    if count < 1:
        raise ValueError(f"--devices must be >= 1, got {count}")
    if xla_bridge.backends_are_initialized():
        if jax.default_backend() == "cpu" and jax.device_count() >= count:
            return
        raise ValueError(
            f"JAX is already initialised with {jax.device_count()} {jax.default_backend()} "
            f"device(s); the compile check needs {count} CPU devices. Run it in a fresh "
            "process: python -m tinyllm_jax.aot ..."
        )
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", int(count))


def topology_devices(topology: str) -> list[Any]:
    """The devices of a TPU slice described by name, e.g. 'v5e:4x4', without a TPU."""
    from jax.experimental import topologies

    try:
        return list(topologies.get_topology_desc(topology_name=topology, platform="tpu").devices)
    except Exception as e:  # libtpu missing or an unknown name: both surface as assorted errors
        raise ValueError(
            f"cannot describe TPU topology {topology!r} ({type(e).__name__}: {e}). It needs "
            "libtpu (pip install 'jax[tpu]') and a name like v5e:4x4 or v4:2x2x4"
        ) from e


def cores_per_chip(devices: list[Any]) -> int:
    """Devices per physical chip: 2 for a v4 slice described core by core, else 1."""
    chips = {tuple(getattr(d, "coords", (d.id,))) for d in devices}
    return max(1, len(devices) // max(1, len(chips)))


def parse_mesh(text: str) -> tuple[int, int, int]:
    """'1,16,1' (data,fsdp,tensor) -> (1, 16, 1); -1 fills the rest as in config.mesh."""
    try:
        dims = tuple(int(x) for x in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3:
        raise ValueError(f"--mesh must be three integers data,fsdp,tensor (e.g. 1,16,1), got {text!r}")
    return dims  # type: ignore[return-value]


def capacity_bytes(chip: str | None, device_memory_gb: float | None) -> int | None:
    if device_memory_gb:
        return int(device_memory_gb * 1024**3)
    if chip:
        if chip not in CHIPS:
            raise ValueError(f"unknown --chip {chip!r}; known: {', '.join(sorted(CHIPS))}")
        return int(CHIPS[chip] * 1024**3)
    return None


def host_memory_bytes() -> int:
    """Physical memory of this machine."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _model(spec: RunSpec, model: str | None) -> tuple[Any, str]:
    if not model:
        name = f"init_from={spec.init_from}" if spec.init_from else "config.model"
        return setup_lib.model_config(spec), name
    shape = MODEL_SIZES.get(model) or SIZES.get(model)
    if shape is None:
        raise ValueError(
            f"unknown --model {model!r}; choose from {sorted(set(MODEL_SIZES) | set(SIZES))}"
        )
    runtime = {k: getattr(spec.model, k) for k in RUNTIME_MODEL_FIELDS}
    return shape.replace(**runtime), model


def _lengths(spec: RunSpec, input_len: int | None, target_len: int | None) -> tuple[int, int]:
    li = input_len or spec.data.packed_input_len or spec.data.max_input_len
    lt = target_len or spec.data.packed_target_len or spec.data.max_target_len
    return li, lt


def compile_check(
    spec: RunSpec, *, mesh: tuple[int, int, int] | None = None, devices: int | None = None,
    model: str | None = None, batch_size: int | None = None, input_len: int | None = None,
    target_len: int | None = None, capacity: int | None = None, print_table: bool = False,
    topology: str | None = None,
) -> dict[str, Any]:
    """Lower and compile the train step for the mesh; bytes per device.

    `devices` defaults to the product of the mesh axes (a -1 axis then needs
    `devices`). Call `use_fake_devices` first when running outside the CLI.
    `topology` compiles for that TPU slice's devices instead (see the module
    docstring); `devices` is then the slice's size.
    """
    spec = parse(spec, reads_data=False)
    dims = mesh or (spec.mesh.data, spec.mesh.fsdp, spec.mesh.tensor)
    target = topology_devices(topology) if topology else None
    if target is not None:
        devices = len(target)
    elif devices is None:
        if -1 in dims:
            raise ValueError(
                f"mesh {dims} has a -1 axis: give the number of devices to simulate (--devices=N)"
            )
        devices = int(np.prod(dims))
    if target is None and jax.device_count() < devices:
        raise ValueError(
            f"{devices} devices requested but JAX sees {jax.device_count()}; call "
            "use_fake_devices() before anything else touches JAX"
        )
    device_mesh = make_mesh(MeshSpec(*dims), target or jax.devices()[:devices])
    config, model_name = _model(spec, model)
    batch = int(batch_size or spec.train.batch_size)
    li, lt = _lengths(spec, input_len, target_len)
    setup_lib.check_batch(device_mesh, batch, "batch size")
    accumulate = spec.optimizer.accumulate_steps
    if batch % accumulate:
        raise ValueError(
            f"batch size {batch} must be divisible by config.optimizer.accumulate_steps={accumulate}"
        )
    given, capacity_source = capacity, "given"
    if not capacity:
        # Fake CPU devices (and a TPU chip without a known size) share this host's memory.
        capacity, capacity_source = host_memory_bytes() // devices, f"host RAM / {devices}"
    built = setup_lib.build(spec, device_mesh, total_steps=spec.train.steps, model=config)
    est = setup_lib.memory_report(built, batch_size=batch, input_len=li, target_len=lt,
                                  capacity=given or 0, print_table=print_table, check=False)
    compiled, compile_s = setup_lib.compile_step(
        built, setup_lib.abstract_batch(built, batch, li, lt))
    ma = compiled.memory_analysis()
    stats = {
        "arguments": int(ma.argument_size_in_bytes),
        "outputs": int(ma.output_size_in_bytes),
        "aliased": int(ma.alias_size_in_bytes),
        "temp": int(ma.temp_size_in_bytes),
        "code": int(ma.generated_code_size_in_bytes),
    }
    # Donated state buffers are reused for the new state: count them once.
    stats["peak"] = stats["arguments"] + stats["outputs"] - stats["aliased"] + stats["temp"]
    # The compiler's own peak (newer XLA; 0 or absent elsewhere) can exceed that sum.
    stats["compiler_peak"] = int(getattr(ma, "peak_memory_in_bytes", 0) or 0)
    cost = compiler_cost(compiled)
    return {
        # The planning contract (docs/scaling.md): these keys are always present.
        "model": model_name,
        "topology": topology,
        "scan_layers": bool(config.scan_layers),
        "per_device_bytes": max(stats["peak"], stats["compiler_peak"]),
        "capacity_bytes": capacity,
        "flops": cost["flops"],
        "optimal_seconds": cost["optimal_seconds"],
        "parameters": count_params(abstract_params(config)),
        "dtype": config.dtype, "remat": config.remat,
        "devices": devices, "mesh": dict(device_mesh.shape),
        "compiler": f"TPU {topology}" if topology else "CPU",
        "batch_size": batch, "input_len": li, "target_len": lt,
        "accumulate_steps": accumulate, "optimizer": spec.optimizer.name,
        "compiled_per_device": stats,
        "estimate_per_device": {
            **{k: getattr(est, k) for k in ("params", "optimizer", "gradients", "activations",
                                            "transient")},
            "total": est.total,
        },
        "capacity": capacity,
        "capacity_source": capacity_source,
        "fits": max(stats["peak"], stats["compiler_peak"]) <= capacity,
        "compile_s": round(compile_s, 1),
    }


def compiler_cost(compiled: Any) -> dict[str, float | None]:
    """The compiler's own FLOPs and `optimal_seconds` for one step, per device.

    `cost_analysis()` is a dict in current JAX (a list of one dict in older
    releases); the CPU compiler gives no `optimal_seconds`, hence None.
    """
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        cost = None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    cost = dict(cost or {})

    def number(key: str) -> float | None:
        value = cost.get(key)
        return float(value) if value is not None and float(value) >= 0 else None

    return {"flops": number("flops"), "optimal_seconds": number("optimal_seconds")}


def format_result(r: dict[str, Any]) -> str:
    fb = format_bytes
    s = r["compiled_per_device"]
    lines = [
        f"{r['model']} ({r['parameters']:,} parameters, {r['dtype']}, remat {r['remat']}, "
        f"{r['optimizer']}) on {r['devices']} devices, mesh {r['mesh']}",
        f"global batch {r['batch_size']} rows of {r['input_len']}+{r['target_len']} tokens, "
        f"{r['accumulate_steps']} micro-batch(es); compiled in {r['compile_s']}s",
        f"compiled memory per device (XLA, {r['compiler']} compiler):",
        f"  arguments {fb(s['arguments']):>12}   (state + batch)",
        f"  outputs   {fb(s['outputs']):>12}   ({fb(s['aliased'])} reuse donated arguments)",
        f"  temp      {fb(s['temp']):>12}   (activations, gradients, buffers)",
        f"  peak      {fb(s['peak']):>12}"
        + (f"   (compiler's own peak {fb(s['compiler_peak'])})" if s.get("compiler_peak") else ""),
        f"analytic estimate: {fb(r['estimate_per_device']['total'])}",
    ]
    if r["capacity"]:
        source = "" if r.get("capacity_source", "given") == "given" else f" ({r['capacity_source']})"
        verdict = "fits" if r["fits"] else "DOES NOT FIT"
        lines.append(f"device memory {fb(r['capacity'])}{source}: {verdict} "
                     f"({100 * r['per_device_bytes'] / r['capacity']:.0f}% used)")
    return "\n".join(lines)


def run_from_spec(spec: RunSpec, **kwargs: Any) -> dict[str, Any]:
    """--mode=compile: fake one CPU device per mesh slot, compile, print."""
    dims = (spec.mesh.data, spec.mesh.fsdp, spec.mesh.tensor)
    if -1 in dims:
        raise ValueError(
            f"--mode=compile needs every config.mesh axis set (got data,fsdp,tensor={dims}); "
            "or use python -m tinyllm_jax.aot --devices=N"
        )
    use_fake_devices(int(np.prod(dims)))
    result = compile_check(spec, mesh=dims, **kwargs)
    print(format_result(result), flush=True)
    return result


def _main() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Config file, e.g. configs/tiny.py (overrides: --config.model.dtype=...)",
        lock_config=True,
    )
    mesh_flag = flags.DEFINE_string("mesh", None, "data,fsdp,tensor (default: config.mesh).")
    devices_flag = flags.DEFINE_integer("devices", None, "Fake CPU devices (default: mesh size).")
    model_flag = flags.DEFINE_string("model", None, "Model shape: tiny/mini/small/base/large/xl "
                                     "or flan-t5-*/t5-* (default: config.model).")
    batch_flag = flags.DEFINE_integer("batch_size", None, "Global rows (default: config).")
    in_flag = flags.DEFINE_integer("input_len", None, "Encoder row length (default: config).")
    tgt_flag = flags.DEFINE_integer("target_len", None, "Decoder row length (default: config).")
    chip_flag = flags.DEFINE_enum("chip", None, sorted(CHIPS), "Target chip's memory.")
    topo_flag = flags.DEFINE_string("topology", None, "Compile for this TPU slice, e.g. v5e:4x4 "
                                    "(needs libtpu; default: fake CPU devices).")
    mem_flag = flags.DEFINE_float("device_memory_gb", None, "Device memory in GiB (over --chip).")
    table_flag = flags.DEFINE_bool("table", False, "Print the per-parameter table.")
    json_flag = flags.DEFINE_string("json", None, "Also write the result to this JSON file.")

    def main(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected arguments {argv[1:]}")
        cfg = config_value(config_flag, "configs/tiny.py")
        stopped = "compile check stopped by Ctrl-C; nothing was written"
        with error_boundary(on_interrupt=stopped), Preemption(
                interrupts=True, sigterm=False, abort_process=True, stop_note=stopped):
            _check(cfg)

    def _check(cfg: Any) -> None:
        if json_flag.value:
            # Before the compile, which can take minutes.
            check_output_file(json_flag.value, "--json")
        try:
            dims = parse_mesh(mesh_flag.value) if mesh_flag.value else None
            spec = parse(cfg, reads_data=False)
            cfg_dims = (spec.mesh.data, spec.mesh.fsdp, spec.mesh.tensor)
            count = devices_flag.value
            if count is None and -1 not in (dims or cfg_dims):
                count = int(np.prod(dims or cfg_dims))
            topology = topo_flag.value
            chip = chip_flag.value
            if topology:
                # No TPU backend is started: the TPU compiler works from the description.
                jax.config.update("jax_platforms", "cpu")
                chip = chip or topology.split(":")[0]
                chip = chip if chip in CHIPS else None
            elif count is None:
                raise ValueError("the mesh has a -1 axis: give --devices=N")
            else:
                use_fake_devices(count)
            capacity = capacity_bytes(chip, mem_flag.value)
            if topology and capacity and not mem_flag.value:
                # --chip is HBM per chip; some slices (v4) list each TensorCore as a device.
                capacity //= cores_per_chip(topology_devices(topology))
            result = compile_check(
                spec, mesh=dims, devices=count, model=model_flag.value,
                batch_size=batch_flag.value, input_len=in_flag.value, target_len=tgt_flag.value,
                capacity=capacity,
                print_table=table_flag.value, topology=topology,
            )
        except ConfigError as e:
            fail(str(e))
        print(format_result(result), flush=True)
        if json_flag.value:
            write_json_atomic(json_flag.value, result, indent=1)
        if result["fits"] is False and result["capacity_source"] == "given":
            raise SystemExit(1)

    app.run(main, flags_parser=parse_flags)


def run() -> None:
    """The `tinyllm-aot` console script."""
    _main()


if __name__ == "__main__":
    _main()
