"""System (e), the strongest PyTorch train step we could build: our packed rows in HF T5.

It trains on exactly the rows our trainer builds (the batch's pairs packed
by the trainer's own packer, `tinyllm_jax.data.packing.materialize_rows`),
fed to HF `T5ForConditionalGeneration` with block-diagonal 4-D additive
attention masks: an encoder token sees its own segment, a decoder token its
own segment's earlier tokens and its own segment's encoder tokens. Relative
positions are per segment without patching HF: T5's relative position bias
depends only on key - query, and inside a segment the in-row offsets equal
the in-segment ones; across segments the mask removes the pair. The loss is
ours: per-task token CE normalised over the task's real tokens, weighted
and summed. The forward + loss is `torch.compile`d (backward through
AOTAutograd), the optimizer is fused AdamW, clipping uses foreach kernels;
with `bf16=True` the forward runs under CPU bf16 autocast (float32 master
weights and optimizer state, float32 loss).

The loss on one batch equals ours to 1e-4 in float32 (tests/test_benchmarks.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# Additive mask value: large enough to zero a softmax entry, finite so a fully
# masked pad query stays finite (its loss weight is 0 anyway).
MASKED = -1e9


def packed_batch(rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Torch tensors and the three 4-D masks of a materialised packed batch (host side)."""
    enc_seg = torch.from_numpy(rows["encoder_segment_ids"].astype(np.int64))
    dec_seg = torch.from_numpy(rows["decoder_segment_ids"].astype(np.int64))
    t = dec_seg.shape[1]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))

    def additive(keep: torch.Tensor) -> torch.Tensor:
        return torch.where(keep, 0.0, MASKED).to(torch.float32)[:, None]

    enc_keep = (enc_seg[:, :, None] == enc_seg[:, None, :]) & (enc_seg[:, None, :] > 0)
    dec_keep = (dec_seg[:, :, None] == dec_seg[:, None, :]) & causal[None]
    cross_keep = (dec_seg[:, :, None] == enc_seg[:, None, :]) & (enc_seg[:, None, :] > 0)
    return {
        "input_ids": torch.from_numpy(rows["encoder_input_tokens"].astype(np.int64)),
        "decoder_input_ids": torch.from_numpy(rows["decoder_input_tokens"].astype(np.int64)),
        "targets": torch.from_numpy(rows["decoder_target_tokens"].astype(np.int64)),
        "weights": torch.from_numpy(rows["decoder_loss_weights"].astype(np.float32)),
        "task_ids": torch.from_numpy(rows["decoder_task_ids"].astype(np.int64)),
        "encoder_mask": additive(enc_keep),
        "decoder_mask": additive(dec_keep),
        "cross_mask": additive(cross_keep),
    }


class PackedLoss(torch.nn.Module):
    """Our multi-task loss of HF T5 on packed rows (the part that is compiled)."""

    def __init__(self, model: Any, coefs: Sequence[float], bf16: bool) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("coefs", torch.tensor([float(c) for c in coefs]))
        self.bf16 = bf16

    def forward(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        m = self.model
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            enc = m.encoder(input_ids=b["input_ids"], attention_mask=b["encoder_mask"])[0]
            h = m.decoder(input_ids=b["decoder_input_ids"], attention_mask=b["decoder_mask"],
                          encoder_hidden_states=enc, encoder_attention_mask=b["cross_mask"])[0]
            if m.config.scale_decoder_outputs:
                h = h * (m.model_dim**-0.5)
            logits = m.lm_head(h)
        nll = F.cross_entropy(logits.float().flatten(0, 1), b["targets"].flatten(),
                              reduction="none").view_as(b["weights"])
        onehot = F.one_hot(b["task_ids"], len(self.coefs)).float() * b["weights"][..., None]
        ce = torch.einsum("bl,blt->t", nll, onehot)
        count = onehot.sum(dim=(0, 1)).clamp_min(1.0)
        return (self.coefs * ce / count).sum()


class PackedStep:
    """System (e) / (e16): compiled forward + loss, backward, clipping, fused AdamW."""

    def __init__(self, model: Any, coefs: Sequence[float], *, lr: float, weight_decay: float,
                 clip_norm: float, bf16: bool, compile: bool) -> None:
        self.model = model.train()
        self.loss = PackedLoss(model, coefs, bf16)
        self.loss_fn = torch.compile(self.loss) if compile else self.loss
        self.clip_norm = clip_norm
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=weight_decay, fused=True)

    def warm(self, batch: dict[str, torch.Tensor]) -> None:
        """Compile for this batch's shape: forward and backward, no update."""
        self.loss_fn(batch).backward()
        self.opt.zero_grad(set_to_none=True)

    def __call__(self, batch: dict[str, torch.Tensor]) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(batch)
        loss.backward()
        if self.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm, foreach=True)
        self.opt.step()
        return float(loss.detach())
