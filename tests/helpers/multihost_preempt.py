"""One process of a 2-process loopback cluster running the real training loop.

Run by tests/test_preemption_multihost.py: initialises jax.distributed (gloo
CPU collectives), trains configs/tiny.py (one layer, no evaluation) in
`--workdir` for `--steps` steps with a checkpoint every `--checkpoint_every`,
and writes train_and_evaluate's summary to <out>/summary_<process>.json. The
test sends SIGTERM to one of the processes while they train.
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
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--process_id", type=int, required=True)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--checkpoint_every", type=int, default=1000)
    args = ap.parse_args()

    from tinyllm_jax import sharding as shard_lib
    from tinyllm_jax.spec import DistributedSpec

    shard_lib.maybe_initialize_distributed(DistributedSpec(
        initialize="yes", coordinator_address=args.coordinator, num_processes=2,
        process_id=args.process_id))

    from tinyllm_jax.cli import error_boundary
    from tinyllm_jax.train import train_and_evaluate

    sys.path.insert(0, str(REPO / "configs"))
    import tiny

    cfg = tiny.get_config(f"steps={args.steps}")
    cfg.model.num_layers = 1
    cfg.model.num_decoder_layers = 1
    cfg.train.log_every = 1  # process 0 writes metrics.jsonl each step: the test watches it
    cfg.train.eval_every = 0
    cfg.train.checkpoint_every = args.checkpoint_every
    cfg.train.final_eval_split = ""
    cfg.train.async_checkpoints = False
    with error_boundary():
        summary = train_and_evaluate(cfg, args.workdir)
    keep = {k: summary[k] for k in ("status", "step")}
    (Path(args.out) / f"summary_{args.process_id}.json").write_text(json.dumps(keep))


if __name__ == "__main__":
    main()
