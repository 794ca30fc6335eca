"""Systems (b) and (c): the PyTorch train steps of torch_reference.py, as timed systems.

Both load the benchmark's initial weights from an HF checkpoint written by
our exporter, so every system starts from the same parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_reference as ref
import transformers
from flops import row_flops
from system import System

from tinyllm_jax.data.features import TaskFeature
from tinyllm_jax.models.t5 import T5Config

# (flag letter, torch_reference batch kind, system name)
TORCH_SYSTEMS = (("b", "padded", "(b) torch padded per-task"),
                 ("c", "dynamic", "(c) torch dynamic concat"))


def limit_malloc_caching() -> None:
    """Make glibc return large freed blocks to the OS at once.

    The PyTorch steps allocate and free multi-GB autograd graphs; with glibc's
    adaptive mmap threshold those blocks end up in the heap and stay resident
    after the step, so five systems in one process ran a 24 GB machine out of
    memory. A fixed 1 MiB mmap threshold (M_MMAP_THRESHOLD = -3) serves every
    large block by mmap, released by free.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)


class TorchSystem(System):
    def __init__(self, name: str, kind: str, hf_dir: Path, coefs: np.ndarray,
                 args: argparse.Namespace, num_tasks: int, threads: int, cfg: T5Config) -> None:
        self.name, self.kind, self.num_tasks, self.args = name, kind, num_tasks, args
        self.threads = threads  # torch intra-op threads while this system steps
        self.cfg = cfg  # for the FLOPs its padded rows execute
        torch.manual_seed(args.seed)
        model = transformers.T5ForConditionalGeneration.from_pretrained(
            hf_dir, dtype=torch.float32)
        cls = ref.PaddedPerTaskStep if kind == "padded" else ref.DynamicConcatStep
        self.runner = cls(model, coefs, lr=args.lr, weight_decay=args.weight_decay,
                          clip_norm=args.clip_norm)

    def executed_flops(self, features: Sequence[TaskFeature]) -> float:
        if self.kind == "padded":
            rows = sum(1 for t in range(self.num_tasks) for f in features if f.task_id == t)
            return rows * row_flops(self.cfg, self.args.max_input_len, self.args.max_target_len)
        li = max(len(f.inputs) for f in features)
        lt = max(len(f.targets) for f in features)
        return len(features) * row_flops(self.cfg, li, lt)

    def prepare(self, features: Sequence[TaskFeature]) -> Any:
        if self.kind == "padded":
            return ref.make_padded_per_task_batch(
                features, self.num_tasks, self.args.max_input_len, self.args.max_target_len)
        return ref.make_dynamic_concat_batch(features)

    def step(self, prepared: Any) -> float:
        torch.set_num_threads(self.threads)
        return self.runner(prepared)

    def after_step(self) -> None:
        # glibc keeps freed autograd buffers mapped; hand them back so the
        # other systems in this process do not run short of memory.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def torch_systems(
    args: argparse.Namespace, cfg: T5Config, hf_dir: Path, coefs: np.ndarray, num_tasks: int,
) -> list[TorchSystem]:
    """(b) and / or (c) as `args.systems` asks, once per `--torch-threads` setting."""
    wanted = set(args.systems.split(","))
    default = torch.get_num_threads()
    counts = [int(x) or default for x in str(args.torch_threads).split(",")]
    systems = []
    for key, kind, name in TORCH_SYSTEMS:
        if key not in wanted:
            continue
        for n in counts:
            label = name if len(counts) == 1 else f"{name} {n}t"
            systems.append(TorchSystem(label, kind, hf_dir, coefs, args, num_tasks, n, cfg))
    return systems
