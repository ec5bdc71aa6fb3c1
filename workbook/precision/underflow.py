"""Underflow: which real gradients FP16, BF16 and FP8 store as 0, and loss scaling's rescue.

:func:`capture_gradients` takes one FP32 step's gradients of the base model (logits, hidden
states, weights); :func:`underflow_shares` says what share each format flushes to 0, makes
subnormal or overflows, after a loss scale. :func:`gradscaler_trace` follows the dynamic scale
of ``torch.amp.GradScaler`` step by step (the step itself: :mod:`.mixed_step`).
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_range, check_values
from workbook.data import random_batch
from workbook.precision.formats import FORMAT_DTYPES, check_formats, format_table
from workbook.precision.mixed_step import scaled_step
from workbook.training import next_token_loss

__all__ = ["GRAD_KINDS", "UNDERFLOW_FORMATS", "capture_gradients", "underflow_shares",
           "log2_histogram", "format_lines", "share_rows", "gradscaler_trace"]

GRAD_KINDS: tuple[str, ...] = ("logit_grad", "hidden_grad", "weight_grad")
UNDERFLOW_FORMATS: tuple[str, ...] = ("fp16", "bf16", "fp8_e5m2")


def capture_gradients(model: torch.nn.Module, x: torch.Tensor,
                      y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One FP32 training step's gradients, flattened, by kind.

    ``logit_grad``: dLoss/dlogits; ``hidden_grad``: dLoss/d(hidden state) at the embedding and
    after every decoder layer; ``weight_grad``: every parameter's gradient. These are the
    numbers an FP16 backward pass would have to store.
    """
    model.zero_grad(set_to_none=True)
    out = model(x, output_hidden_states=True)
    for h in (*out.hidden_states, out.logits):
        h.retain_grad()
    next_token_loss(out.logits, y).backward()
    grads = {
        "logit_grad": out.logits.grad.flatten(),
        "hidden_grad": torch.cat([h.grad.flatten() for h in out.hidden_states]),
        "weight_grad": torch.cat([p.grad.flatten() for p in model.parameters()
                                  if p.grad is not None]),
    }
    model.zero_grad(set_to_none=True)
    return {k: v.detach().float().cpu() for k, v in grads.items()}


def underflow_shares(grads: torch.Tensor, fmt: str, scale: float = 1.0) -> dict[str, float]:
    """Of the nonzero FP32 gradients, the share that ``fmt`` stores as 0, as a subnormal (fewer
    significant bits) or as inf/NaN once multiplied by ``scale``."""
    return _shares(_nonzero(grads), fmt, scale)


def _nonzero(grads: torch.Tensor) -> torch.Tensor:
    """The nonzero gradients in float64 (exact), the input of every share."""
    nonzero = grads[grads != 0].double()
    if nonzero.numel() == 0:
        raise WorkbookError("all gradients are zero: nothing can underflow; check the batch")
    return nonzero


def _shares(nonzero: torch.Tensor, fmt: str, scale: float) -> dict[str, float]:
    check_choice("format", fmt, UNDERFLOW_FORMATS + ("fp32",))
    check_range("scale", scale, 2.0 ** -24, 2.0 ** 64)
    # Back to float32 (exact) for the comparisons: FP8 tensors support few operators.
    stored = (nonzero * scale).to(FORMAT_DTYPES[fmt]).float()
    tiny = torch.finfo(FORMAT_DTYPES[fmt]).smallest_normal
    zero = stored == 0
    finite = torch.isfinite(stored)
    sub = finite & ~zero & (stored.abs() < tiny)
    n = nonzero.numel()
    return {"share_zero": zero.sum().item() / n, "share_subnormal": sub.sum().item() / n,
            "share_overflow": (~finite).sum().item() / n}


def log2_histogram(grads: dict[str, torch.Tensor], low: int = -60, high: int = 10
                   ) -> pd.DataFrame:
    """Counts of floor(log2|g|) per kind (zeros left out), clipped to [low, high]."""
    check_range("low", low, -1100, 1100)   # float64's exponents reach -1074
    check_range("high", high, low + 1, 1100)
    rows = []
    for kind, g in grads.items():
        mag = g[g != 0].abs().double()
        bins = torch.floor(torch.log2(mag)).clamp(low, high).long()
        counts = torch.bincount(bins - low, minlength=high - low + 1)
        rows += [{"kind": kind, "log2_abs": low + i, "count": int(c),
                  "share": int(c) / max(1, mag.numel())} for i, c in enumerate(counts.tolist())]
    return pd.DataFrame(rows)


def format_lines(formats: tuple[str, ...] = ("fp16", "bf16", "fp8_e5m2")) -> pd.DataFrame:
    """log2 of each format's smallest subnormal and normal: where a histogram falls off.

    ``log2_flush_below`` is where a cast starts storing 0: half the smallest subnormal (round
    to nearest: a value between half of it and it rounds *up* to it, and is kept)."""
    check_formats(formats)
    table = format_table().set_index("format")
    return pd.DataFrame([{"format": f, "log2_flush_below":
                          math.log2(table.loc[f, "smallest_subnormal"]) - 1,
                          "log2_smallest_subnormal":
                          math.log2(table.loc[f, "smallest_subnormal"]),
                          "log2_smallest_normal": math.log2(table.loc[f, "smallest_normal"]),
                          "log2_max": math.log2(table.loc[f, "max"])} for f in formats])


def share_rows(grads: dict[str, torch.Tensor], log2_scales: tuple[int, ...],
               formats: tuple[str, ...] = UNDERFLOW_FORMATS, scaling: str = "fixed"
               ) -> pd.DataFrame:
    """Tidy underflow shares for every kind x format x scale."""
    check_formats(formats)
    check_values("log2_scales", log2_scales)
    for log2_scale in log2_scales:
        check_range("log2_scale", log2_scale, -126, 126)
    check_choice("scaling", scaling, ("fixed", "gradscaler"))
    rows = []
    for kind, g in grads.items():
        nonzero = _nonzero(g)  # once per kind, not once per format and scale
        for fmt in formats:
            for log2_scale in log2_scales:
                shares = _shares(nonzero, fmt, 2.0 ** log2_scale)
                rows += [{"part": "underflow", "kind": kind, "format": fmt,
                          "scaling": scaling, "log2_scale": log2_scale, "metric": metric,
                          "value": value, "unit": "share of nonzero"}
                         for metric, value in shares.items()]
    return pd.DataFrame(rows)


def gradscaler_trace(model: torch.nn.Module, ids: torch.Tensor, *, steps: int, batch_size: int,
                     seq_len: int, lr: float, init_scale: float, growth_interval: int,
                     seed: int, device: torch.device) -> pd.DataFrame:
    """FP16 autocast training with ``torch.amp.GradScaler`` (:func:`scaled_step`): its scale,
    skipped steps and loss, step by step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type, init_scale=init_scale,
                                  growth_interval=growth_interval)
    rows = []
    for step in range(steps):
        x, y = (t.to(device) for t in random_batch(ids, batch_size, seq_len, gen))
        loss, scale, skipped = scaled_step(model, opt, scaler, x, y, torch.float16)
        rows.append({"step": step, "loss_scale": scale, "skipped": float(skipped),
                     "loss": loss.item()})
    return pd.DataFrame(rows)
