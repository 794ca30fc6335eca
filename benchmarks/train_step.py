"""Train-step throughput and MFU: our jitted packed step vs the strongest PyTorch we could build.

Every system trains the same randomly initialised FLAN-T5-small-shaped
model (our init, exported to HF format, loaded by the PyTorch systems) on
the same batches of `--batch` examples, each example giving an answer pair
and one rationale pair per teacher, inputs cut to 512 and targets to 256
tokens:

  (a)   tinyllm_jax in float32: the trainer's step (jitted, state donated) on
        the pairs packed into rows by the trainer's packer, all tasks in one
        forward (jax_systems.py); every step has the same row count (padded
        with empty rows, as training pads its last batch), so one compiled
        program serves all steps, as in training.
  (a16) the same with bf16 compute: bf16 matmul operands, float32
        accumulation, float32 master weights, softmax, norms and loss.
  (b)   PyTorch, every pair padded to the limits, one forward per task.
  (c)   PyTorch, dynamic padding, all tasks concatenated in one forward.
  (d)   PyTorch, the faithful distilling step-by-step recipe: each task's
        batch padded to its own longest input and target, one forward per
        task, losses summed, one backward, the HF Trainer's fused AdamW.
  (e)   PyTorch, the strongest we could build: exactly our packed rows fed
        to HF T5 with block-diagonal 4-D masks, torch.compile, fused AdamW
        (torch_packed.py). (e16): the same under bf16 autocast.

Each system runs in its own process (`--worker`), built, compiled and warmed
up before the timed rounds; round r steps each system once, one at a time,
in a rotating order, after a probe of the matmul peaks (probes.py), so load
from other processes lands on all systems alike. Torch uses one thread per
core; no allocator tuning (each process holds only its own system).
MFU = model FLOPs of the real (non-pad) tokens (benchmarks/flops.py) / step
time / the measured peak of the dtype the system computes in (the best of
JAX and torch on a 2048^3 matmul in this run); the same numerator for all.

    python benchmarks/train_step.py --systems a,a16,d,e,e16 --steps 5 --json F
    python benchmarks/train_step.py --systems a --ablations bucketed-rows,unpacked,per-task --steps 2

`--ablations` adds variants of (a) that switch one optimisation off; see
docs/performance.md. Parts: workload.py (batches, the trainer's packing),
jax_systems.py, torch_systems.py, torch_reference.py, torch_packed.py,
probes.py (peaks, memory, profile), step_report.py (JSON record, table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax
import jax
from jax_systems import ABLATIONS, jax_systems
from probes import PeakProbe, profile_step, rss_gb, theoretical_peaks
from step_report import print_table, results
from system import System
from workload import SHARED, Workload, load_workload, packing_report

from tinyllm_jax.models.hf import save_hf_checkpoint
from tinyllm_jax.models.t5 import init_params
from tinyllm_jax.models.t5_config import SIZES, T5Config
from tinyllm_jax.train_step import task_coefficients

JAX_KEYS = ("a", "a16")
TORCH_KEYS = ("b", "c", "d", "e", "e16")
# Protocol lines of a worker on its stdout start with this; anything else is log.
TAG = "@@ "


def model_config(args: argparse.Namespace) -> T5Config:
    if args.size == "tiny":  # the smoke test's shape: same code paths, seconds per step
        cfg = T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    else:
        cfg = SIZES[args.size]
    if args.layers:  # the same layer shapes, fewer of them (compile and step time scale)
        cfg = cfg.replace(num_layers=args.layers, num_decoder_layers=None)
    return cfg.replace(dropout_rate=args.dropout)


def build_system(args: argparse.Namespace, key: str, cfg: T5Config, work: Workload) -> System:
    """The one system `key` names ("a", "e16", "abl:fixed-rows", ...), from the shared init."""
    params = jax.device_get(flax.linen.meta.unbox(init_params(cfg, jax.random.key(args.seed))))
    coefs = task_coefficients(1.0, (), len(work.teachers))
    if key in JAX_KEYS or key.startswith("abl:"):
        sub = argparse.Namespace(**{**vars(args), "systems": key})
        ablations = [key[4:]] if key.startswith("abl:") else []
        return jax_systems(sub, cfg, params, coefs, work, ablations)[0]
    import torch_systems  # torch only in the processes that step it

    return torch_systems.TorchSystem(key, Path(args.hf_dir), coefs, args, cfg, work)


def _send(obj: dict[str, Any]) -> None:
    print(TAG + json.dumps(obj), flush=True)


def worker(args: argparse.Namespace) -> None:
    """One system in this process: build, prepare, compile, warm up, then step on request.

    Requests on stdin, one per line: "step I" (batch I of the workload),
    "profile DIR" (trace one step; JAX systems), "quit".
    """
    cfg = model_config(args)
    work = load_workload(args, args.warmup + args.steps)
    s = build_system(args, args.worker, cfg, work)
    t0 = time.perf_counter()
    prepared = [s.prepare(b) for b in work.batches]
    prep_s = (time.perf_counter() - t0) / len(prepared)
    compile_s = s.compile_all(prepared)
    losses, warm = [], []
    for i in range(args.warmup):
        t0 = time.perf_counter()
        losses.append(s.step(prepared[i]))
        warm.append(time.perf_counter() - t0)
    rows = [s.rows_of(p) for p in prepared[args.warmup :]] if hasattr(s, "rows_of") else []
    _send({"ready": True, "name": s.name, "dtype": getattr(s, "dtype", "float32"),
           "compile_s": compile_s, "warmup_s": warm, "losses": losses, "prep_s": prep_s,
           "executed_flops": [s.executed_flops(b) for b in work.batches[args.warmup :]],
           "row_shape": list(s.row_shape) if s.row_shape else None,
           "rows_per_step": rows if rows and rows[0] is not None else None,
           "compiled_programs": len(getattr(s, "compiled", {})) or None,
           "rss_gb": rss_gb()})
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "step":
            t0 = time.perf_counter()
            loss = s.step(prepared[int(arg)])
            _send({"step_s": time.perf_counter() - t0, "loss": loss})
        elif cmd == "profile":
            _send({"profile": profile_step(s, prepared[-1], Path(arg))})
        elif cmd == "quit":
            return


class Worker:
    """The orchestrator's handle on one system's process."""

    def __init__(self, key: str, argv: Sequence[str]) -> None:
        self.key = key
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", key],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def receive(self) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                return json.loads(line[len(TAG) :])
            print(f"    [{self.key}] {line.rstrip()}", flush=True)
        raise SystemExit(f"worker {self.key} exited (code {self.proc.wait()}) before replying")

    def request(self, line: str) -> dict[str, Any]:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=120)


def worker_argv(argv: Sequence[str], hf_dir: str) -> list[str]:
    out, skip = [], False
    for a in argv:  # drop the orchestrator-only flags
        if skip:
            skip = False
            continue
        if a in ("--json", "--profile", "--hf-dir"):
            skip = True
            continue
        if a.startswith(("--json=", "--profile=", "--hf-dir=")):
            continue
        out.append(a)
    return [*out, "--hf-dir", hf_dir]


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    cfg = model_config(args)
    work = load_workload(args, args.warmup + args.steps)
    keys = [k for k in args.systems.split(",") if k]
    unknown = [k for k in keys if k not in (*JAX_KEYS, *TORCH_KEYS)]
    ablations = list(ABLATIONS) if args.ablations == "all" else [
        a for a in args.ablations.split(",") if a]
    unknown += [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise SystemExit(f"unknown systems / ablations {unknown}; systems: "
                         f"{', '.join((*JAX_KEYS, *TORCH_KEYS))}; ablations: {', '.join(ABLATIONS)}")
    keys += [f"abl:{a}" for a in ablations]
    hf_dir = tempfile.mkdtemp(prefix="tinyllm_bench_")
    if set(keys) & set(TORCH_KEYS):
        params = jax.device_get(flax.linen.meta.unbox(init_params(cfg, jax.random.key(args.seed))))
        save_hf_checkpoint(Path(hf_dir), cfg, params)
    infos: dict[str, dict[str, Any]] = {}
    workers: list[Worker] = []
    try:
        for key in keys:  # one at a time: each compiles and warms up on a quiet machine
            w = Worker(key, worker_argv(argv, hf_dir))
            infos[key] = w.receive()
            workers.append(w)
            r = infos[key]
            print(f"  warm-up {key} {r['name']}: compile {r['compile_s']:.1f}s, steps "
                  f"{' '.join(f'{x:.2f}' for x in r['warmup_s'])}s; its RSS now / peak "
                  "{:.1f} / {:.1f} GB".format(*r["rss_gb"]), flush=True)
        probe = PeakProbe(scale=1.0 if args.size != "tiny" else 0.125)
        peaks: list[dict[str, float]] = []
        steps: dict[str, list[float]] = {k: [] for k in keys}
        for k in range(args.steps):  # steady state, interleaved, rotating order
            peaks.append(probe())
            order = [*workers[k % len(workers):], *workers[: k % len(workers)]]
            for w in order:
                reply = w.request(f"step {args.warmup + k}")
                steps[w.key].append(reply["step_s"])
                infos[w.key]["losses"].append(reply["loss"])
            print(f"  round {k + 1}/{args.steps}: peaks " + ", ".join(
                f"{n} {v / 1e9:.0f}" for n, v in peaks[-1].items()) + " GFLOP/s; " + ", ".join(
                f"{w.key} {steps[w.key][-1]:.2f}s" for w in workers), flush=True)
        profile = None
        if args.profile:
            first = next((w for w in workers if w.key in JAX_KEYS), None)
            if first is not None:
                profile = first.request(f"profile {args.profile}")["profile"]
    finally:
        for w in workers:
            w.close()
    return results(args, cfg, work, infos, steps, peaks, theoretical_peaks(),
                   packing_report(work), profile)


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
    ap.add_argument("--layers", type=int, default=0,
                    help="encoder and decoder layers (0: the size's own; FLAN-T5-small has 8)")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per system")
    ap.add_argument("--systems", default="a,a16,d,e,e16",
                    help=f"comma list of {', '.join((*JAX_KEYS, *TORCH_KEYS))}")
    ap.add_argument("--ablations", default="",
                    help=f"comma list or 'all': {', '.join(ABLATIONS)}")
    ap.add_argument("--torch-compile", type=lambda v: v not in ("0", "off", "false"),
                    default=True, help="(e), (e16): torch.compile the forward + loss (on|off)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--clip-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here (for CI history)")
    ap.add_argument("--profile", type=Path,
                    help="trace one extra step of the first JAX system into this directory "
                         "and print where its time goes")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)  # internal: run one system
    ap.add_argument("--hf-dir", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.steps < 1:
        raise SystemExit("--steps must be >= 1")
    if args.worker:
        worker(args)
        return {}
    out = run(args, argv)
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
