"""Smoke tests of the benchmark code paths (tiny shapes, one step per system).

The real benchmarks take minutes (docs/performance.md); these check that
every system runs, that (a), (b) and (c) compute the same loss from the same
weights and pairs, and that the analytic FLOP count matches XLA's own count.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO / "benchmarks"))

import flops  # noqa: E402

from tinyllm_jax.models.hf import save_hf_checkpoint  # noqa: E402
from tinyllm_jax.models.t5 import T5, T5Config, init_params  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.mark.slow
def test_train_step_benchmark_smoke(tmp_path: Path) -> None:
    """Every system in its own worker process, the JSON contract of issue 17."""
    import train_step

    out_file = tmp_path / "train_step.json"
    out = train_step.main([
        "--size", "tiny", "--data", "synthetic", "--batch", "4", "--warmup", "0", "--steps",
        "1", "--dropout", "0", "--systems", "a,a16,b,c,d,e,e16", "--json", str(out_file),
    ])
    systems = out["systems"]
    assert list(systems) == ["a", "a16", "b", "c", "d", "e", "e16"]
    assert set(out["peaks_gflops"]) >= {"float32", "bfloat16", "theoretical_float32"}
    # Training's policy: one row count per step, so one compiled program.
    assert systems["a"]["compiled_programs"] == 1 and len(set(systems["a"]["rows_per_step"])) == 1
    for r in systems.values():
        assert r["examples_per_s"] > 0 and r["real_tokens_per_s"] > 0
        assert 0 < r["mfu"] < 1.5 and r["dtype"] in ("float32", "bfloat16")
        assert r["executed_over_model_flops"] >= 1.0
    # Same initial weights, same pairs, no dropout: the same multi-task loss.
    f32 = [r["first_loss"] for r in systems.values() if r["dtype"] == "float32"]
    np.testing.assert_allclose(f32, f32[0], rtol=1e-4)
    bf16 = [r["first_loss"] for r in systems.values() if r["dtype"] == "bfloat16"]
    np.testing.assert_allclose(bf16, f32[0], rtol=1e-2)
    assert json.loads(out_file.read_text())["systems"].keys() == systems.keys()


def test_packed_torch_loss_equals_ours() -> None:
    """(e): our packed rows in HF T5 with 4-D masks give our loss to 1e-4 (float32)."""
    import train_step
    from workload import load_workload

    args = train_step.parse_args([
        "--size", "tiny", "--data", "synthetic", "--batch", "2", "--dropout", "0",
        "--torch-compile", "off"])
    cfg = train_step.model_config(args)
    work = load_workload(args, 1)
    batch = work.batches[0]
    assert len(work.packed_rows(batch)) < len(batch)  # several pairs share rows
    ours = train_step.build_system(args, "a", cfg, work)
    prepared = ours.prepare(batch)
    ours.compile_all([prepared])
    loss_ours = ours.step(prepared)
    args.hf_dir = str(Path(tempfile.mkdtemp()))
    params = jax.device_get(flax.linen.meta.unbox(init_params(cfg, jax.random.key(args.seed))))
    save_hf_checkpoint(Path(args.hf_dir), cfg, params)
    for key in ("e", "d"):
        s = train_step.build_system(args, key, cfg, work)
        assert abs(s.step(s.prepare(batch)) - loss_ours) <= 1e-4, key


def test_pair_flops_match_xla_cost_analysis() -> None:
    # One pair, no padding: a dense forward executes exactly the counted
    # matmuls (full causal square) plus a few percent of elementwise work.
    cfg = T5Config(vocab_size=512, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4,
                   num_decoder_layers=3, dropout_rate=0.0)
    n, t = 64, 32
    params = init_params(cfg, jax.random.key(0))
    fwd = jax.jit(lambda p, a, b: T5(cfg).apply({"params": p}, a, b))
    cost = fwd.lower(params, jnp.ones((1, n), jnp.int32), jnp.ones((1, t), jnp.int32)).compile()
    analysis = cost.cost_analysis()
    xla = (analysis[0] if isinstance(analysis, list) else analysis)["flops"]
    ours = float(flops.forward_flops(cfg, n, t, causal_full=True))
    assert ours <= xla <= 1.1 * ours, (ours, xla)
    # Model FLOPs never exceed what a padded row of the same size executes.
    assert flops.pair_flops(cfg, [n], [t]) <= flops.row_flops(cfg, n, t)


@pytest.mark.skipif(not (SHARED / "data" / "tinyllm" / "obqa").is_dir(),
                    reason="../shared/data/tinyllm/obqa is absent")
def test_eval_benchmark_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import decode

    out_file = tmp_path / "eval.json"
    monkeypatch.setattr(sys, "argv", [
        "decode.py", "--eval", "--limit", "8", "--layers", "1", "--repeats", "1",
        "--eval-batch", "8", "--ablate", "--json", str(out_file),
    ])
    decode.main()
    out = json.loads(out_file.read_text())
    assert out["examples"] == 8
    systems = out["systems"]
    assert {"ours", "ours_bf16", "hf_sorted", "hf_sorted_bf16"} <= set(systems)
    assert systems["ours_bf16"]["dtype"] == systems["hf_sorted_bf16"]["dtype"] == "bfloat16"
    assert systems["ours_one_shape"]["metrics"] == systems["ours"]["metrics"]
    # Same weights, greedy: our decode and HF generate agree token for token.
    assert out["identical_predictions"] == 8 and out["predictions_identical"] is True


def test_phase_benchmark_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import decode

    out_file = tmp_path / "phases.json"
    monkeypatch.setattr(sys, "argv", [
        "decode.py", "--phases", "--widths", "8,16", "--new", "4", "--layers", "1",
        "--batch", "2", "--repeats", "1", "--json", str(out_file),
    ])
    decode.main()
    out = json.loads(out_file.read_text())
    assert sorted(out) == ["hf_w16", "hf_w8", "ours_w16", "ours_w8"]
    # Too small to time reliably; the numbers only need to exist.
    assert all(set(v) == {"encoder_s", "step_s"} for v in out.values())
