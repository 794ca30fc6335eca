"""The train-step benchmark's results: the JSON record of a run and its printed table."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import torch
from jax_systems import JaxSystem
from probes import rss_gb
from system import System
from workload import Workload, batch_stats

from tinyllm_jax.models.t5 import T5Config


@dataclasses.dataclass
class Timings:
    """What the interleaved run measured, per system name unless noted."""

    # Each system's host batches (warm-up ones first) and seconds per batch to build them.
    prepared: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    prep_s: dict[str, float] = dataclasses.field(default_factory=dict)
    compile_s: dict[str, float] = dataclasses.field(default_factory=dict)
    warmup_s: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    # Steady-state step seconds, one per round; losses of warm-up then timed steps.
    steps: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    losses: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    # The matmul peak (FLOP/s) probed before each round, and the shape that reached it.
    peaks: list[float] = dataclasses.field(default_factory=list)
    peak_labels: list[str] = dataclasses.field(default_factory=list)


def results(
    args: argparse.Namespace, cfg: T5Config, work: Workload, systems: Sequence[System],
    timings: Timings, packing: dict[str, float] | None, profile: dict[str, Any] | None,
) -> dict[str, Any]:
    """The record of a run, as `--json` writes it."""
    timed = [batch_stats(cfg, b) for b in work.batches[args.warmup :]]
    examples = args.batch * args.steps
    tokens = sum(x["real_tokens"] for x in timed)
    flops = sum(x["model_flops"] for x in timed)
    peak_med = statistics.median(timings.peaks)
    systems_out: dict[str, Any] = {}
    for s in systems:
        steps = timings.steps[s.name]
        total = sum(steps)
        executed = sum(s.executed_flops(b) for b in work.batches[args.warmup :])
        jax_rows = isinstance(s, JaxSystem) and s.layout != "per-task"
        systems_out[s.name] = {
            "examples_per_s": examples / total,
            "real_tokens_per_s": tokens / total,
            "step_s_median": statistics.median(steps),
            "step_s": steps,
            "compile_s": timings.compile_s[s.name],
            "compiled_programs": len(getattr(s, "compiled", {})) or None,
            "warmup_step_s": timings.warmup_s[s.name],
            "mfu": flops / total / peak_med,
            # Each round's step against the peak probed just before it.
            "mfu_paired_median": statistics.median(
                x["model_flops"] / t / p for x, t, p in zip(timed, steps, timings.peaks)),
            "executed_over_model_flops": executed / flops,
            "host_prep_s_per_batch": timings.prep_s[s.name],
            "first_loss": timings.losses[s.name][0] if timings.losses[s.name] else None,
            "row_shape": list(s.row_shape) if s.row_shape else None,
            "rows_per_step": [JaxSystem.rows_of(p) for p in
                              timings.prepared[s.name][args.warmup :]] if jax_rows else None,
        }

    # Ratios against the fastest thread setting of each baseline.
    def fastest(prefix: str) -> dict[str, Any] | None:
        mine = [r for n, r in systems_out.items() if n.startswith(prefix)]
        return max(mine, key=lambda r: r["examples_per_s"]) if mine else None

    base_b, base_c = fastest("(b)"), fastest("(c)")
    for res in systems_out.values():
        res["x_vs_b"] = res["examples_per_s"] / base_b["examples_per_s"] if base_b else None
        res["x_vs_c"] = res["examples_per_s"] / base_c["examples_per_s"] if base_c else None
    return {
        "workload": work.source,
        "model": dataclasses.asdict(cfg),
        "batch_examples": args.batch,
        "pairs_per_step_mean": float(np.mean([len(b) for b in work.batches[args.warmup :]])),
        "real_tokens_per_step_mean": tokens / args.steps,
        "model_tflops_per_step_mean": flops / args.steps / 1e12,
        "limits": [args.max_input_len, args.max_target_len],
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "peak_flops_median": peak_med,
        "peak_flops_max": max(timings.peaks),
        "peak_flops_per_round": timings.peaks,
        "peak_shape_best": max(set(timings.peak_labels), key=timings.peak_labels.count),
        "dropout_rate": args.dropout,
        "host": {
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "torch": torch.__version__, "torch_threads": args.torch_threads,
            "load_avg_1m": os.getloadavg()[0],
            "peak_rss_gb": rss_gb()[1],
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        "systems": systems_out,
        "profile_s": profile,
        "packing_rows_per_batch": packing,
    }


def print_table(out: dict[str, Any]) -> None:
    print(f"\ntrain-step benchmark: {out['workload']}")
    print(f"  {out['batch_examples']} examples/step (~{out['pairs_per_step_mean']:.0f} pairs, "
          f"{out['real_tokens_per_step_mean']:.0f} real tokens, "
          f"{out['model_tflops_per_step_mean']:.3f} model TFLOP), limits {out['limits']}, "
          f"{out['warmup_steps']} warm-up + {out['timed_steps']} timed steps per system, "
          f"dropout {out['dropout_rate']}")
    for name, r in out["systems"].items():
        if r.get("rows_per_step"):
            print(f"  {name}: rows of {r['row_shape'][1]} input / {r['row_shape'][2]} target "
                  f"slots, rows per step {r['rows_per_step']}, {r['compiled_programs']} "
                  "compiled program(s)")
    if out.get("packing_rows_per_batch"):
        p = out["packing_rows_per_batch"]
        print("  packed rows per batch over the split (mean): " + ", ".join(
            f"{k.replace('_', ' ')} {v:.2f}" for k, v in p.items()))
    print(f"  peak float32 matmul ({out['peak_shape_best']}): median "
          f"{out['peak_flops_median'] / 1e9:.1f}, max {out['peak_flops_max'] / 1e9:.1f} GFLOP/s; "
          f"{out['host']['backend']}, {out['host']['cpu_count']} cores, "
          f"load avg {out['host']['load_avg_1m']:.1f}")
    head = (f"{'system':<30}{'ex/s':>7}{'tok/s':>8}{'step s':>8}{'compile s':>10}"
            f"{'warm-up s':>10}{'MFU':>7}{'exec/model':>11}{'vs (b)':>8}{'vs (c)':>8}")
    print(head)
    print("-" * len(head))
    for name, r in out["systems"].items():
        vb = f"{r['x_vs_b']:.2f}x" if r["x_vs_b"] else "-"
        vc = f"{r['x_vs_c']:.2f}x" if r["x_vs_c"] else "-"
        warm = r["warmup_step_s"][0] if r["warmup_step_s"] else 0.0
        print(f"{name:<30}{r['examples_per_s']:>7.2f}{r['real_tokens_per_s']:>8.0f}"
              f"{r['step_s_median']:>8.2f}{r['compile_s']:>10.1f}{warm:>10.2f}"
              f"{100 * r['mfu']:>6.1f}%{r['executed_over_model_flops']:>10.2f}x{vb:>8}{vc:>8}")
    print("ex/s, tok/s and MFU use the summed timed steps; 'step s' is their median; 'warm-up s'"
          " is the first step after compiling; exec/model = FLOPs a dense implementation "
          "executes (pads, whole-row attention) over model FLOPs on real tokens; Nt = torch "
          "threads; 'vs' ratios are against the fastest variant of (b) / (c).")
    if out.get("profile_s"):
        cats = out["profile_s"]["categories"]
        total = sum(cats.values())
        print(f"\nprofile of one traced step of {next(iter(out['systems']))}: "
              f"{total:.2f}s in XLA ops")
        for cat, sec in cats.items():
            print(f"  {cat:<36}{sec:>7.2f}s {100 * sec / total:>5.1f}%")
        print("top ops (thunk kind, JAX op name; layers merged):")
        for op, sec in list(out["profile_s"]["top_ops"].items())[:15]:
            print(f"  {sec:>7.2f}s  {op[:130]}")
