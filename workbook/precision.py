"""Number formats and mixed-precision training: what each format can hold, what gets lost.

Four ideas, each computed here rather than typed in:

* **Formats** (:func:`format_table`, :func:`explore`): range, smallest normal and subnormal,
  epsilon of FP32, TF32, FP16, BF16, FP8 (e4m3, e5m2) and INT8, from ``torch.finfo``/``iinfo``
  and bit patterns; any value's bits and its nearest representable value in each format.
* **Underflow** (:func:`capture_gradients`, :func:`underflow_shares`): the base model's real
  activation and weight gradients cast to FP16/BF16, with and without a loss scale, and
  ``torch.amp.GradScaler``'s dynamic scale over steps (:func:`gradscaler_trace`).
* **Stagnation** (:func:`update_lost_share`, :func:`master_weight_training`): a small update
  added to a low-precision weight can round back to the same weight; FP32 master weights keep it.
* **Four-way training** (:func:`train_one`, :func:`run_training`): FP32, TF32, FP16 + GradScaler,
  BF16 autocast, each in a fresh process: loss curve, step time, peak memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_range, check_values, takes_rows
from workbook.registry import Experiment
from workbook.training import MasterWeightAdamW  # noqa: F401  (08 shows its source)

# ------------------------------------------------------------------------------ the formats

FORMATS: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8")

# The torch dtype that stores each format. TF32 has none: it is FP32 whose 13 lowest mantissa
# bits the tensor cores ignore, so it is emulated on FP32 bit patterns below.
_DTYPE: dict[str, torch.dtype] = {
    "fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
    "bf16": torch.bfloat16, "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2,
    "int8": torch.int8,
}
# The integer type of the same width, to read a float's bits.
_BITS_AS: dict[int, torch.dtype] = {32: torch.int32, 16: torch.int16, 8: torch.uint8}
_TF32_DROP = 13               # FP32 keeps 23 mantissa bits, TF32 10: 13 are dropped
_TF32_MASK = ~((1 << _TF32_DROP) - 1)


def _check_format(fmt: str) -> None:
    check_choice("format", fmt, FORMATS)


def _check_formats(formats: tuple[str, ...]) -> None:
    check_values("formats", formats)
    for fmt in formats:
        _check_format(fmt)


def _mantissa_bits(fmt: str) -> int:
    if fmt == "int8":
        return 7
    if fmt == "tf32":
        return 23 - _TF32_DROP
    # eps = 2**-mantissa_bits, exactly: the gap between 1 and the next representable number.
    return int(round(-math.log2(torch.finfo(_DTYPE[fmt]).eps)))


def _total_bits(fmt: str) -> int:
    if fmt == "tf32":
        return 32 - _TF32_DROP
    dt = _DTYPE[fmt]
    return torch.iinfo(dt).bits if fmt == "int8" else torch.finfo(dt).bits


def _from_bits(pattern: int, fmt: str) -> float:
    """The value a bit pattern stands for (FP32 pattern for TF32)."""
    width = 32 if fmt == "tf32" else _total_bits(fmt)
    as_int = _BITS_AS[width]
    if width < 32 and as_int.is_signed and pattern >= 1 << (width - 1):
        pattern -= 1 << width  # torch.tensor wants the signed value of the same bits
    elif width == 32 and pattern >= 1 << 31:
        pattern -= 1 << 32
    return torch.tensor([pattern], dtype=as_int).view(_DTYPE[fmt]).double().item()


def format_table() -> pd.DataFrame:
    """Range, smallest normal/subnormal, epsilon per format, from torch and bit patterns."""
    rows = []
    for fmt in FORMATS:
        bits, mant = _total_bits(fmt), _mantissa_bits(fmt)
        if fmt == "int8":
            info = torch.iinfo(torch.int8)
            rows.append({"format": fmt, "bits": bits, "exponent_bits": 0, "mantissa_bits": mant,
                         "max": float(info.max), "min": float(info.min),
                         "smallest_normal": 1.0, "smallest_subnormal": math.nan,
                         "epsilon": 1.0, "decimal_digits": math.log10(2 ** mant),
                         "has_inf": False, "torch_dtype": str(torch.int8)})
            continue
        exp_bits = bits - 1 - mant
        # Largest finite: all exponent bits set but the last, mantissa all ones (IEEE); e4m3fn
        # also uses the top exponent for numbers, keeping only S.1111.111 for NaN.
        if fmt == "tf32":
            largest = _from_bits(0x7F7FFFFF & _TF32_MASK, fmt)
            normal = _from_bits(1 << 23, fmt)
        else:
            info = torch.finfo(_DTYPE[fmt])
            largest, normal = float(info.max), float(info.smallest_normal)
        subnormal = _from_bits(1 << (_TF32_DROP if fmt == "tf32" else 0), fmt)
        rows.append({"format": fmt, "bits": bits, "exponent_bits": exp_bits,
                     "mantissa_bits": mant, "max": largest, "min": -largest,
                     "smallest_normal": normal, "smallest_subnormal": subnormal,
                     "epsilon": 2.0 ** -mant, "decimal_digits": math.log10(2 ** (mant + 1)),
                     "has_inf": fmt != "fp8_e4m3",
                     "torch_dtype": "torch.float32 (tensor cores drop 13 bits)"
                     if fmt == "tf32" else str(_DTYPE[fmt])})
    return pd.DataFrame(rows)


def _tf32_round(x: torch.Tensor) -> torch.Tensor:
    """FP32 -> TF32 as ``cvt.rna.tf32.f32`` does: round to nearest, ties away from zero."""
    x = x.to(torch.float32)
    bits = x.view(torch.int32)
    rounded = ((bits + (1 << (_TF32_DROP - 1))) & _TF32_MASK).view(torch.float32)
    return torch.where(torch.isfinite(x), rounded, x)  # inf/NaN patterns pass unchanged


def cast(values: torch.Tensor, fmt: str) -> torch.Tensor:
    """``values`` stored in ``fmt`` (the tensor keeps ``fmt``'s dtype; TF32 stays float32).

    INT8 saturates at -128/127 on purpose: a plain ``.to(torch.int8)`` wraps around (300 -> 44).
    """
    _check_format(fmt)
    if fmt == "tf32":
        return _tf32_round(values)
    if fmt == "int8":
        return values.double().round().clamp(-128, 127).to(torch.int8)
    return values.to(_DTYPE[fmt])


def round_trip(values: torch.Tensor, fmt: str) -> torch.Tensor:
    """The nearest representable value in ``fmt``, returned as float64."""
    return cast(values, fmt).double()


def _bit_string(stored: torch.Tensor, fmt: str) -> str:
    """'s eeeeeeee mmmmmmm' for one stored value."""
    width = 32 if fmt == "tf32" else _total_bits(fmt)
    raw = stored.reshape(1).view(_BITS_AS[width] if fmt != "int8" else torch.int8).item()
    text = format(raw & ((1 << width) - 1), f"0{width}b")
    if fmt == "tf32":
        text = text[: 32 - _TF32_DROP]
    mant = _mantissa_bits(fmt)
    if fmt == "int8":
        return f"{text[0]} {text[1:]}"  # two's complement: the top bit weighs -128
    return f"{text[0]} {text[1:len(text) - mant]} {text[len(text) - mant:]}"


def _spacing(stored: torch.Tensor, fmt: str) -> float:
    """Gap from ``|stored|`` to the next larger representable number (ulp)."""
    if fmt == "int8":
        return 1.0
    value = abs(stored.double().item())
    if not math.isfinite(value):
        return math.nan
    width = 32 if fmt == "tf32" else _total_bits(fmt)
    positive = cast(torch.tensor([value]), fmt).reshape(1).view(_BITS_AS[width]).item()
    step = 1 << _TF32_DROP if fmt == "tf32" else 1
    nxt = _from_bits((positive & ((1 << width) - 1)) + step, fmt)
    return nxt - value if math.isfinite(nxt) else math.nan


def _status(value: float, stored: float, fmt: str, limits: pd.Series) -> str:
    if math.isnan(value):
        return "NaN in, NaN out"
    if math.isinf(value):
        return "inf" if math.isinf(stored) else f"inf not representable: stored {stored:g}"
    if math.isinf(stored):
        return f"overflow: |x| > max {limits['max']:g}, stored as inf"
    if math.isnan(stored):
        return f"overflow: |x| > max {limits['max']:g}, stored as NaN (no inf in {fmt})"
    if abs(value) > limits["max"]:
        return f"overflow: saturated to {stored:g} ({fmt} has no inf)"
    if value != 0 and stored == 0:
        return "underflow: flushed to 0"
    if fmt != "int8" and 0 < abs(stored) < limits["smallest_normal"]:
        return "subnormal: fewer significant bits"
    return "exact" if stored == value else "rounded"


def explore(value: float, formats: tuple[str, ...] = FORMATS) -> pd.DataFrame:
    """One row per format: the bits of ``value`` stored there, the value, error and status."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkbookError(f"value={value!r} must be a number (e.g. 0.1, 1e-8, 70000, inf)")
    _check_formats(formats)
    table = format_table().set_index("format")
    rows = []
    for fmt in formats:
        src = torch.tensor([float(value)], dtype=torch.float64)
        if fmt == "int8" and not math.isfinite(value):
            rows.append({"format": fmt, "input": value, "stored": math.nan, "bits": "-",
                         "abs_error": math.nan, "rel_error": math.nan, "spacing": 1.0,
                         "status": "not representable: int8 has no inf or NaN"})
            continue
        stored_t = cast(src if fmt != "tf32" else src.float(), fmt)
        stored = stored_t.double().item()
        err = abs(stored - value) if math.isfinite(stored) and math.isfinite(value) else math.nan
        rows.append({"format": fmt, "input": value, "stored": stored,
                     "bits": _bit_string(stored_t, fmt), "abs_error": err,
                     "rel_error": err / abs(value) if value not in (0, 0.0) and
                     math.isfinite(err) else (0.0 if err == 0 else math.nan),
                     "spacing": _spacing(stored_t, fmt),
                     "status": _status(float(value), stored, fmt, table.loc[fmt])})
    return pd.DataFrame(rows)


def parse_value(text: str) -> float:
    """A typed value: '0.1', '1e-8', '-70000', 'inf'; anything else is one-line error."""
    try:
        return float(str(text).strip().replace("_", ""))
    except ValueError:
        raise WorkbookError(f"value {text!r} is not a number; allowed: a number such as 0.1, "
                            "1e-8, 70000, inf") from None


def fp8_support() -> str:
    """Whether this device has FP8 matmuls; FP8 *storage* (casts, bits) works everywhere."""
    from workbook.hardware import detect

    machine = detect()
    if "fp8" in machine.dtypes:
        return f"FP8 matmul: supported on {machine.name}."
    why = (f"compute capability {'.'.join(map(str, machine.capability))}; FP8 tensor cores "
           "need 8.9+, Ada or Hopper" if machine.capability else "a CPU has no FP8 tensor cores")
    return (f"FP8 matmul: not supported on {machine.name} ({why}). FP8 casts and bit patterns "
            "are still exact here; FP8 throughput comes from the recorded H100 roofline.")


# ------------------------------------------------------------------------------ underflow

GRAD_KINDS: tuple[str, ...] = ("logit_grad", "hidden_grad", "weight_grad")
UNDERFLOW_FORMATS: tuple[str, ...] = ("fp16", "bf16", "fp8_e5m2")


def lm_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; logits upcast to FP32 (what autocast does for softmax)."""
    logits = model(x).logits                              # (batch, seq_len, vocab)
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())


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
    loss = torch.nn.functional.cross_entropy(out.logits.float().flatten(0, 1), y.flatten())
    loss.backward()
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
    check_choice("format", fmt, UNDERFLOW_FORMATS + ("fp32",))
    check_range("scale", scale, 2.0 ** -24, 2.0 ** 64)
    nonzero = grads[grads != 0].float()
    if nonzero.numel() == 0:
        raise WorkbookError("all gradients are zero: nothing can underflow; check the batch")
    # Back to float32 (exact) for the comparisons: FP8 tensors support few operators.
    stored = (nonzero.double() * scale).to(_DTYPE[fmt]).float()
    tiny = torch.finfo(_DTYPE[fmt]).smallest_normal
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
    """log2 of each format's smallest subnormal and normal: where a histogram falls off."""
    _check_formats(formats)
    table = format_table().set_index("format")
    return pd.DataFrame([{"format": f, "log2_smallest_subnormal":
                          math.log2(table.loc[f, "smallest_subnormal"]),
                          "log2_smallest_normal": math.log2(table.loc[f, "smallest_normal"]),
                          "log2_max": math.log2(table.loc[f, "max"])} for f in formats])


def gradscaler_trace(model: torch.nn.Module, ids: torch.Tensor, *, steps: int, batch_size: int,
                     seq_len: int, lr: float, init_scale: float, growth_interval: int,
                     seed: int, device: torch.device) -> pd.DataFrame:
    """FP16 autocast training with ``torch.amp.GradScaler``: its scale, skipped steps, loss.

    A step is skipped when the scaled gradients hold an inf/NaN (the scale was too large);
    the scaler then halves the scale. After ``growth_interval`` clean steps it doubles it.
    """
    from workbook.data import random_batch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler(device.type, init_scale=init_scale,
                                  growth_interval=growth_interval)
    rows = []
    for step in range(steps):
        x, y = (t.to(device) for t in random_batch(ids, batch_size, seq_len, gen))
        with torch.autocast(device.type, dtype=torch.float16):
            loss = lm_loss(model, x, y)
        before = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        rows.append({"step": step, "loss_scale": before,
                     "skipped": float(scaler.get_scale() < before), "loss": loss.item()})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class UnderflowConfig:
    model_preset: str          # which base model: "small" or "full"
    batch_size: int
    seq_len: int
    log2_scales: tuple[int, ...]
    scaler_steps: int
    scaler_init_log2: int      # GradScaler's first scale, as a power of two
    growth_interval: int
    lr: float

    def __post_init__(self) -> None:
        check_choice("model_preset", self.model_preset, ("small", "full"))
        check_range("batch_size", self.batch_size, 1, 256)
        check_range("seq_len", self.seq_len, 8, 4096)
        for s in self.log2_scales:
            check_range("log2_scales", s, 0, 40)
        check_range("scaler_steps", self.scaler_steps, 1, 2000)
        check_range("scaler_init_log2", self.scaler_init_log2, 0, 40)
        check_range("growth_interval", self.growth_interval, 1, 10000)
        check_range("lr", self.lr, 1e-7, 1e-1)


UNDERFLOW_PRESETS = {
    "small": UnderflowConfig("small", batch_size=8, seq_len=128,
                             log2_scales=(0, 8, 10, 16, 24), scaler_steps=12,
                             scaler_init_log2=24, growth_interval=3, lr=1e-4),
    "full": UnderflowConfig("full", batch_size=32, seq_len=256,
                            log2_scales=(0, 8, 10, 16, 24), scaler_steps=60,
                            scaler_init_log2=24, growth_interval=10, lr=1e-4),
}


def share_rows(grads: dict[str, torch.Tensor], log2_scales: tuple[int, ...],
               formats: tuple[str, ...] = UNDERFLOW_FORMATS, scaling: str = "fixed"
               ) -> pd.DataFrame:
    """Tidy underflow shares for every kind x format x scale."""
    _check_formats(formats)
    check_values("log2_scales", log2_scales)
    for log2_scale in log2_scales:
        check_range("log2_scale", log2_scale, -126, 126)
    check_choice("scaling", scaling, ("fixed", "gradscaler"))
    rows = []
    for kind, g in grads.items():
        for fmt in formats:
            for log2_scale in log2_scales:
                shares = underflow_shares(g, fmt, 2.0 ** log2_scale)
                rows += [{"part": "underflow", "kind": kind, "format": fmt,
                          "scaling": scaling, "log2_scale": log2_scale, "metric": metric,
                          "value": value, "unit": "share of nonzero"}
                         for metric, value in shares.items()]
    return pd.DataFrame(rows)


def run_underflow(cfg: UnderflowConfig, seed: int) -> pd.DataFrame:
    """Underflow shares of the base model's real gradients, and a GradScaler trace."""
    from workbook.data import random_batch, token_ids
    from workbook.model import load_base_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_base_model(cfg.model_preset, seed=seed, device=device)
    model.train()
    ids = token_ids("train", model.config.vocab_size)
    x, y = (t.to(device) for t in random_batch(ids, cfg.batch_size, cfg.seq_len,
                                               torch.Generator().manual_seed(seed)))
    grads = capture_gradients(model, x, y)
    rows = [share_rows(grads, cfg.log2_scales)]
    trace = gradscaler_trace(model, ids, steps=cfg.scaler_steps, batch_size=cfg.batch_size,
                             seq_len=cfg.seq_len, lr=cfg.lr,
                             init_scale=2.0 ** cfg.scaler_init_log2,
                             growth_interval=cfg.growth_interval, seed=seed + 1, device=device)
    settled = int(math.log2(trace["loss_scale"].iloc[-1]))
    rows.append(share_rows(grads, (settled,), scaling="gradscaler"))
    long = trace.melt(id_vars="step", var_name="metric", value_name="value")
    long["unit"] = long["metric"].map({"loss_scale": "x", "skipped": "step", "loss": "nats"})
    rows.append(long.assign(part="gradscaler", kind="fp16_autocast", format="fp16",
                            scaling="gradscaler"))
    return pd.concat(rows, ignore_index=True).assign(model_preset=cfg.model_preset)


# --------------------------------------------------------------------- weight stagnation


def _spacing_of(values: torch.Tensor, fmt: str) -> torch.Tensor:
    """ulp of each value in ``fmt`` (float64): 2**(floor(log2|w|) - mantissa_bits) for normal
    numbers, the smallest subnormal below the normal range."""
    table = format_table().set_index("format").loc[fmt]
    mag = values.double().abs()
    normal_ulp = torch.exp2(torch.floor(torch.log2(mag.clamp_min(table["smallest_normal"])))
                            - _mantissa_bits(fmt))
    return normal_ulp.clamp_min(table["smallest_subnormal"])


def update_lost_share(weights: torch.Tensor, updates: torch.Tensor, fmt: str
                      ) -> dict[str, float]:
    """Share of nonzero ``updates`` that leave a weight stored in ``fmt`` unchanged.

    ``measured``: do ``w + u`` in ``fmt`` and compare. ``predicted``: the rule |u| < ulp(w)/2,
    i.e. the update is smaller than half the gap to the next representable weight.
    """
    check_choice("format", fmt, ("fp32", "fp16", "bf16"))
    dt = _DTYPE[fmt]
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
    _check_formats(formats)
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
    gradient was nonzero (updates lost to rounding).
    """
    from workbook.data import random_batch

    check_choice("mode", mode, MASTER_MODES)
    if mode == "bf16_pure":
        model = model.to(torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # One fixed batch, fitted step after step: batch-to-batch noise would hide the small
    # differences between the modes; on one batch the fp32 loss falls smoothly.
    x, y = (t.to(device) for t in random_batch(ids, batch_size, seq_len,
                                               torch.Generator().manual_seed(seed)))
    rows = []
    for step in range(steps):
        with torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=mode == "bf16_autocast_fp32_master"):
            loss = lm_loss(model, x, y)
        loss.backward()
        before = [p.detach().clone() for p in params]
        opt.step()
        lost = sum(((p.grad != 0) & (p.detach() == b)).sum().item()
                   for p, b in zip(params, before, strict=True))
        nonzero = sum((p.grad != 0).sum().item() for p in params)
        opt.zero_grad(set_to_none=True)
        rows += [{"part": "training", "mode": mode, "step": step, "metric": "loss",
                  "value": loss.item(), "unit": "nats"},
                 {"part": "training", "mode": mode, "step": step, "metric": "updates_lost",
                  "value": lost / max(1, nonzero), "unit": "share"}]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class StagnationConfig:
    model_preset: str
    lrs: tuple[float, ...]     # the sweep's learning rates
    train_lr: float            # the training runs' learning rate
    steps: int
    batch_size: int
    seq_len: int

    def __post_init__(self) -> None:
        check_choice("model_preset", self.model_preset, ("small", "full"))
        for lr in self.lrs:
            check_range("lrs", lr, 1e-9, 1.0)
        check_range("train_lr", self.train_lr, 1e-7, 1e-1)
        check_range("steps", self.steps, 1, 5000)
        check_range("batch_size", self.batch_size, 1, 256)
        check_range("seq_len", self.seq_len, 8, 4096)


_SWEEP_LRS = tuple(10.0 ** (e / 2) for e in range(-14, -3))   # 1e-7 ... 3e-2
STAGNATION_PRESETS = {
    "small": StagnationConfig("small", _SWEEP_LRS, train_lr=3e-5, steps=12, batch_size=4,
                              seq_len=64),
    "full": StagnationConfig("full", _SWEEP_LRS, train_lr=3e-5, steps=100, batch_size=32,
                             seq_len=256),
}


def run_stagnation(cfg: StagnationConfig, seed: int) -> pd.DataFrame:
    """The update-lost sweep on the base model's real weights, then three training runs."""
    from workbook.data import random_batch, token_ids
    from workbook.model import load_base_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_base_model(cfg.model_preset, seed=seed, device=device)
    ids = token_ids("train", model.config.vocab_size)
    x, y = (t.to(device) for t in random_batch(ids, cfg.batch_size, cfg.seq_len,
                                               torch.Generator().manual_seed(seed)))
    model.train()
    lm_loss(model, x, y).backward()
    params = [p for p in model.parameters() if p.grad is not None]
    weights = torch.cat([p.detach().flatten().cpu() for p in params])
    grads = torch.cat([p.grad.flatten().cpu() for p in params])
    model.zero_grad(set_to_none=True)
    rows = [stagnation_sweep(weights, grads, cfg.lrs)]
    for mode in MASTER_MODES:
        fresh, _ = load_base_model(cfg.model_preset, seed=seed, device=device)
        rows.append(master_weight_training(fresh.train(), ids, mode, steps=cfg.steps,
                                           batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                                           lr=cfg.train_lr, seed=seed + 1, device=device))
    return pd.concat(rows, ignore_index=True).assign(model_preset=cfg.model_preset)


# ------------------------------------------------------------------- four-way training

TRAIN_MODES: tuple[str, ...] = ("fp32", "tf32", "fp16_gradscaler", "bf16_autocast")
_MODE_DTYPE = {"fp32": "fp32", "tf32": "tf32", "fp16_gradscaler": "fp16",
               "bf16_autocast": "bf16"}     # the matmul dtype each mode runs at (roofline key)


@dataclass(frozen=True)
class TrainingConfig:
    d_model: int
    n_layers: int
    n_heads: int
    vocab_size: int
    seq_len: int
    batch_size: int
    steps: int
    warmup: int                # steps excluded from the step-time median
    lr: float
    modes: tuple[str, ...] = TRAIN_MODES

    def __post_init__(self) -> None:
        check_range("d_model", self.d_model, 16, 8192)
        check_range("n_layers", self.n_layers, 1, 64)
        check_range("n_heads", self.n_heads, 1, 128)
        check_range("vocab_size", self.vocab_size, 512, 65536)
        check_range("seq_len", self.seq_len, 8, 8192)
        check_range("batch_size", self.batch_size, 1, 512)
        check_range("steps", self.steps, 2, 10000)
        check_range("warmup", self.warmup, 1, self.steps - 1)
        check_range("lr", self.lr, 1e-6, 1e-1)
        for mode in self.modes:
            check_choice("modes", mode, TRAIN_MODES)


TRAINING_PRESETS = {
    "small": TrainingConfig(d_model=64, n_layers=2, n_heads=2, vocab_size=4096, seq_len=64,
                            batch_size=4, steps=6, warmup=2, lr=1e-3),
    # ~105M parameters, 16k tokens a step: big enough to keep an H100 busy, so that the step
    # time is set by the matmuls, not by kernel launches. About 2 minutes for all four modes.
    "full": TrainingConfig(d_model=1024, n_layers=8, n_heads=16, vocab_size=4096, seq_len=1024,
                           batch_size=16, steps=50, warmup=5, lr=3e-4),
}


def _unsupported(mode: str, device: torch.device) -> str | None:
    """Why ``mode`` cannot run on ``device`` (None if it can)."""
    from workbook.hardware import detect

    if mode == "tf32":
        machine = detect()
        if device.type != "cuda" or "tf32" not in machine.dtypes:
            return (f"tf32 needs an NVIDIA GPU with compute capability 8.0+ (Ampere or "
                    f"newer); this is {machine.name}")
    return None


def train_one(mode: str, cfg: dict, seed: int = 0) -> pd.DataFrame:
    """Train a fresh model ``cfg['steps']`` steps in ``mode``; run it in a fresh process.

    Rows: the loss per step, the median step time (after ``warmup`` steps), model TFLOP/s
    (6 N tokens / step time), peak allocated memory, GradScaler's scale and skipped steps.
    """
    from workbook import profiling
    from workbook.data import random_batch, token_ids
    from workbook.model import ModelConfig, build_model, count_params

    check_choice("mode", mode, TRAIN_MODES)
    tc = TrainingConfig(**{**cfg, "modes": tuple(cfg.get("modes", TRAIN_MODES))})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = {"mode": mode}
    reason = _unsupported(mode, device)
    if reason:
        return pd.DataFrame([{**base, "metric": "run", "value": math.nan,
                              "status": "unsupported", "error": reason}])
    # TF32 is a global switch: this process is fresh and trains one mode, so it is safe here.
    torch.set_float32_matmul_precision("high" if mode == "tf32" else "highest")
    mcfg = ModelConfig(vocab_size=tc.vocab_size, d_model=tc.d_model, n_layers=tc.n_layers,
                       n_heads=tc.n_heads, seq_len=tc.seq_len)
    model = build_model(mcfg, seed).to(device).train()
    n_params = count_params(model)
    ids = token_ids("train", tc.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    batches = [tuple(t.to(device) for t in random_batch(ids, tc.batch_size, tc.seq_len, gen))
               for _ in range(tc.steps)]
    profiling.reset_peak(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, fused=device.type == "cuda")
    amp = {"fp16_gradscaler": torch.float16, "bf16_autocast": torch.bfloat16}.get(mode)
    scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16_gradscaler")
    losses, scales, skipped = [], [], []

    def step() -> None:
        x, y = batches[len(losses)]
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = lm_loss(model, x, y)
        before = scaler.get_scale() if scaler.is_enabled() else 1.0
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        scales.append(before)
        skipped.append(scaler.is_enabled() and scaler.get_scale() < before)

    ms = profiling.time_ms(step, warmup=tc.warmup, repeats=tc.steps - tc.warmup, device=device)
    peak = profiling.peak_bytes(device)
    tokens = tc.batch_size * tc.seq_len
    rows = [{**base, "step": i, "metric": "loss", "value": float(v), "unit": "nats"}
            for i, v in enumerate(torch.stack(losses).cpu().tolist())]
    if scaler.is_enabled():
        rows += [{**base, "step": i, "metric": "loss_scale", "value": float(s), "unit": "x"}
                 for i, s in enumerate(scales)]
    rows += [{**base, "metric": m, "value": v, "unit": u} for m, v, u in (
        ("step_time", ms, "ms"), ("tokens_per_s", tokens / (ms / 1e3), "tokens/s"),
        ("model_tflops", 6 * n_params * tokens / (ms / 1e3) / 1e12, "TFLOP/s"),
        ("skipped_steps", float(sum(skipped)), "steps"), ("n_params", float(n_params), "params"))]
    if device.type == "cuda":  # PyTorch's allocator statistics exist only for CUDA
        rows.append({**base, "metric": "peak_memory", "value": peak / 2**30, "unit": "GiB"})
    return pd.DataFrame(rows)


@takes_rows
def predicted_step_times(rows: pd.DataFrame, roofline: pd.DataFrame) -> pd.DataFrame:
    """Step time if every mode were as much faster than FP32 as its matmuls are (roofline).

    An upper bound on the speed-up: softmax, norms, the optimizer and memory-bound kernels do
    not speed up with the matmul units. Empty if the roofline is not from this device.
    """
    from workbook.hardware import roofline_peaks

    ok = rows[(rows["metric"] == "step_time") & (rows["status"] == "ok")]
    if ok.empty or roofline.empty or "fp32" not in set(ok["mode"]):
        return pd.DataFrame()
    device = str(rows["device"].iloc[0]) if "device" in rows.columns else None
    if device and "device" in roofline.columns:
        roofline = roofline[roofline["device"].astype(str) == device]
    peaks = roofline_peaks(roofline) if not roofline.empty else {}
    if "fp32" not in peaks:
        return pd.DataFrame()
    fp32_ms = float(ok.loc[ok["mode"] == "fp32", "value"].iloc[0])
    return pd.DataFrame([{"mode": mode, "metric": "step_time",
                          "value": fp32_ms * peaks["fp32"] / peaks[dtype], "unit": "ms",
                          "source": "predicted", "status": "ok"}
                         for mode, dtype in _MODE_DTYPE.items() if dtype in peaks])


def run_training(cfg: TrainingConfig, seed: int) -> pd.DataFrame:
    """Each mode in a fresh process (clean peak memory; a crash or OOM becomes a row)."""
    from workbook import runner

    args = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    frames = [runner.call("workbook.precision:train_one",
                          {"mode": mode, "cfg": args, "seed": seed}, timeout_s=300)
              for mode in cfg.modes]
    rows = pd.concat(frames, ignore_index=True)
    # A failed mode's row carries the call's scalar arguments; the seed is added by the caller.
    rows = rows.drop(columns=[c for c in ("seed",) if c in rows.columns])
    rows["status"] = rows["status"].fillna("ok") if "status" in rows else "ok"
    return rows


EXPERIMENTS = [
    Experiment(name="precision_underflow",
               summary="share of real gradients flushed to 0 in FP16/BF16/FP8, loss scale, "
                       "GradScaler trace", notebook="08_mixed_precision",
               run=run_underflow, presets=UNDERFLOW_PRESETS,
               min_gpus={"small": 0, "full": 0}, timeout_s=900),
    Experiment(name="precision_stagnation",
               summary="updates lost to rounding in BF16/FP16 weights vs FP32 master weights",
               notebook="08_mixed_precision", run=run_stagnation, presets=STAGNATION_PRESETS,
               min_gpus={"small": 0, "full": 0}, timeout_s=900),
    Experiment(name="precision_training",
               summary="FP32 vs TF32 vs FP16+GradScaler vs BF16 autocast: loss, step time, "
                         "peak memory", notebook="08_mixed_precision", run=run_training,
               presets=TRAINING_PRESETS, min_gpus={"small": 0, "full": 1}, timeout_s=900),
]


# ------------------------------------------------------------------ views (notebook only)


def format_explorer(value: str = "0.1"):
    """Type a value: its bits, stored value and relative error in every format."""
    import ipywidgets as w

    from workbook import plots, widgets

    if not isinstance(value, str):
        raise WorkbookError(f"value={value!r} is not allowed; allowed: text such as '0.1'")
    parse_value(value)  # a bad first value: one line now, not a message under an empty figure
    fig = plots.figure("relative error of the stored value", "format", "|stored - x| / |x|",
                       log_y=True)
    fig.add_bar(x=list(FORMATS), y=[None] * len(FORMATS), marker_color=plots.COLORS[0])
    box = w.Text(value=value, description="value x", continuous_update=False)

    def draw(fig, value: str) -> str:
        rows = explore(parse_value(value))
        # A relative error of exactly 0 cannot sit on a log axis: show it at 1e-17. No bar
        # (None, not NaN, which the widget cannot send) where the error is undefined (inf).
        fig.data[0].y = [max(e, 1e-17) if math.isfinite(e) else None
                         for e in rows["rel_error"]]
        fig.data[0].hovertext = rows["status"].tolist()
        shown = rows[["format", "stored", "bits", "rel_error", "spacing", "status"]]
        return shown.to_html(index=False, float_format=lambda v: f"{v:.6g}")

    return widgets.Explorer({"value": box}, draw, fig)


@takes_rows
def histogram_figure(hist: pd.DataFrame, lines: pd.DataFrame):
    """Share of gradients per power of two, with where FP16/BF16 stop (dashed/dotted)."""
    from workbook import plots

    fig = plots.figure("log2 |gradient| of one training step (FP32)", "log2 |g|",
                       "share of nonzero gradients")
    for i, (kind, part) in enumerate(hist.groupby("kind", sort=False)):
        fig.add_scatter(x=part["log2_abs"], y=part["share"], name=kind, mode="lines",
                        line={"color": plots.COLORS[i], "shape": "hvh"})
    for i, row in enumerate(lines.itertuples()):
        color = plots.COLORS[4 + i]
        fig.add_vline(x=row.log2_smallest_subnormal, line={"dash": "dot", "color": color},
                      annotation_text=f"{row.format} subnormal", annotation_textangle=-90)
        fig.add_vline(x=row.log2_smallest_normal, line={"dash": "dash", "color": color},
                      annotation_text=f"{row.format} normal", annotation_textangle=-90)
    return fig


def loss_scale_explorer(grads: dict[str, torch.Tensor], log2_scale: int = 0):
    """Slide the loss scale: the share of each gradient kind lost to 0 or to inf."""
    from workbook import plots, widgets

    check_range("log2_scale", log2_scale, 0, 40)  # the slider's range

    fig = plots.figure("gradients lost when stored (after x loss scale)", "gradient kind",
                       "share of nonzero gradients")
    fig.update_layout(barmode="group")
    traces = [(f, m) for f in UNDERFLOW_FORMATS for m in ("share_zero", "share_overflow")]
    for i, (fmt, metric) in enumerate(traces):
        fig.add_bar(x=list(grads), y=[0.0] * len(grads), name=f"{fmt} {metric[6:]}",
                    marker_color=plots.COLORS[i // 2],
                    marker_pattern_shape="" if metric == "share_zero" else "/")

    def draw(fig, log2_scale: int) -> str:
        rows = share_rows(grads, (log2_scale,)).set_index(["kind", "format", "metric"])
        for trace, (fmt, metric) in zip(fig.data, traces, strict=True):
            trace.y = [rows.loc[(k, fmt, metric), "value"] for k in grads]
        z = rows.loc[("logit_grad", "fp16", "share_zero"), "value"]
        o = rows.loc[("weight_grad", "fp16", "share_overflow"), "value"]
        return (f"scale 2^{log2_scale}: FP16 flushes {z:.1%} of the logit gradients to 0 "
                f"and turns {o:.2%} of the weight gradients into inf.")

    slider = widgets.slider("log2 loss scale", 0, 40, 1, log2_scale)
    return widgets.Explorer({"log2_scale": slider}, draw, fig)


@takes_rows
def scaler_figure(rows: pd.DataFrame, title: str = "GradScaler: loss scale per step"):
    """The dynamic loss scale (log axis) with skipped steps marked."""
    from workbook import plots

    part = rows[rows["metric"].isin(["loss_scale", "skipped"])]
    fig = plots.figure(plots.title_with_source(title, part), "step", "loss scale", log_y=True)
    if part.empty:
        fig.add_annotation(text="no recorded loss-scale rows yet", showarrow=False, x=0.5,
                           y=0.5, xref="paper", yref="paper")
        return fig
    wide = part.pivot_table(index="step", columns="metric", values="value").reset_index()
    fig.add_scatter(x=wide["step"], y=wide["loss_scale"], name="scale", mode="lines+markers",
                    line={"shape": "hv", "color": plots.COLORS[0]})
    if "skipped" in wide:
        hit = wide[wide["skipped"] > 0]
        fig.add_scatter(x=hit["step"], y=hit["loss_scale"], name="skipped (inf/NaN found)",
                        mode="markers", marker={"symbol": "x", "size": 12,
                                                "color": plots.COLORS[1]})
    return fig


@takes_rows
def training_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per mode: step time, speed-up, peak memory and final loss vs FP32."""
    ok = rows[rows["status"] == "ok"]
    measured = ok[ok["source"].isin(["measured", "recorded"])]
    scalar = measured[measured["metric"].isin(["step_time", "peak_memory", "model_tflops",
                                               "skipped_steps"])]
    table = scalar.pivot_table(index="mode", columns="metric", values="value")
    losses = measured[measured["metric"] == "loss"].sort_values("step")
    table["final_loss"] = losses.groupby("mode")["value"].apply(lambda v: v.tail(5).mean())
    table = table.reindex([m for m in TRAIN_MODES if m in table.index])
    if "fp32" in table.index:
        table["speedup_vs_fp32"] = table.loc["fp32", "step_time"] / table["step_time"]
        if "peak_memory" in table:
            table["memory_vs_fp32"] = table["peak_memory"] / table.loc["fp32", "peak_memory"]
    predicted = ok[(ok["source"] == "predicted") & (ok["metric"] == "step_time")]
    if not predicted.empty:
        table["step_time_roofline_bound"] = predicted.set_index("mode")["value"]
    return table.reset_index()


@takes_rows
def lecture_claims(training: pd.DataFrame, roofline: pd.DataFrame,
                   underflow: pd.DataFrame) -> pd.DataFrame:
    """The lecture's precision claims, checked against the roofline and the recorded runs."""
    from workbook.claims import Claim, claims_table
    from workbook.hardware import roofline_peaks
    from workbook.results import provenance_label

    peaks = roofline_peaks(roofline) if not roofline.empty else {}
    nan = math.nan
    summary = training_summary(training).set_index("mode") if not training.empty else None

    def cell(mode: str, col: str) -> float:
        ok = summary is not None and mode in summary.index and col in summary.columns
        return float(summary.loc[mode, col]) if ok else nan

    def share(fmt: str, log2_scale: int = 0) -> float:
        if underflow.empty:
            return nan
        u = underflow
        sel = u[(u["part"] == "underflow") & (u["format"] == fmt) & (u["kind"] == "logit_grad")
                & (u["log2_scale"] == log2_scale) & (u["metric"] == "share_zero")]
        return float(sel["value"].iloc[0]) if len(sel) else nan

    where_t = provenance_label(training) if not training.empty else "no recorded rows yet"
    where_r = provenance_label(roofline) if not roofline.empty else "no recorded rows yet"
    where_u = provenance_label(underflow) if not underflow.empty else "no recorded rows yet"
    fp16_1e7 = explore(1e-7, ("fp16",))["stored"].iloc[0]
    return claims_table([
        Claim("FP16 is 33x faster than FP32 (H100 table: 1,979 vs 60 TFLOPS)", "lecture 7.2",
              33.0, peaks.get("fp16", nan) / peaks.get("fp32", nan), "x (matmul)", where_r),
        Claim("... and so a training step is that much faster (FP16 + GradScaler)",
              "lecture 7.2", 33.0, cell("fp16_gradscaler", "speedup_vs_fp32"), "x", where_t),
        Claim("mixed precision: 2-3x faster (BF16 autocast vs FP32)", "lecture 7.3", 2.5,
              cell("bf16_autocast", "speedup_vs_fp32"), "x", where_t, rel_tol=0.2),
        Claim("mixed precision: memory ~40 % lower (peak, BF16 autocast / FP32)",
              "lecture 7.3", 0.6, cell("bf16_autocast", "memory_vs_fp32"), "ratio", where_t),
        Claim("FP16 range reaches down to 6e-8 (smallest subnormal)", "lecture 7.2", 6e-8,
              float(format_table().set_index("format").loc["fp16", "smallest_subnormal"]),
              "", "torch.finfo / bit pattern", rel_tol=0.05),
        Claim("a gradient of 1e-7 becomes 0 in FP16", "lecture 7.3 (loss scaling)", 0.0,
              float(fp16_1e7), "", "torch cast (it is a subnormal, 2^-23)"),
        Claim("BF16 is more stable: no real gradient flushed to 0 (logit grads, unscaled)",
              "lecture 7.2", 0.0, share("bf16"), "share", where_u),
        Claim("a loss scale of 1024 rescues the gradients FP16 flushes to 0 (share of "
              "flushed logit grads rescued)", "lecture 7.3", 1.0,
              1 - share("fp16", 10) / share("fp16"), "share", where_u, rel_tol=0.01),
        Claim("BF16 training reaches FP32's loss (mean of last 5 steps)", "lecture 7.3",
              cell("fp32", "final_loss"), cell("bf16_autocast", "final_loss"), "nats",
              where_t, rel_tol=0.02),
    ])
