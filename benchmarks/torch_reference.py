"""PyTorch train steps that the JAX step is measured against (benchmarks/train_step.py).

Both train HF `T5ForConditionalGeneration` on the same multi-task objective
as `tinyllm_jax.train_step`: loss = sum_t coef_t * CE_t, where CE_t is the
mean token cross-entropy of task t (answer, then one rationale task per
teacher) over that task's real target tokens in the batch; then global-norm
clipping and AdamW.

- `PaddedPerTaskStep`, system (b), the published recipe (distilling
  step-by-step / TinyLLM with HF transformers): every input padded to the
  maximum input length and every target to the maximum target length, one
  forward per task, HF's own label loss (-100 = ignore) per forward, the
  task losses summed with their weights. The recipe calls backward once on
  the summed loss, which keeps every task's graph alive: at batch 16 and
  512 / 256 tokens that is ~20 GB for FLAN-T5-small, more than the
  benchmark machine has. Here each task's weighted loss is backpropagated
  right after its forward, accumulating into the same .grad: the gradient
  of a sum is the sum of gradients, so update and FLOPs are the same and
  only the peak memory drops to one task's graph.
- `DynamicConcatStep`, system (c), a strong eager baseline: all pairs of the
  batch in one forward, padded only to the longest input and target present
  in this batch, per-task CE from per-token losses.
- `FaithfulRecipeStep`, system (d), the published distilling step-by-step
  trainer as it runs: its `TaskPrefixDataCollator` (a `DataCollatorForSeq2Seq`)
  pads each task's batch to that batch's own longest input and target (labels
  with -100), `TaskPrefixTrainer.compute_loss` runs one forward per task with
  HF's label loss and sums the weighted losses, one backward, then the HF
  Trainer's clipping and its default optimizer: `TrainingArguments.optim`
  defaults to "adamw_torch_fused" with torch >= 2.8, i.e. torch AdamW with
  fused=True, betas (0.9, 0.999), eps 1e-8 (built here directly: the HF
  Trainer itself needs `accelerate`, which this environment lacks).

Batches are built on the host before timing (`make_*_batch`), as a data
loader would, so a step times only model, loss and optimizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# HF's ignore index for label positions that carry no loss.
IGNORE = -100


def _pad(rows: Sequence[np.ndarray], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.from_numpy(np.asarray(r, dtype=np.int64))
    return out


def _encode(
    features: Sequence[Any], input_len: int, target_len: int
) -> dict[str, torch.Tensor]:
    inputs = [f.inputs for f in features]
    ids = _pad(inputs, input_len, 0)
    mask = _pad([np.ones(len(r), np.int64) for r in inputs], input_len, 0)
    labels = _pad([f.targets for f in features], target_len, IGNORE)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def make_padded_per_task_batch(
    features: Sequence[Any], num_tasks: int, max_input_len: int, max_target_len: int
) -> list[dict[str, torch.Tensor] | None]:
    """One padded-to-the-limits batch per task (None where a task has no pair)."""
    out: list[dict[str, torch.Tensor] | None] = []
    for t in range(num_tasks):
        mine = [f for f in features if f.task_id == t]
        out.append(_encode(mine, max_input_len, max_target_len) if mine else None)
    return out


def make_dynamic_concat_batch(features: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Every pair in one batch, padded to this batch's longest input / target."""
    batch = _encode(
        features,
        max(len(f.inputs) for f in features),
        max(len(f.targets) for f in features),
    )
    batch["task_ids"] = torch.tensor([f.task_id for f in features], dtype=torch.long)
    return batch


def make_faithful_batch(
    features: Sequence[Any], num_tasks: int
) -> list[dict[str, torch.Tensor] | None]:
    """One batch per task, each padded to its own longest input / target (None if empty)."""
    out: list[dict[str, torch.Tensor] | None] = []
    for t in range(num_tasks):
        mine = [f for f in features if f.task_id == t]
        out.append(_encode(mine, max(len(f.inputs) for f in mine),
                           max(len(f.targets) for f in mine)) if mine else None)
    return out


class _Step:
    """Model + AdamW + clipping; `__call__(batch) -> loss` does one update."""

    def __init__(
        self, model: Any, coefs: Sequence[float], *, lr: float, weight_decay: float,
        clip_norm: float,
    ) -> None:
        self.model = model.train()
        self.coefs = [float(c) for c in coefs]
        self.clip_norm = clip_norm
        # foreach=True: the multi-tensor AdamW, PyTorch's fastest eager optimizer path.
        self.opt = torch.optim.AdamW(
            model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay,
            foreach=True,
        )

    def _update(self, loss: torch.Tensor, *, backward: bool = True) -> float:
        if backward:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        if self.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.opt.step()
        return float(loss.detach())


class PaddedPerTaskStep(_Step):
    """System (b): one padded forward per task, HF label loss each, summed."""

    def __call__(self, batches: Sequence[dict[str, torch.Tensor] | None]) -> float:
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for coef, batch in zip(self.coefs, batches):
            if batch is None:
                continue
            loss = coef * self.model(**batch).loss
            loss.backward()  # frees this task's graph before the next forward
            total += loss.detach()
        return self._update(total, backward=False)


class DynamicConcatStep(_Step):
    """System (c): all tasks in one dynamically padded forward."""

    def __call__(self, batch: dict[str, torch.Tensor]) -> float:
        labels = batch["labels"]
        # Same decoder inputs HF builds from `labels`, without HF's own loss pass.
        logits = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            decoder_input_ids=self.model._shift_right(labels),
        ).logits
        nll = F.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="none"
        ).view_as(labels)
        real = (labels != IGNORE).float()
        loss = torch.zeros(())
        for t, coef in enumerate(self.coefs):
            rows = batch["task_ids"] == t
            count = real[rows].sum()
            if count > 0:
                loss = loss + coef * nll[rows].sum() / count
        return self._update(loss)


class FaithfulRecipeStep(_Step):
    """System (d): one forward per task on its own padded batch, HF losses summed."""

    def __init__(self, model: Any, coefs: Sequence[float], *, lr: float, weight_decay: float,
                 clip_norm: float) -> None:
        super().__init__(model, coefs, lr=lr, weight_decay=weight_decay, clip_norm=clip_norm)
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=weight_decay, fused=True)

    def __call__(self, batches: Sequence[dict[str, torch.Tensor] | None]) -> float:
        loss = torch.zeros(())
        for coef, batch in zip(self.coefs, batches):
            if batch is not None:
                loss = loss + coef * self.model(**batch).loss
        return self._update(loss)
