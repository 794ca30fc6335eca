"""FSDP training across processes, checkpoint, and resume on another topology.

Run by tests/test_multihost.py; each role is a fresh process whose device
count comes from XLA_FLAGS (--xla_force_host_platform_device_count).

  --role=train   one of `--num_processes` processes on a loopback cluster
                 (gloo collectives). Trains `--steps` steps with the mesh
                 data=1, fsdp=all devices, tensor=1, each host feeding its own
                 rows; saves a checkpoint collectively after step `--save_at`
                 and keeps training. Process 0 writes the full state gathered
                 from all hosts at `--save_at` and at the end.
  --role=resume  a single process: restores the latest checkpoint onto its own
                 mesh (same fsdp size), writes the restored state, trains the
                 remaining steps and writes the final state.

States go to <out>/<role>_step<N>.npz, one array per leaf path; losses to
<out>/<role>_losses.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--role", choices=("train", "resume"), required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--save_at", type=int, default=3)
    ap.add_argument("--coordinator", default="")
    ap.add_argument("--num_processes", type=int, default=1)
    ap.add_argument("--process_id", type=int, default=0)
    return ap.parse_args()


def main() -> None:
    args = parse()

    from tinyllm_jax import sharding as shard_lib
    from tinyllm_jax.spec import DistributedSpec

    if args.role == "train":
        dist = DistributedSpec(
            initialize="yes", coordinator_address=args.coordinator,
            num_processes=args.num_processes, process_id=args.process_id,
        )
        shard_lib.maybe_initialize_distributed(dist)

    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from tinyllm_jax import checkpoint as ckpt_lib
    from tinyllm_jax import setup as setup_lib
    from tinyllm_jax.data import pipeline
    from tinyllm_jax.data.bundle import load_data
    from tinyllm_jax.spec import parse as parse_spec

    sys.path.insert(0, str(REPO / "configs"))
    import tiny

    cfg = tiny.get_config()
    cfg.model.num_layers = 1
    cfg.model.num_decoder_layers = 1
    out = Path(args.out)
    is_main = jax.process_index() == 0

    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = 1, -1, 1
    spec = parse_spec(cfg)
    mesh = setup_lib.run_mesh(spec)
    built = setup_lib.build(spec, mesh, total_steps=spec.train.steps)
    bundle = load_data(spec.data, (), model_vocab=built.model.vocab_size)
    # Each process keeps its own rows of every global batch.
    it = pipeline.make_iterator(spec.data, bundle.train_features, batch_size=spec.train.batch_size)
    abstract = built.abstract_state
    meta = setup_lib.run_meta(spec, built.model, bundle.tokenizer.vocab_size)
    ckpt = ckpt_lib.Checkpointer(args.workdir, keep_best=False)

    def dump(state, name: str) -> None:
        full = multihost_utils.process_allgather(state, tiled=True)
        if is_main:
            leaves = jax.tree_util.tree_flatten_with_path(full)[0]
            np.savez(out / f"{name}.npz", **{jax.tree_util.keystr(p): np.asarray(x)
                                             for p, x in leaves})

    if args.role == "train":
        state = setup_lib.create_state(built)
        start = 0
    else:
        start = ckpt.latest_step()
        state, data_state, _ = ckpt.restore(start, abstract, expected_meta=meta)
        it.set_state(data_state)
        dump(state, f"resume_step{start}")

    losses = {}
    step_fn = None
    for step in range(start + 1, args.steps + 1):
        local = next(it)
        if local["encoder_input_tokens"].shape[0] != it.local_batch_size:
            raise AssertionError("iterator did not return this host's share of the batch")
        batch = setup_lib.device_batch(built, local)
        if step_fn is None:
            step_fn, _ = setup_lib.compile_step(built, batch, state)
        state, metrics = step_fn(state, batch)
        losses[step] = float(metrics["loss"])
        if args.role == "train" and step == args.save_at:
            ckpt.save(step, state, it.get_state(), meta)
            ckpt.wait()
            dump(state, f"train_step{step}")
    ckpt.close()
    dump(state, f"{args.role}_step{args.steps}")
    if is_main:
        (out / f"{args.role}_losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main()
