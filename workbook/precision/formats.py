"""Number formats: what FP32, TF32, FP16, BF16, FP8 and INT8 can hold, bit by bit.

:func:`format_table` reads range, smallest normal and subnormal, and epsilon from
``torch.finfo``/``iinfo`` and bit patterns; :func:`explore` shows any value's bits, its nearest
representable value and what was lost, in every format. TF32 has no torch dtype: it is FP32
whose 13 lowest mantissa bits the tensor cores ignore, emulated here on FP32 bit patterns.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from workbook.config import WorkbookError, check_choice, check_values
from workbook.hardware import detect

__all__ = ["FORMATS", "FORMAT_DTYPES", "check_formats", "mantissa_bits", "format_table", "cast",
           "round_trip", "explore", "parse_value", "fp8_support"]

FORMATS: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8")

# The torch dtype that stores each format. TF32 has none: it is FP32 whose 13 lowest mantissa
# bits the tensor cores ignore, so it is emulated on FP32 bit patterns below.
FORMAT_DTYPES: dict[str, torch.dtype] = {
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


def check_formats(formats: tuple[str, ...]) -> None:
    """A non-empty list of known formats (one line naming them otherwise)."""
    check_values("formats", formats)
    for fmt in formats:
        _check_format(fmt)


def mantissa_bits(fmt: str) -> int:
    """Stored mantissa (fraction) bits of ``fmt``: 23 for FP32, 10 for TF32 and FP16, 7 for BF16."""
    if fmt == "int8":
        return 7
    if fmt == "tf32":
        return 23 - _TF32_DROP
    # eps = 2**-mantissa_bits, exactly: the gap between 1 and the next representable number.
    return int(round(-math.log2(torch.finfo(FORMAT_DTYPES[fmt]).eps)))


def _total_bits(fmt: str) -> int:
    if fmt == "tf32":
        return 32 - _TF32_DROP
    dt = FORMAT_DTYPES[fmt]
    return torch.iinfo(dt).bits if fmt == "int8" else torch.finfo(dt).bits


def _from_bits(pattern: int, fmt: str) -> float:
    """The value a bit pattern stands for (FP32 pattern for TF32)."""
    width = 32 if fmt == "tf32" else _total_bits(fmt)
    as_int = _BITS_AS[width]
    if width < 32 and as_int.is_signed and pattern >= 1 << (width - 1):
        pattern -= 1 << width  # torch.tensor wants the signed value of the same bits
    elif width == 32 and pattern >= 1 << 31:
        pattern -= 1 << 32
    return torch.tensor([pattern], dtype=as_int).view(FORMAT_DTYPES[fmt]).double().item()


class FormatTable(pd.DataFrame):
    """:func:`format_table`'s frame: numbers to code (INT8's smallest subnormal is NaN, so the
    column stays numeric), and in a notebook that cell reads 'none (integer)', not NaN."""

    NONE = "none (integer)"

    @property
    def _constructor(self):  # pandas operations (set_index, loc) keep the type
        return FormatTable

    def _repr_html_(self) -> str:
        return pd.DataFrame(self).to_html(notebook=True, na_rep=self.NONE)

    def __repr__(self) -> str:
        return pd.DataFrame(self).to_string(na_rep=self.NONE)


def format_table() -> pd.DataFrame:
    """Range, smallest normal/subnormal, epsilon per format, from torch and bit patterns. INT8
    has no subnormal (an integer grid has no exponent): NaN, shown as 'none (integer)'."""
    rows = []
    for fmt in FORMATS:
        bits, mant = _total_bits(fmt), mantissa_bits(fmt)
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
            info = torch.finfo(FORMAT_DTYPES[fmt])
            largest, normal = float(info.max), float(info.smallest_normal)
        subnormal = _from_bits(1 << (_TF32_DROP if fmt == "tf32" else 0), fmt)
        rows.append({"format": fmt, "bits": bits, "exponent_bits": exp_bits,
                     "mantissa_bits": mant, "max": largest, "min": -largest,
                     "smallest_normal": normal, "smallest_subnormal": subnormal,
                     "epsilon": 2.0 ** -mant, "decimal_digits": math.log10(2 ** (mant + 1)),
                     "has_inf": fmt != "fp8_e4m3",
                     "torch_dtype": "torch.float32 (tensor cores drop 13 bits)"
                     if fmt == "tf32" else str(FORMAT_DTYPES[fmt])})
    return FormatTable(rows)


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
    return values.to(FORMAT_DTYPES[fmt])


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
    mant = mantissa_bits(fmt)
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
    check_formats(formats)
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
    machine = detect()
    if "fp8" in machine.dtypes:
        return f"FP8 matmul: supported on {machine.name}."
    why = (f"compute capability {'.'.join(map(str, machine.capability))}; FP8 tensor cores "
           "need 8.9+, Ada or Hopper" if machine.capability else "a CPU has no FP8 tensor cores")
    return (f"FP8 matmul: not supported on {machine.name} ({why}). FP8 casts and bit patterns "
            "are still exact here; FP8 throughput comes from the recorded H100 roofline.")

