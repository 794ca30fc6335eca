"""Compile time of the train step, scanned vs unrolled layers.

Runs the ahead-of-time compile check (`python -m tinyllm_jax.aot`) once per
(model, scan_layers) in a fresh process, one at a time (a large compile
needs GBs of host RAM), and prints a markdown table: compile seconds (the
check's own lower+compile timing), the process's wall time and its peak RSS,
and the compiled peak bytes per device.

    python benchmarks/scan_compile.py --models=base,large --out=/tmp/scan/cpu.json
    python benchmarks/scan_compile.py --models=base --topology=v5e:2x2 --mesh=1,4,1 \\
        --python=/work/venvs/tpu/bin/python --out=/tmp/scan/tpu.json

Every row's command is printed, so a row can be rerun by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def aot_command(python: str, model: str, scanned: bool, args: argparse.Namespace,
                json_path: str) -> list[str]:
    cmd = [python, "-m", "tinyllm_jax.aot", "--config=configs/tiny.py", f"--model={model}",
           f"--mesh={args.mesh}", f"--batch_size={args.batch_size}",
           f"--input_len={args.input_len}", f"--target_len={args.target_len}",
           f"--config.model.dtype={args.dtype}", f"--config.model.remat={args.remat}",
           f"--config.model.scan_layers={scanned}", f"--json={json_path}"]
    if args.topology:
        cmd.append(f"--topology={args.topology}")
    else:
        cmd.append(f"--devices={args.devices}")
    return cmd


def run_one(cmd: list[str], env: dict[str, str]) -> tuple[int, float, float, int]:
    """(exit status, wall seconds, CPU seconds, peak RSS bytes) of one compile
    process. CPU seconds (user + system, all threads) hardly depend on what
    else the machine runs, where wall time does."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return proc.returncode, time.perf_counter() - t0, cpu, int(usage.ru_maxrss) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="base,large")
    ap.add_argument("--scan", default="False,True", help="which layouts, in order")
    ap.add_argument("--mesh", default="1,16,1")
    ap.add_argument("--devices", type=int, default=16)
    ap.add_argument("--topology", default="")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--input_len", type=int, default=512)
    ap.add_argument("--target_len", type=int, default=256)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--remat", default="none")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    env = dict(os.environ, PYTHONPATH=str(REPO))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for scanned in (s.strip() == "True" for s in args.scan.split(",")):
                json_path = str(Path(tmp) / f"{model}-{scanned}.json")
                cmd = aot_command(args.python, model, scanned, args, json_path)
                print("$", " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), flush=True)
                rc, wall, cpu, rss = run_one(cmd, env)
                row = {"model": model, "scan_layers": scanned, "exit": rc, "wall_s": round(wall, 1),
                       "cpu_s": round(cpu, 1), "host_peak_rss": rss, "command": cmd[1:]}
                if Path(json_path).exists():
                    result = json.loads(Path(json_path).read_text())
                    row.update(compile_s=result["compile_s"],
                               peak_per_device=result["compiled_per_device"]["peak"],
                               compiler=result["compiler"], parameters=result["parameters"])
                rows.append(row)
                if args.out:
                    Path(args.out).write_text(json.dumps(rows, indent=1))
    print("\n| model | layers | compiler | compile s | process wall s | process CPU s | "
          "host peak RSS | compiled peak / device |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "compile_s" not in r:
            print(f"| {r['model']} | {'scanned' if r['scan_layers'] else 'unrolled'} | - | "
                  f"failed (exit {r['exit']}) | {r['wall_s']} | {r['cpu_s']} | "
                  f"{r['host_peak_rss'] / 2**30:.1f} GiB | - |")
            continue
        print(f"| {r['model']} | {'scanned' if r['scan_layers'] else 'unrolled'} | "
              f"{r['compiler']} | {r['compile_s']} | {r['wall_s']} | {r['cpu_s']} | "
              f"{r['host_peak_rss'] / 2**30:.1f} GiB | {r['peak_per_device'] / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
