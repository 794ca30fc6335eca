"""Systems (b)-(e16): the PyTorch train steps, as timed systems.

All load the benchmark's initial weights from an HF checkpoint written by
our exporter, so every system starts from the same parameters. Each runs in
its own process (train_step.py), with torch's intra-op threads set to the
machine's cores, and no allocator tuning: a process holds only its own system.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_packed
import torch_reference as ref
import transformers
from flops import row_flops
from system import System
from workload import Workload

from tinyllm_jax.data.features import TaskFeature
from tinyllm_jax.data.packing import materialize_rows
from tinyllm_jax.models.t5 import T5Config

# flag -> (kind, system name)
TORCH_SYSTEMS = {
    "b": ("padded", "(b) torch padded to the limits, per task"),
    "c": ("dynamic", "(c) torch dynamic padding, tasks concatenated"),
    "d": ("faithful", "(d) torch faithful recipe: per-task dynamic padding"),
    "e": ("packed", "(e) torch packed rows, compiled, fused AdamW"),
    "e16": ("packed16", "(e16) torch packed rows, compiled, bf16 autocast"),
}


class TorchSystem(System):
    def __init__(self, key: str, hf_dir: Path, coefs: np.ndarray, args: argparse.Namespace,
                 cfg: T5Config, work: Workload) -> None:
        self.kind, self.name = TORCH_SYSTEMS[key]
        self.num_tasks, self.args, self.cfg, self.work = len(coefs), args, cfg, work
        self.dtype = "bfloat16" if self.kind == "packed16" else "float32"
        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(args.seed)
        model = transformers.T5ForConditionalGeneration.from_pretrained(
            hf_dir, dtype=torch.float32)
        kw = {"lr": args.lr, "weight_decay": args.weight_decay, "clip_norm": args.clip_norm}
        if self.kind.startswith("packed"):
            self.row_shape = (0, *work.row_shape)
            self.runner: Any = torch_packed.PackedStep(
                model, coefs, bf16=self.kind == "packed16", compile=args.torch_compile, **kw)
        else:
            cls = {"padded": ref.PaddedPerTaskStep, "dynamic": ref.DynamicConcatStep,
                   "faithful": ref.FaithfulRecipeStep}[self.kind]
            self.runner = cls(model, coefs, **kw)

    def executed_flops(self, features: Sequence[TaskFeature]) -> float:
        if self.kind == "padded":
            return len(features) * row_flops(self.cfg, self.args.max_input_len,
                                             self.args.max_target_len)
        if self.kind == "dynamic":
            li = max(len(f.inputs) for f in features)
            lt = max(len(f.targets) for f in features)
            return len(features) * row_flops(self.cfg, li, lt)
        if self.kind == "faithful":
            total = 0.0
            for t in range(self.num_tasks):
                mine = [f for f in features if f.task_id == t]
                if mine:
                    li, lt = max(len(f.inputs) for f in mine), max(len(f.targets) for f in mine)
                    total += len(mine) * row_flops(self.cfg, li, lt)
            return total
        return len(self.work.packed_rows(features)) * row_flops(self.cfg, *self.work.row_shape)

    def prepare(self, features: Sequence[TaskFeature]) -> Any:
        if self.kind == "padded":
            return ref.make_padded_per_task_batch(
                features, self.num_tasks, self.args.max_input_len, self.args.max_target_len)
        if self.kind == "dynamic":
            return ref.make_dynamic_concat_batch(features)
        if self.kind == "faithful":
            return ref.make_faithful_batch(features, self.num_tasks)
        rows = materialize_rows(features, self.work.packed_rows(features), *self.work.row_shape)
        return torch_packed.packed_batch(rows)

    def rows_of(self, prepared: Any) -> int | None:
        return int(prepared["input_ids"].shape[0]) if self.kind.startswith("packed") else None

    def compile_all(self, prepared: Sequence[Any]) -> float:
        if not self.kind.startswith("packed") or not self.args.torch_compile:
            return 0.0
        t0 = time.perf_counter()
        seen = set()
        for p in prepared:
            if self.rows_of(p) not in seen:
                seen.add(self.rows_of(p))
                self.runner.warm(p)
        return time.perf_counter() - t0

    def step(self, prepared: Any) -> float:
        return self.runner(prepared)
