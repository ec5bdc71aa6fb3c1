"""One mixed-precision training step: autocast for the forward, a loss scale for the backward.

Every training loop of notebook 08 is this step: the GradScaler trace (FP16), the four-way
training (FP32, TF32, FP16 + GradScaler, BF16 autocast) and the stagnation runs (FP32, BF16
autocast over FP32 weights, pure BF16).
"""

from __future__ import annotations

import torch

from workbook.training import next_token_loss

__all__ = ["scaled_step"]


def scaled_step(model: torch.nn.Module, optimizer, scaler: torch.amp.GradScaler,
                x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None
                ) -> tuple[torch.Tensor, float, bool]:
    """Forward under autocast to ``dtype`` (None: plain FP32 arithmetic), the loss multiplied
    by ``scaler``'s scale before the backward, and the optimizer step skipped when the scaled
    gradients hold an inf/NaN (the scale was too large: the scaler halves it, and doubles it
    after ``growth_interval`` clean steps). A disabled scaler is plain training.

    The gradients are cleared at the start of the step and left in ``.grad`` after it (to be
    inspected). Returns (the loss, the scale this step used, whether the step was skipped)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = next_token_loss(model(x).logits, y)
    before = scaler.get_scale() if scaler.is_enabled() else 1.0
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), before, scaler.is_enabled() and scaler.get_scale() < before
