"""The planning tool's output: `python -m tinyllm_jax.aot ... --json F`.

docs/scaling.md's fit table and benchmarks/tpu_fit.py read these keys, so the
contract is checked on the CPU compiler here and, where libtpu is installed
(the `tpu` extra, which .ci/run installs), on the TPU compiler for v5e:2x2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CONTRACT = {
    "model": str, "topology": (str, type(None)), "devices": int, "scan_layers": bool,
    "per_device_bytes": int, "capacity_bytes": int, "fits": bool, "compile_s": float,
    "flops": float, "optimal_seconds": (float, type(None)),
}
ONE_LAYER = ["--config.model.num_layers=1", "--config.model.num_decoder_layers=1"]


def run_aot(args: list[str], out: Path, timeout: int = 300) -> tuple[subprocess.CompletedProcess,
                                                                      dict]:
    # ALLOW_...: another process (a concurrent test run) may hold libtpu's lockfile.
    env = dict(os.environ, JAX_PLATFORMS="cpu", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tinyllm_jax.aot", "--config=configs/tiny.py", *args,
         f"--json={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc, (json.loads(out.read_text()) if out.exists() else {})


def check_contract(result: dict) -> None:
    for key, kind in CONTRACT.items():
        assert key in result, f"--json lacks {key!r}"
        assert isinstance(result[key], kind), f"{key}={result[key]!r} is not {kind}"


def test_cpu_json_has_the_planning_contract(tmp_path):
    proc, r = run_aot(["--mesh=1,2,1", "--devices=2", "--batch_size=4", *ONE_LAYER],
                      tmp_path / "cpu.json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    check_contract(r)
    assert r["topology"] is None and r["devices"] == 2 and r["scan_layers"] is False
    peaks = r["compiled_per_device"]
    assert r["per_device_bytes"] == max(peaks["peak"], peaks["compiler_peak"]) > 0
    # No --chip: fake CPU devices share the host's memory.
    assert r["capacity_source"] == "host RAM / 2" and r["fits"] is True
    assert r["flops"] > 0 and r["optimal_seconds"] is None  # the CPU compiler gives no estimate


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install -e '.[tpu]'): no TPU compiler")
def test_tiny_compiles_for_v5e_2x2_with_the_tpu_compiler(tmp_path):
    proc, r = run_aot(["--topology=v5e:2x2", "--mesh=1,4,1", *ONE_LAYER], tmp_path / "tpu.json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    check_contract(r)
    assert r["topology"] == "v5e:2x2" and r["devices"] == 4 and r["compiler"] == "TPU v5e:2x2"
    assert r["capacity_bytes"] == 16 * 1024**3 and r["fits"] is True
    # The TPU compiler's own cost model: a positive time for a step with positive FLOPs.
    assert r["flops"] > 0 and r["optimal_seconds"] is not None and r["optimal_seconds"] > 0
