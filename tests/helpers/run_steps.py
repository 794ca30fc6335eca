"""Run a few train steps of configs/tiny.py on a given mesh; print JSON results.

Used by tests in subprocesses, because the number of (fake) devices and the
distributed runtime are fixed when JAX starts:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/helpers/run_steps.py --mesh=2,2,2 --steps=3 --out=res.json
    python tests/helpers/run_steps.py --mesh=-1,1,1 --coordinator=127.0.0.1:PORT \
        --num-processes=2 --process-id=0 --workdir=W ...

It saves a checkpoint of the final state to --workdir when given, and with
--restore-from restores one (into this process's mesh) instead of training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh", default="-1,1,1")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--config-arg", default="")
    ap.add_argument("--override", action="append", default=[], help="key=value on the config")
    ap.add_argument("--coordinator", default="")
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--workdir", default="")
    ap.add_argument("--restore-from", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import jax

    if args.coordinator:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator, num_processes=args.num_processes,
            process_id=args.process_id,
        )
    import numpy as np
    from jax.experimental import multihost_utils

    from tinyllm_jax import setup as setup_lib
    from tinyllm_jax.checkpoint import Checkpointer
    from tinyllm_jax.configs import load_config_file
    from tinyllm_jax.data import pipeline
    from tinyllm_jax.data.bundle import load_data
    from tinyllm_jax.spec import parse

    cfg = load_config_file(REPO / "configs" / "tiny.py", args.config_arg or None)
    d, f, t = (int(x) for x in args.mesh.split(","))
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = d, f, t
    for item in args.override:
        key, value = item.split("=", 1)
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value == "True"

    spec = parse(cfg)
    mesh = setup_lib.run_mesh(spec)
    built = setup_lib.build(spec, mesh, total_steps=spec.train.steps)
    bundle = load_data(spec.data, (), model_vocab=built.model.vocab_size)
    it = pipeline.make_iterator(spec.data, bundle.train_features, batch_size=spec.train.batch_size)
    abstract = built.abstract_state
    meta = setup_lib.run_meta(spec, built.model, bundle.tokenizer.vocab_size)
    result: dict = {"process_index": jax.process_index(), "devices": jax.device_count()}
    if args.restore_from:
        ckpt = Checkpointer(args.restore_from, async_save=False)
        state, data_state, _ = ckpt.restore(ckpt.latest_step(), abstract, expected_meta=meta)
        ckpt.close()
        result["data_state"] = data_state
    else:
        state = setup_lib.create_state(built)
        losses = []
        first = next(it)
        step, _ = setup_lib.compile_step(built, setup_lib.device_batch(built, first), state)
        batch = first
        for i in range(args.steps):
            if i:
                batch = next(it)
            state, m = step(state, setup_lib.device_batch(built, batch))
            losses.append(float(m["loss"]))
        result["losses"] = losses
        if args.workdir:
            ckpt = Checkpointer(args.workdir, async_save=True)
            ckpt.save(args.steps, state, it.get_state(), meta, force=True)
            ckpt.wait()
            ckpt.close()
    # Shard shapes of a few fsdp-sharded parameters, as seen on this process.
    shards = {}
    flat = jax.tree_util.tree_leaves_with_path(state.params)
    for path, leaf in flat:
        name = jax.tree_util.keystr(path)
        shards[name] = {
            "global": list(leaf.shape),
            "local": list(leaf.addressable_shards[0].data.shape),
            "spec": str(leaf.sharding.spec),
        }
    result["shards"] = shards
    params = multihost_utils.process_allgather(state.params, tiled=True)
    checksum = float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(params)))
    result["param_checksum"] = checksum
    if jax.process_index() == 0:
        np.savez(args.out + ".params.npz", **{
            jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(params)
        })
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
