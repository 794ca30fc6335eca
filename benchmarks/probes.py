"""Measurements beside the timed steps: the matmul peak, process memory, a step's profile."""

from __future__ import annotations

import collections
import gzip
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax_systems import JaxSystem

# Peak probe: large float32 matmuls (m, k, n); the best rate of any counts.
PEAK_SHAPES = ((2048, 2048, 2048), (4096, 512, 4096))


class PeakProbe:
    """Best float32 matmul rate of PEAK_SHAPES (FLOP/s), jitted, measured now."""

    def __init__(self, scale: float = 1.0) -> None:
        self.fns = []
        for m, k, n in PEAK_SHAPES:
            m, k, n = (max(64, int(x * scale)) for x in (m, k, n))
            a = jax.random.normal(jax.random.key(1), (m, k), jnp.float32)
            b = jax.random.normal(jax.random.key(2), (k, n), jnp.float32)
            f = jax.jit(jnp.matmul)
            f(a, b).block_until_ready()
            self.fns.append((f, a, b, 2.0 * m * k * n, f"{m}x{k}x{n}"))

    def __call__(self) -> tuple[float, str]:
        best = (0.0, "")
        for f, a, b, flops, label in self.fns:
            for _ in range(3):
                t0 = time.perf_counter()
                f(a, b).block_until_ready()
                rate = flops / (time.perf_counter() - t0)
                best = max(best, (rate, label))
        return best


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
