"""The train-step benchmark's workload, read and packed by the trainer's own code.

Every system trains on the same batches: `--batch` examples in a seeded
shuffled order, each giving an answer pair and one rationale pair per
teacher. Examples and pairs come from `tinyllm_jax.data.pipeline` with a
data config built from the flags, as training reads them. The packed
systems turn a batch's pairs into rows the way training does: the row shape
is `pipeline.row_lengths` (packed lengths 'auto'), and the rows are the ones
the trainer's `BatchIterator` forms when those pairs are its epoch
(`plan_rows`, first-fit over its seeded pair order).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from flops import pair_flops

from tinyllm_jax.data import pipeline
from tinyllm_jax.data.features import TaskFeature, feature_lengths
from tinyllm_jax.data.iterator import BatchIterator
from tinyllm_jax.data.packing import plan_rows
from tinyllm_jax.models.t5 import T5Config
from tinyllm_jax.spec import DataSpec, data_spec

SHARED = Path(__file__).resolve().parents[2] / "shared"
SYNTHETIC_TEACHERS = ("algebra", "verbal")


@dataclasses.dataclass
class Workload:
    batches: list[list[TaskFeature]]  # the pairs of each step's examples
    all_batches: list[list[TaskFeature]]  # every batch of the split
    teachers: tuple[str, ...]
    source: str
    max_input_len: int
    max_target_len: int
    data_cfg: DataSpec  # the trainer's data spec for this workload
    row_shape: tuple[int, int]  # the trainer's packed row lengths for this split

    @property
    def num_tasks(self) -> int:
        return 1 + len(self.teachers)

    def packed_rows(self, features: Sequence[TaskFeature]) -> list[list[int]]:
        """The trainer's rows (lists of pair indices) of these pairs, at `row_shape`."""
        return trainer_rows(features, *self.row_shape, seed=self.data_cfg.seed)


def trainer_rows(
    features: Sequence[TaskFeature], input_len: int, target_len: int, *, seed: int
) -> list[list[int]]:
    """Rows the trainer's iterator packs from `features` taken as one epoch."""
    it = BatchIterator(features, batch_size=1, input_len=input_len, target_len=target_len,
                       seed=seed, process_index=0, process_count=1)
    return it.epoch_rows(0)


def data_config(args: argparse.Namespace) -> DataSpec:
    """The data spec for the flags: obqa-style TinyLLM data when present, else synthetic."""
    data_root = Path(args.data_root)
    found = (data_root / args.dataset).is_dir()
    if args.data == "obqa" or (args.data == "auto" and found):
        vocab = Path(args.tokenizer) if args.tokenizer else SHARED / "t5-vocab"
        name, teachers = args.dataset, args.teachers
        tokenizer = str(vocab) if vocab.exists() else "byte"
    else:
        name, teachers = "synthetic", ",".join(SYNTHETIC_TEACHERS)
        tokenizer = args.tokenizer or "byte"
    return data_spec({
        "name": name, "data_dir": str(data_root), "teachers": teachers, "tokenizer": tokenizer,
        "max_input_len": args.max_input_len, "max_target_len": args.max_target_len,
        "packing": True, "packed_input_len": 0, "packed_target_len": 0, "seed": args.seed,
    })


def _group(
    features: Sequence[TaskFeature], ids: Sequence[str], size: int
) -> list[list[TaskFeature]]:
    """The pairs of each run of `size` example ids, in id order, whole batches only."""
    by_id: dict[str, list[TaskFeature]] = {}
    for f in features:
        by_id.setdefault(f.example_id, []).append(f)
    out = []
    for start in range(0, len(ids) - size + 1, size):
        out.append([f for i in ids[start : start + size] for f in by_id.get(i, [])])
    return out


def load_workload(args: argparse.Namespace, num_batches: int) -> Workload:
    """Batches of `args.batch` examples in a fixed shuffled order (`args.seed`)."""
    data_cfg = data_config(args)
    examples, _ = pipeline.load_examples(data_cfg, "train")
    tokenizer = pipeline.tokenizer_for(data_cfg)
    teachers = data_cfg.teachers
    if data_cfg.name == "synthetic":
        source = (f"synthetic train (../shared absent or --data synthetic), teachers "
                  f"{','.join(teachers)}")
    else:
        source = f"{args.dataset} train ({args.data_root}), teachers {','.join(teachers)}"
    source += f", tokenizer {type(tokenizer).__name__}"
    # In split order, as training builds them: the row shape search samples
    # pairs by position, so this is the shape training picks.
    features, _ = pipeline.build_features(data_cfg, examples, tokenizer)
    row_shape = pipeline.row_lengths(data_cfg, features)
    order = np.random.default_rng(args.seed).permutation(len(examples))
    all_batches = _group(features, [examples[i].id for i in order], args.batch)
    if len(all_batches) < num_batches:
        raise SystemExit(f"{source} has {len(all_batches)} batches of {args.batch}; "
                         f"{num_batches} needed (lower --warmup / --steps)")
    return Workload(all_batches[:num_batches], all_batches, teachers, source, args.max_input_len,
                    args.max_target_len, data_cfg, row_shape)


def packing_report(work: Workload) -> dict[str, float]:
    """Mean rows per batch of the split at the trainer's row shape, by pair order.

    `trainer` is what the packed systems run; the single orders and the best
    of them per batch show what first-fit's order leaves on the table, and
    the lower bound is max(ceil(inputs / Li), ceil(targets / Lt)).
    """
    input_len, target_len = work.row_shape

    def rows_by(order_of: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> list[int]:
        counts = []
        for b in work.all_batches:
            li, lt = feature_lengths(b)
            o = order_of(li, lt)
            counts.append(len(plan_rows(li[o], lt[o], input_len, target_len)))
        return counts

    counts = {
        "trainer": [len(work.packed_rows(b)) for b in work.all_batches],
        "target_sorted": rows_by(lambda li, lt: np.argsort(-lt, kind="stable")),
        "input_sorted": rows_by(lambda li, lt: np.argsort(-li, kind="stable")),
        "given_order": rows_by(lambda li, lt: np.arange(len(li))),
    }
    out = {k: float(np.mean(v)) for k, v in counts.items()}
    out["best_of_orders"] = float(np.mean(np.min(list(counts.values()), axis=0)))
    bounds = []
    for b in work.all_batches:
        li, lt = feature_lengths(b)
        bounds.append(max(-(-int(li.sum()) // input_len), -(-int(lt.sum()) // target_len)))
    out["lower_bound"] = float(np.mean(bounds))
    return out


def batch_stats(cfg: T5Config, features: Sequence[TaskFeature]) -> dict[str, float]:
    li, lt = feature_lengths(features)
    return {"real_tokens": float(li.sum() + lt.sum()), "model_flops": pair_flops(cfg, li, lt)}
