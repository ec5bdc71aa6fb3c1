"""Stagnation: a small update added to a low-precision weight rounds back to the same weight.

:func:`update_lost_share` measures it (do ``w + u`` in the format) and predicts it (|u| smaller
than half the gap to the next representable weight); :func:`master_weight_training` shows the
cure, FP32 master weights (``workbook.training.MasterWeightAdamW`` is that optimizer).
"""

from __future__ import annotations

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_range, check_values
from workbook.data import random_batch
from workbook.precision.formats import (
    FORMAT_DTYPES,
    check_formats,
    format_table,
    mantissa_bits,
)
from workbook.precision.mixed_step import scaled_step

__all__ = ["update_lost_share", "stagnation_sweep", "MASTER_MODES", "master_weight_training"]


def _spacing_of(values: torch.Tensor, fmt: str) -> torch.Tensor:
    """ulp of each value in ``fmt`` (float64): 2**(floor(log2|w|) - mantissa_bits) for normal
    numbers, the smallest subnormal below the normal range."""
    table = format_table().set_index("format").loc[fmt]
    mag = values.double().abs()
    normal_ulp = torch.exp2(torch.floor(torch.log2(mag.clamp_min(table["smallest_normal"])))
                            - mantissa_bits(fmt))
    return normal_ulp.clamp_min(table["smallest_subnormal"])


def update_lost_share(weights: torch.Tensor, updates: torch.Tensor, fmt: str
                      ) -> dict[str, float]:
    """Share of nonzero ``updates`` that leave a weight stored in ``fmt`` unchanged.

    ``measured``: do ``w + u`` in ``fmt`` and compare. ``predicted``: the rule |u| < ulp(w)/2,
    i.e. the update is smaller than half the gap to the next representable weight.
    """
    check_choice("format", fmt, ("fp32", "fp16", "bf16"))
    dt = FORMAT_DTYPES[fmt]
    w = weights.to(dt)
    moved = updates != 0
    if not moved.any():
        raise WorkbookError("all updates are zero: nothing to lose; use lr > 0")
    new = w + updates.to(dt)                       # the add rounds to fmt, like optimizer.step
    lost = (new == w) & moved
    predicted = (updates.double().abs() < _spacing_of(w, fmt) / 2) & moved
    n = moved.sum().item()
    return {"measured": lost.sum().item() / n, "predicted": predicted.sum().item() / n}


def stagnation_sweep(weights: torch.Tensor, grads: torch.Tensor, lrs: tuple[float, ...],
                     formats: tuple[str, ...] = ("fp32", "bf16", "fp16")) -> pd.DataFrame:
    """Update-lost share vs learning rate for Adam's first step, u = -lr * sign(g)."""
    check_formats(formats)
    check_values("lrs", lrs)
    for lr in lrs:
        check_range("lr", lr, 1e-12, 10.0)
    rows = []
    for fmt in formats:
        for lr in lrs:
            shares = update_lost_share(weights, -lr * torch.sign(grads), fmt)
            rows += [{"part": "sweep", "mode": f"{fmt} weights", "lr": lr, "metric":
                      "updates_lost", "value": v, "unit": "share", "source": src}
                     for src, v in shares.items()]
    return pd.DataFrame(rows)


MASTER_MODES: tuple[str, ...] = ("fp32", "bf16_autocast_fp32_master", "bf16_pure")


def master_weight_training(model: torch.nn.Module, ids: torch.Tensor, mode: str, *,
                           steps: int, batch_size: int, seq_len: int, lr: float, seed: int,
                           device: torch.device) -> pd.DataFrame:
    """Keep training ``model`` on one batch with its weights (and Adam state) in FP32 or BF16.

    Per step: the loss, and the share of weights whose value did not move although their
    gradient was nonzero (updates lost to rounding). Each step is
    :func:`~workbook.precision.mixed_step.scaled_step` without a loss scale; ``training.train``
    would add a learning-rate schedule and clipping, which this comparison must not have.
    """
    check_choice("mode", mode, MASTER_MODES)
    if mode == "bf16_pure":
        model = model.to(torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # One fixed batch, fitted step after step: batch-to-batch noise would hide the small
    # differences between the modes; on one batch the fp32 loss falls smoothly.
    x, y = (t.to(device) for t in random_batch(ids, batch_size, seq_len,
                                               torch.Generator().manual_seed(seed)))
    scaler = torch.amp.GradScaler(device.type, enabled=False)   # no loss scale: BF16's range
    dtype = torch.bfloat16 if mode == "bf16_autocast_fp32_master" else None
    rows = []
    for step in range(steps):
        before = [p.detach().clone() for p in params]
        loss, _, _ = scaled_step(model, opt, scaler, x, y, dtype)
        lost = sum(((p.grad != 0) & (p.detach() == b)).sum().item()
                   for p, b in zip(params, before, strict=True))
        nonzero = sum((p.grad != 0).sum().item() for p in params)
        rows += [{"part": "training", "mode": mode, "step": step, "metric": "loss",
                  "value": loss.item(), "unit": "nats"},
                 {"part": "training", "mode": mode, "step": step, "metric": "updates_lost",
                  "value": lost / max(1, nonzero), "unit": "share"}]
    return pd.DataFrame(rows)
