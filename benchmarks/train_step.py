"""Train-step throughput and MFU: our jitted packed step vs two PyTorch baselines.

Every system trains the same randomly initialised FLAN-T5-small-shaped
model (our init, exported to HF format, loaded by both sides) on the same
batches of `--batch` examples, each example giving an answer pair and one
rationale pair per teacher, inputs cut to 512 and targets to 256 tokens:

  (a) tinyllm_jax: `make_train_step` under `jax.jit` with state donation; the
      pairs of a batch packed into rows by the trainer's packer (the row
      shape `pipeline.row_lengths` picks, the rows its `BatchIterator`
      forms), every task in one forward; every step has the same row count
      (padded with empty rows, as training pads its last batch), so one
      compiled program serves all steps, as in training.
  (b) PyTorch, the published recipe: HF T5ForConditionalGeneration, inputs
      padded to the maximum lengths, one forward per task, losses summed,
      AdamW (benchmarks/torch_reference.py).
  (c) PyTorch, a strong eager baseline: dynamic padding, all tasks
      concatenated into one forward.

Systems run interleaved in one process (round r runs each system once, in a
rotating order, plus a probe of the peak float32 matmul rate), so load from
other processes lands on all of them alike; report ratios. Compile and
warm-up steps are timed apart from the steady state. MFU = model FLOPs of
the real (non-pad) tokens (benchmarks/flops.py) / step time / the measured
matmul peak; it is the same numerator for every system.

    python benchmarks/train_step.py                       # obqa + both teachers
    python benchmarks/train_step.py --warmup 3 --steps 5 --json train_step.json
    python benchmarks/train_step.py --systems a --ablations bucketed-rows,unpacked,per-task --steps 2

`--ablations` adds variants of (a) that switch one optimisation off; see
docs/performance.md for what each measures. Every variant keeps its own train
state and batches, so `--ablations all` needs more than 24 GiB at the default
sizes; docs/performance.md runs them in three groups.

This file builds the systems and times them; the parts live beside it:
workload.py (batches, the trainer's packing), jax_systems.py ((a) and its
ablations), torch_systems.py ((b), (c)), probes.py (matmul peak, memory,
profile) and step_report.py (the JSON record and the table).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax
import jax
from jax_systems import ABLATIONS, JaxSystem, jax_systems
from probes import PeakProbe, profile_step, rss_gb
from step_report import Timings, print_table, results
from system import System
from torch_systems import limit_malloc_caching, torch_systems
from workload import SHARED, Workload, load_workload, packing_report

from tinyllm_jax.models.hf import save_hf_checkpoint
from tinyllm_jax.models.t5 import init_params
from tinyllm_jax.models.t5_config import SIZES, T5Config
from tinyllm_jax.train_step import task_coefficients


def model_config(args: argparse.Namespace) -> T5Config:
    if args.size == "tiny":  # the smoke test's shape: same code paths, seconds per step
        cfg = T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    else:
        cfg = SIZES[args.size]
    return cfg.replace(dropout_rate=args.dropout)


def build_systems(args: argparse.Namespace, cfg: T5Config, work: Workload) -> list[System]:
    """The systems `--systems` and `--ablations` name, all from the same initial weights."""
    ablations = list(ABLATIONS) if args.ablations == "all" else [
        a for a in args.ablations.split(",") if a]
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise SystemExit(f"unknown ablations {unknown}; choose from {', '.join(ABLATIONS)}")
    params = jax.device_get(flax.linen.meta.unbox(init_params(cfg, jax.random.key(args.seed))))
    coefs = task_coefficients(1.0, (), len(work.teachers))
    systems: list[System] = list(jax_systems(args, cfg, params, coefs, work, ablations))
    if set(args.systems.split(",")) & {"b", "c"}:
        hf_dir = Path(tempfile.mkdtemp(prefix="tinyllm_bench_"))
        save_hf_checkpoint(hf_dir, cfg, params)
        systems += torch_systems(args, cfg, hf_dir, coefs, work.num_tasks)
    return systems


def time_systems(args: argparse.Namespace, systems: Sequence[System], work: Workload) -> Timings:
    """Prepare every batch, compile and warm up each system, then time interleaved rounds."""
    n_batches = args.warmup + args.steps
    t = Timings()
    peak = PeakProbe(scale=1.0 if args.size != "tiny" else 0.125)
    for s in systems:
        t0 = time.perf_counter()
        t.prepared[s.name] = [s.prepare(b) for b in work.batches]
        t.prep_s[s.name] = (time.perf_counter() - t0) / n_batches
        t.steps[s.name], t.losses[s.name], t.warmup_s[s.name] = [], [], []

    for s in systems:  # warm-up: compile, then the first steps, timed apart
        t.compile_s[s.name] = s.compile_all(t.prepared[s.name])
        for i in range(args.warmup):
            t0 = time.perf_counter()
            t.losses[s.name].append(s.step(t.prepared[s.name][i]))
            t.warmup_s[s.name].append(time.perf_counter() - t0)
            s.after_step()
        print(f"  warm-up {s.name}: compile {t.compile_s[s.name]:.1f}s, steps "
              f"{' '.join(f'{x:.2f}' for x in t.warmup_s[s.name])}s; process RSS now / peak "
              "{:.1f} / {:.1f} GB".format(*rss_gb()), flush=True)

    for k in range(args.steps):  # steady state, interleaved, rotating order
        rate, label = peak()
        t.peaks.append(rate)
        t.peak_labels.append(label)
        i = args.warmup + k
        for s in [*systems[k % len(systems):], *systems[: k % len(systems)]]:
            t0 = time.perf_counter()
            t.losses[s.name].append(s.step(t.prepared[s.name][i]))
            t.steps[s.name].append(time.perf_counter() - t0)
            s.after_step()
        print(f"  round {k + 1}/{args.steps}: peak {rate / 1e9:.1f} GFLOP/s; " + ", ".join(
            f"{s.name.split()[0]} {t.steps[s.name][-1]:.2f}s" for s in systems), flush=True)
    return t


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = model_config(args)
    work = load_workload(args, args.warmup + args.steps)
    systems = build_systems(args, cfg, work)
    packed = any(isinstance(s, JaxSystem) and s.layout == "packed" for s in systems)
    packing = packing_report(work) if packed else None
    timings = time_systems(args, systems, work)
    profile = None
    if args.profile:
        first = next((s for s in systems if isinstance(s, JaxSystem)), None)
        if first is not None:
            profile = profile_step(first, timings.prepared[first.name][-1], args.profile)
    return results(args, cfg, work, systems, timings, packing, profile)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("auto", "obqa", "synthetic"), default="auto",
                    help="auto: the TinyLLM dataset when --data-root has it, else synthetic")
    ap.add_argument("--data-root", default=str(SHARED / "data" / "tinyllm"))
    ap.add_argument("--dataset", default="obqa")
    ap.add_argument("--teachers", default="flan,llama")
    ap.add_argument("--tokenizer", default="", help="default: ../shared/t5-vocab, else byte")
    ap.add_argument("--batch", type=int, default=16, help="examples per step, every system")
    ap.add_argument("--max-input-len", type=int, default=512)
    ap.add_argument("--max-target-len", type=int, default=256)
    ap.add_argument("--size", default="flan-t5-small", choices=(*SIZES, "tiny"))
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per system")
    ap.add_argument("--systems", default="a,b,c")
    ap.add_argument("--ablations", default="",
                    help=f"comma list or 'all': {', '.join(ABLATIONS)}")
    ap.add_argument("--torch-threads", default="0",
                    help="torch threads for (b) and (c): 0 = torch's default (one per core); "
                         "a list such as 0,1 runs each baseline once per setting (on a "
                         "machine shared with other jobs 1 thread can be faster); ratios use "
                         "the fastest")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--clip-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here (for CI history)")
    ap.add_argument("--profile", type=Path,
                    help="trace one extra step of the first JAX system into this directory "
                         "and print where its time goes")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.steps < 1:
        raise SystemExit("--steps must be >= 1")
    limit_malloc_caching()
    out = run(args)
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
