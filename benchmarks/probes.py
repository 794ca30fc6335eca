"""Measurements beside the timed steps: the matmul peak, process memory, a step's profile."""

from __future__ import annotations

import collections
import gzip
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax_systems import JaxSystem

# Peak probe: 2048^3 matmuls, the best rate of several.
PEAK_SIZE = 2048


class PeakProbe:
    """Matmul peaks (FLOP/s) measured now: JAX and torch, float32 and bf16 with f32 accumulation.

    float32: float32 operands and result. bfloat16: bf16 operands, float32
    accumulation (JAX `preferred_element_type=float32`; torch's bf16 matmul,
    whose oneDNN kernels accumulate in float32 and round the result to
    bf16). A dtype's machine peak is the best of the two frameworks.
    """

    def __init__(self, scale: float = 1.0) -> None:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        n = max(64, int(PEAK_SIZE * scale))
        self.label = f"{n}x{n}x{n}"
        self.flops = 2.0 * n**3
        a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
        f32 = jax.jit(jnp.matmul)
        bf16 = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
        a16, b16 = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
        ta, tb = torch.randn(n, n), torch.randn(n, n)
        ta16, tb16 = ta.bfloat16(), tb.bfloat16()
        self.fns = {
            ("jax", "float32"): lambda: f32(a, b).block_until_ready(),
            ("jax", "bfloat16"): lambda: bf16(a16, b16).block_until_ready(),
            ("torch", "float32"): lambda: torch.mm(ta, tb),
            ("torch", "bfloat16"): lambda: torch.mm(ta16, tb16),
        }
        for fn in self.fns.values():
            fn()  # compile / warm up

    def __call__(self, repeats: int = 3) -> dict[str, float]:
        """Best rate of `repeats` runs per (framework, dtype), keyed "jax_float32" etc."""
        out = {}
        for (fw, dt), fn in self.fns.items():
            best = 0.0
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                best = max(best, self.flops / (time.perf_counter() - t0))
            out[f"{fw}_{dt}"] = best
        return out


def theoretical_peaks() -> dict[str, Any]:
    """FMA peaks from lscpu's flags and the clock: cores x GHz x FLOP/cycle.

    Assumes two 512-bit FMA units per core where AVX-512 is present (one
    256-bit pair otherwise): float32 = 2 units x 16 lanes x 2 FLOP = 64 FLOP /
    cycle; bf16 with AMX-BF16 = 1024 FLOP / cycle (one 16x32x16 tile
    multiply-add per 16 cycles), with AVX512_BF16 only = 128. The clock is
    lscpu's max MHz, else /proc/cpuinfo's current MHz.
    """
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("Flags", "").split())
    mhz = float(fields.get("CPU max MHz", 0) or 0)
    if not mhz:
        m = re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text()
                      if Path("/proc/cpuinfo").exists() else "")
        mhz = float(m.group(1)) if m else 0.0
    cores = int(fields.get("CPU(s)", os.cpu_count() or 1))
    f32_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 8
    bf16_cycle = 1024 if "amx_bf16" in flags else 128 if "avx512_bf16" in flags else f32_cycle
    ghz = mhz / 1000
    return {"cores": cores, "ghz": ghz, "model": fields.get("Model name", ""),
            "float32": cores * ghz * f32_cycle * 1e9, "bfloat16": cores * ghz * bf16_cycle * 1e9,
            "float32_flop_per_cycle": f32_cycle, "bfloat16_flop_per_cycle": bf16_cycle}


def rss_gb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in GB (Linux; 0 elsewhere)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text(
        ).splitlines() if ":" in line)
        return (int(fields["VmRSS"].split()[0]) / 2**20, int(fields["VmHWM"].split()[0]) / 2**20)
    except (OSError, KeyError, ValueError):
        return 0.0, 0.0


# Where an XLA op's time goes, by the op_name JAX records in its metadata
# (first match wins). The Flax module path names the layer part.
PROFILE_CATEGORIES = (
    ("dropout masks", r"Dropout|_bernoulli|_uniform|threefry"),
    ("LM head + loss", r"decoder/dot_general|decoder/transpose|jvp\(\)/|transpose\(jvp\(\)\)/"
                       r"|logsumexp|take_along_axis|one_hot"),
    ("MLP", r"/mlp/"),
    ("attention q/k/v/o projections", r"attention/(reshape|dot_general)|dense"),
    ("attention scores, softmax, bias", r"attention/|relpos_bias|softmax"),
    ("layer norms", r"_norm/|layer_norm"),
    ("optimizer + finite check", r"adam|optax|global_norm|clip|_where|select_n|sqrt|step/add"),
)


def profile_step(system: JaxSystem, prepared: Any, out_dir: Path) -> dict[str, dict[str, float]]:
    """Seconds per category and per op of one traced step (XLA:CPU thunk events)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    with jax.profiler.trace(str(out_dir), create_perfetto_trace=True):
        system.step(prepared)
    hlo = system.executable(prepared).as_text()
    # Every instruction of the program (trace events with other names are
    # host-side waits that overlap the ops), with its JAX op name if any.
    names = {m.group(1): "" for m in re.finditer(r"%(\S+) = ", hlo)}
    for m in re.finditer(r"%(\S+) = \S+ \S+\(.*?op_name=\"([^\"]+)\"", hlo):
        names[m.group(1)] = m.group(2)
    trace = next(out_dir.rglob("perfetto_trace.json.gz"))
    with gzip.open(trace) as f:
        events = json.loads(f.read())
    events = events["traceEvents"] if isinstance(events, dict) else events
    spent: collections.Counter[str] = collections.Counter()
    by_op: collections.Counter[str] = collections.Counter()
    for e in events:
        name = e.get("name") or ""
        if e.get("ph") != "X" or not e.get("dur") or name not in names:
            continue
        op = names[name]
        cat = next((c for c, rx in PROFILE_CATEGORIES if re.search(rx, op)), "other")
        spent[cat] += e["dur"] / 1e6
        # Per op, layers merged: "…/layers_3/mlp/…" counts as "…/layers_N/mlp/…".
        kind = re.sub(r"[.]\d+$", "", name)
        by_op[kind + " " + re.sub(r"layers_\d+", "layers_N", op)] += e["dur"] / 1e6
    return {"categories": dict(spent.most_common()), "top_ops": dict(by_op.most_common(25))}
