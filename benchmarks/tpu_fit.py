"""One row of docs/scaling.md's TPU fit table, from the TPU compiler on a CPU host.

    python benchmarks/tpu_fit.py --model=flan-t5-small --topology=v5e:2x4 \
        --batches=64,128 --out=/tmp/fit/small-v5e8.json

For each of the two `--batches` it runs `python -m tinyllm_jax.aot --json`
(bf16 compute, float32 master weights, AdamW, rows of 512 + 256 tokens,
mesh data=1, fsdp=all devices, tensor=1) under `/usr/bin/time -v`, fits
per-device bytes linearly in the global batch, predicts the largest batch
that fits the chip (a multiple of the device count), and verifies that
prediction with one more compile (stepping down once if it does not fit).
It prints one markdown row and writes every compile's JSON to `--out`.

Tokens/s and MFU are the compiler's estimate from its own `optimal_seconds`
for one step and its FLOPs per device, not a measurement on a chip.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This process and each compile load libtpu; with no TPU attached its
# single-user lockfile only gets in the way.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
# Dense bf16 peak per chip, TFLOP/s (Google Cloud's published figures).
PEAK_TFLOPS = {"v5e": 197.0, "v4": 275.0, "v5p": 459.0, "v6e": 918.0}


def compile_once(args: argparse.Namespace, batch: int, workdir: Path) -> dict:
    """One aot compile at `batch`: its --json result, plus wall time and host RAM peak."""
    out = workdir / f"b{batch}.json"
    cmd = [
        "/usr/bin/time", "-v", sys.executable, "-m", "tinyllm_jax.aot",
        "--config=configs/tiny.py", f"--model={args.model}", f"--topology={args.topology}",
        f"--mesh=1,{args.devices},1", f"--batch_size={batch}", "--input_len=512",
        "--target_len=256", "--config.model.dtype=bfloat16", f"--config.model.remat={args.remat}",
        *(["--config.model.scan_layers=True"] if args.scan else []),
        "--config.model.dropout_rate=0.0",
        f"--config.optimizer.accumulate_steps={args.accumulate}", f"--json={out}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not out.exists():
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    result = json.loads(out.read_text())
    result["wall_s"] = round(wall, 1)
    result["host_rss_bytes"] = int(rss.group(1)) * 1024 if rss else None
    print(f"  batch {batch}: {result['per_device_bytes'] / 2**30:.2f} GiB/device, "
          f"fits {result['fits']}, compile {result['compile_s']} s, "
          f"RSS {result['host_rss_bytes'] / 2**30:.1f} GiB", file=sys.stderr, flush=True)
    return result


def predict_max_batch(a: dict, b: dict, capacity: int, step: int) -> int:
    """The largest multiple of `step` whose linearly interpolated bytes fit `capacity`."""
    per_row = (b["per_device_bytes"] - a["per_device_bytes"]) / (b["batch_size"] - a["batch_size"])
    fixed = a["per_device_bytes"] - per_row * a["batch_size"]
    if per_row <= 0:
        return b["batch_size"]
    return max(0, int((capacity - fixed) // per_row) // step * step)


def row(args: argparse.Namespace, results: list[dict], best: dict | None,
        searched: bool = True) -> str:
    chip = args.topology.split(":")[0]
    first = results[0]
    gib = first["capacity_bytes"] / 2**30
    rss = max(r["host_rss_bytes"] or 0 for r in results) / 2**30
    cells = [args.model, f"{args.topology} ({args.devices} dev.)", args.remat,
             "yes" if args.scan else "no"]
    if best is None:
        smallest = min(results, key=lambda r: r["batch_size"])
        cells += [f"{smallest['per_device_bytes'] / 2**30:.2f} / {gib:.0f} at {smallest['batch_size']}",
                  "no", "none", f"{max(r['compile_s'] for r in results):.0f}", f"{rss:.1f}",
                  "–", "–", "–", "–"]
        return "| " + " | ".join(cells) + " |"
    # v4's description lists TensorCores (2 per chip): half a chip's peak each.
    peak_device = PEAK_TFLOPS[chip] * 1e12 / args.cores_per_chip
    # XLA's cost analysis counts a while loop's body once: a scanned stack's
    # FLOPs and optimal_seconds cover one layer, so no rate is derived from them.
    secs = None if args.scan else best["optimal_seconds"]
    tokens = best["batch_size"] * (512 + 256) / secs if secs else None
    mfu = best["flops"] / (secs * peak_device) if secs else None
    cells += [f"{best['per_device_bytes'] / 2**30:.2f} / {gib:.0f} at {best['batch_size']}",
              "yes", str(best["batch_size"]) if searched else f"≥ {best['batch_size']} (one compile)",
              f"{max(r['compile_s'] for r in results):.0f}",
              f"{rss:.1f}", f"{best['flops'] / 1e12:.2f}", f"{best['optimal_seconds']:.3f}" if best["optimal_seconds"] else "–",
              f"{tokens:,.0f}" if tokens else "–", f"{100 * mfu:.0f}%" if mfu else "–"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="flan-t5-small / base / large / xl")
    p.add_argument("--topology", required=True, help="e.g. v5e:2x4, v5e:4x4, v4:2x2x1, v5p:2x2x1")
    p.add_argument("--batches", default="", help="two global batch sizes to fit memory on (one: a single compile, no search)")
    p.add_argument("--remat", default="full", choices=("none", "full", "dots"))
    p.add_argument("--scan", action="store_true", help="config.model.scan_layers=True")
    p.add_argument("--accumulate", type=int, default=1)
    p.add_argument("--out", required=True, help="JSON file for every compile's result")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from tinyllm_jax.aot import cores_per_chip, topology_devices

    devices = topology_devices(args.topology)
    args.devices, args.cores_per_chip = len(devices), cores_per_chip(devices)
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [
        args.devices, 2 * args.devices]
    if len(set(batches)) != len(batches) or len(batches) > 2 or any(
            b % args.devices for b in batches):
        raise SystemExit(f"--batches needs one or two different multiples of {args.devices}")
    predicted = None
    with tempfile.TemporaryDirectory(prefix="tpu_fit-") as tmp:
        results = [compile_once(args, b, Path(tmp)) for b in batches]
        if len(results) == 1:
            # One compile (a model too large to compile thrice here): no search.
            best = results[0] if results[0]["fits"] else None
            return finish(args, results, best, predicted, searched=False)
        capacity = results[0]["capacity_bytes"]
        best = None
        predicted = predict_max_batch(*results, capacity, args.devices)
        tried = {r["batch_size"]: r for r in results}
        for batch in (predicted, predicted - args.devices):
            if batch < args.devices:
                break
            r = tried.get(batch) or compile_once(args, batch, Path(tmp))
            if batch not in tried:
                tried[batch] = r
                results.append(r)
            if r["fits"]:
                best = r
                break
        if best is None:
            # The prediction missed: the largest batch compiled that fits, if any.
            fitting = [r for r in results if r["fits"]]
            best = max(fitting, key=lambda r: r["batch_size"]) if fitting else None
    finish(args, results, best, predicted, searched=True)


def finish(args: argparse.Namespace, results: list[dict], best: dict | None,
           predicted: int | None, *, searched: bool) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "predicted": predicted,
                                          "searched": searched, "best": best,
                                          "compiles": results}, indent=1))
    print(row(args, results, best, searched))


if __name__ == "__main__":
    main()
