"""Train configs/tiny.py for a few steps on several meshes; print JSON results.

Run in a fresh process so the fake device count takes effect:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/helpers/sharding_equivalence.py --meshes 1,1,1 8,1,1 1,8,1 1,4,2

Every mesh initialises its state directly sharded from the same seed
(`setup.create_state`) and trains on the same batches from the real data
pipeline. Per mesh it reports the step losses, the bytes of parameters and
optimizer state that each device holds (read from the arrays' shards), and
memory.py's per-device figures for the same layout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import ml_collections  # noqa: E402

from tinyllm_jax import setup as setup_lib  # noqa: E402
from tinyllm_jax import sharding as shard_lib  # noqa: E402
from tinyllm_jax.data import pipeline  # noqa: E402
from tinyllm_jax.data.bundle import load_data  # noqa: E402
from tinyllm_jax.spec import MeshSpec, RunSpec, parse  # noqa: E402
from tinyllm_jax.train_step import STEP_KEYS  # noqa: E402


def tiny_config(layers: int) -> ml_collections.ConfigDict:
    sys.path.insert(0, str(REPO / "configs"))
    import tiny

    cfg = tiny.get_config()
    cfg.model.num_layers = layers
    cfg.model.num_decoder_layers = layers
    return cfg


def device_bytes(tree, device) -> int:
    return sum(
        s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards
        if s.device == device
    )


def run_mesh(spec: RunSpec, dims, batches) -> dict:
    t0 = time.perf_counter()
    count = dims[0] * dims[1] * dims[2]
    mesh = shard_lib.make_mesh(MeshSpec(*dims), jax.devices()[:count])
    built = setup_lib.build(spec, mesh, total_steps=spec.train.steps)
    est = setup_lib.memory_report(
        built, batch_size=spec.train.batch_size,
        input_len=batches[0]["encoder_input_tokens"].shape[1],
        target_len=batches[0]["decoder_input_tokens"].shape[1], print_table=False,
    )
    state = setup_lib.create_state(built)
    per_device = {
        str(d.id): {"params": device_bytes(state.params, d), "opt": device_bytes(state.opt_state, d)}
        for d in mesh.devices.flat
    }
    totals = {
        "params": sum(x.nbytes for x in jax.tree.leaves(state.params)),
        "opt": sum(x.nbytes for x in jax.tree.leaves(state.opt_state)),
    }
    losses = []
    step = None
    for b in batches:
        batch = setup_lib.device_batch(built, b)
        if step is None:
            step, _ = setup_lib.compile_step(built, batch, state)
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return {
        "mesh": list(dims), "losses": losses, "per_device": per_device, "totals": totals,
        "estimate": {"params": est.params, "opt": est.optimizer},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meshes", nargs="+", required=True, help="data,fsdp,tensor per mesh")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    spec = parse(tiny_config(args.layers))
    bundle = load_data(spec.data, (), model_vocab=spec.model.vocab_size)
    it = pipeline.make_iterator(spec.data, bundle.train_features, batch_size=spec.train.batch_size)
    batches = [{k: v for k, v in next(it).items() if k in STEP_KEYS} for _ in range(args.steps)]
    results = [run_mesh(spec, tuple(int(x) for x in m.split(",")), batches) for m in args.meshes]
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
