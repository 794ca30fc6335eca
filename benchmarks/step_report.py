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
from workload import Workload, batch_stats

from tinyllm_jax.models.t5 import T5Config


def _peaks(peaks: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per probe (jax_float32, torch_bfloat16, ...), the median over rounds of its best rate."""
    return {k: statistics.median(p[k] for p in peaks) for k in peaks[0]}


def results(
    args: argparse.Namespace, cfg: T5Config, work: Workload, infos: dict[str, dict[str, Any]],
    steps: dict[str, list[float]], peaks: Sequence[dict[str, float]],
    theoretical: dict[str, Any], packing: dict[str, float] | None,
    profile: dict[str, Any] | None,
) -> dict[str, Any]:
    """The record of a run, as `--json` writes it (the output contract of issue 17)."""
    timed = [batch_stats(cfg, b) for b in work.batches[args.warmup :]]
    examples = args.batch * args.steps
    tokens = sum(x["real_tokens"] for x in timed)
    flops = sum(x["model_flops"] for x in timed)
    probes = _peaks(peaks)
    # A dtype's machine peak: the best framework's median rate for it.
    machine = {dt: max(v for k, v in probes.items() if k.endswith(dt))
               for dt in ("float32", "bfloat16")}
    systems_out: dict[str, Any] = {}
    for key, info in infos.items():
        t = steps[key]
        total = sum(t)
        peak = machine[info["dtype"]]
        systems_out[key] = {
            "name": info["name"],
            "examples_per_s": examples / total,
            "real_tokens_per_s": tokens / total,
            "step_s_median": statistics.median(t),
            "compile_s": info["compile_s"],
            "mfu": flops / total / peak,
            "dtype": info["dtype"],
            "step_s": t,
            "compiled_programs": info["compiled_programs"],
            "warmup_step_s": info["warmup_s"],
            "executed_over_model_flops": sum(info["executed_flops"]) / flops,
            "host_prep_s_per_batch": info["prep_s"],
            "first_loss": info["losses"][0] if info["losses"] else None,
            "losses": info["losses"],
            "row_shape": info["row_shape"],
            "rows_per_step": info["rows_per_step"],
            "worker_rss_gb": info["rss_gb"],
        }
    return {
        "peaks_gflops": {"float32": machine["float32"] / 1e9,
                         "bfloat16": machine["bfloat16"] / 1e9,
                         "theoretical_float32": theoretical.get("float32", 0.0) / 1e9,
                         "theoretical_bfloat16": theoretical.get("bfloat16", 0.0) / 1e9,
                         "probes_median": {k: v / 1e9 for k, v in probes.items()},
                         "per_round": [{k: v / 1e9 for k, v in p.items()} for p in peaks],
                         "theoretical_basis": {k: v for k, v in theoretical.items()
                                               if k not in ("float32", "bfloat16")}},
        "systems": systems_out,
        "workload": work.source,
        "model": dataclasses.asdict(cfg),
        "batch_examples": args.batch,
        "pairs_per_step_mean": float(np.mean([len(b) for b in work.batches[args.warmup :]])),
        "real_tokens_per_step_mean": tokens / args.steps,
        "model_tflops_per_step_mean": flops / args.steps / 1e12,
        "limits": [args.max_input_len, args.max_target_len],
        "row_shape": list(work.row_shape),
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "dropout_rate": args.dropout,
        "host": {
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "torch": torch.__version__, "torch_threads": os.cpu_count(),
            "torch_compile": args.torch_compile,
            "load_avg_1m": os.getloadavg()[0],
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        "profile_s": profile,
        "packing_rows_per_batch": packing,
    }


def print_table(out: dict[str, Any]) -> None:
    print(f"\ntrain-step benchmark: {out['workload']}")
    print(f"  {out['batch_examples']} examples/step (~{out['pairs_per_step_mean']:.0f} pairs, "
          f"{out['real_tokens_per_step_mean']:.0f} real tokens, "
          f"{out['model_tflops_per_step_mean']:.3f} model TFLOP), limits {out['limits']}, "
          f"{out['warmup_steps']} warm-up + {out['timed_steps']} timed steps per system, "
          f"dropout {out['dropout_rate']}, packed rows {out['row_shape']}")
    for key, r in out["systems"].items():
        if r.get("rows_per_step"):
            print(f"  {key}: rows per step {r['rows_per_step']}")
    if out.get("packing_rows_per_batch"):
        p = out["packing_rows_per_batch"]
        print("  packed rows per batch over the split (mean): " + ", ".join(
            f"{k.replace('_', ' ')} {v:.2f}" for k, v in p.items()))
    pk = out["peaks_gflops"]
    print("  matmul peaks, GFLOP/s (median over rounds of the best of 3): " + ", ".join(
        f"{k} {v:.0f}" for k, v in pk["probes_median"].items())
        + f"; theoretical float32 {pk['theoretical_float32']:.0f}, bf16 "
        f"{pk['theoretical_bfloat16']:.0f}; {out['host']['cpu_count']} cores, load avg "
        f"{out['host']['load_avg_1m']:.1f}")
    head = (f"{'system':<58}{'ex/s':>7}{'tok/s':>8}{'step s':>8}{'compile s':>10}"
            f"{'MFU':>7}{'exec/model':>11}")
    print(head)
    print("-" * len(head))
    for r in out["systems"].values():
        print(f"{r['name']:<58}{r['examples_per_s']:>7.2f}{r['real_tokens_per_s']:>8.0f}"
              f"{r['step_s_median']:>8.2f}{r['compile_s']:>10.1f}"
              f"{100 * r['mfu']:>6.1f}%{r['executed_over_model_flops']:>10.2f}x")
    print("ex/s, tok/s and MFU use the summed timed steps; 'step s' is their median; MFU is "
          "against the measured peak of the system's dtype; exec/model = FLOPs a dense "
          "implementation executes (pads, whole-row attention) over model FLOPs on real tokens.")
    if out.get("profile_s"):
        cats = out["profile_s"]["categories"]
        total = sum(cats.values())
        print(f"\nprofile of one traced step: {total:.2f}s in XLA ops")
        for cat, sec in cats.items():
            print(f"  {cat:<36}{sec:>7.2f}s {100 * sec / total:>5.1f}%")
        print("top ops (thunk kind, JAX op name; layers merged):")
        for op, sec in list(out["profile_s"]["top_ops"].items())[:15]:
            print(f"  {sec:>7.2f}s  {op[:130]}")
