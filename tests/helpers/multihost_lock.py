"""One process of a loopback cluster claiming a training workdir.

Run by tests/test_multihost_lock.py. Each process calls
`train.claim_workdir` (process 0 checks and locks, every process learns the
outcome), writes what it saw to <out>/claim_<process>.json, waits at a
barrier so the lock is observed while held, then releases it. A refused
claim ends as `error: ...` and exit status 2 on every process.
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
    ap.add_argument("--num_processes", type=int, default=2)
    ap.add_argument("--process_id", type=int, required=True)
    args = ap.parse_args()

    from tinyllm_jax import sharding as shard_lib
    from tinyllm_jax.spec import DistributedSpec

    shard_lib.maybe_initialize_distributed(DistributedSpec(
        initialize="yes", coordinator_address=args.coordinator,
        num_processes=args.num_processes, process_id=args.process_id))

    from jax.experimental import multihost_utils

    from tinyllm_jax import train
    from tinyllm_jax.cli import error_boundary
    from tinyllm_jax.dirlock import LOCK_NAME
    from tinyllm_jax.spec import parse

    sys.path.insert(0, str(REPO / "configs"))
    import tiny

    with error_boundary():
        lock = train.claim_workdir(parse(tiny.get_config()), args.workdir)
        lock_file = Path(args.workdir) / LOCK_NAME
        seen = {"holds_lock": lock is not None and lock.held,
                "lock": json.loads(lock_file.read_text()) if lock_file.exists() else None}
        multihost_utils.sync_global_devices("lock observed")
        (Path(args.out) / f"claim_{args.process_id}.json").write_text(json.dumps(seen))
        multihost_utils.sync_global_devices("claims written")
        if lock is not None:
            lock.release()


if __name__ == "__main__":
    main()
