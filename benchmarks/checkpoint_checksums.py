"""What the per-array checksums cost on a FLAN-T5-small-sized train state.

    python benchmarks/checkpoint_checksums.py                # FLAN-T5-small, 3 repeats
    python benchmarks/checkpoint_checksums.py --size=base --repeats=5 --json=out.json

The state is the model's parameters plus two Adam moments of the same
shapes (random values, float32) and a step counter, on the default device.
Reported, each the median of --repeats after one warm-up (which also shows
the one-time compile of the checksum program):

- checksum_s: computing the checksums of the whole state (what a save adds);
- save_s / save_plain_s: a synchronous save with and without them;
- save_blocking_s / save_blocking_plain_s: the part of an asynchronous save
  that training waits for (what it costs a training run);
- restore_s / restore_plain_s: restoring the state with and without the
  comparison (what a resume or an eval adds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import linen as nn

from tinyllm_jax.array_checksums import tree_checksums
from tinyllm_jax.checkpoint import Checkpointer
from tinyllm_jax.configs import MODEL_SIZES
from tinyllm_jax.models.t5 import abstract_params

META = {"model": {}, "teachers": [], "tokenizer": "t5", "dataset": "benchmark",
        "tokenizer_vocab_size": 32100}
DATA = {"seed": 0, "epoch": 0, "position": 0}


def _state(size: str) -> dict[str, Any]:
    shapes = nn.meta.unbox(abstract_params(MODEL_SIZES[size]))
    leaves, tree = jax.tree.flatten(shapes)
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 3 * len(leaves)))

    def fill() -> Any:
        return jax.tree.unflatten(tree, [jax.random.normal(next(keys), x.shape, jnp.float32)
                                         for x in leaves])

    return {"params": fill(), "opt_state": {"mu": fill(), "nu": fill()},
            "step": jnp.zeros((), jnp.int32)}


def _median(run: Callable[[int], float], repeats: int) -> tuple[float, float]:
    """(first call, median of the next `repeats`) in seconds."""
    first = run(0)
    return first, statistics.median(run(i + 1) for i in range(repeats))


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def _save_and_restore(ckpt: Checkpointer, state: Any, abstract: Any, repeats: int,
                      async_save: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    step = iter(range(1, 10_000))

    with_checksums: list[int] = []

    def save(_: int) -> float:
        with_checksums.append(next(step))
        seconds = _timed(lambda: ckpt.save(with_checksums[-1], state, DATA, META, force=True))
        ckpt.wait()  # the write itself runs in the background in async mode
        return seconds

    def save_plain(_: int) -> float:
        items = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                   data=ocp.args.JsonSave(DATA), meta=ocp.args.JsonSave(META))
        seconds = _timed(lambda: ckpt.manager.save(next(step), args=items, force=True))
        ckpt.wait()
        return seconds

    name = "save_blocking" if async_save else "save"
    out[f"{name}_first_s"], out[f"{name}_s"] = _median(save, repeats)
    _, out[f"{name}_plain_s"] = _median(save_plain, repeats)
    if not async_save:
        latest = with_checksums[-1]  # restore() compares its arrays with the checksums
        _, out["restore_s"] = _median(
            lambda _: _timed(lambda: ckpt.restore(latest, abstract)[0]), repeats)
        _, out["restore_plain_s"] = _median(lambda _: _timed(lambda: ckpt.manager.restore(
            latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]),
            repeats)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="small", choices=sorted(MODEL_SIZES),
                    help="a student size of tinyllm_jax.configs (small = FLAN-T5-small)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    state = _state(args.size)
    leaves = jax.tree.leaves(state)
    result: dict[str, Any] = {
        "size": args.size, "backend": jax.default_backend(), "arrays": len(leaves),
        "elements": int(sum(x.size for x in leaves)),
        "bytes": int(sum(x.size * x.dtype.itemsize for x in leaves)),
    }
    # First: the first call includes compiling the checksum program.
    first, result["checksum_s"] = _median(lambda _: _timed(lambda: tree_checksums(state)),
                                          args.repeats)
    result["checksum_first_s"] = first
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            state)
    with tempfile.TemporaryDirectory() as root:
        for async_save in (False, True):
            ckpt = Checkpointer(Path(root) / f"async{int(async_save)}", keep=2 * args.repeats + 4,
                                keep_best=False, async_save=async_save)
            result.update(_save_and_restore(ckpt, state, abstract, args.repeats, async_save))
            ckpt.close()
    for name in ("save", "save_blocking", "restore"):
        plain = result[f"{name}_plain_s"]
        result[f"{name}_overhead"] = (result[f"{name}_s"] - plain) / plain
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
