"""The closing table of every notebook: each lecture claim, checked against a measurement.

    claims_table([
        Claim("bf16 matmul peak", "H100 datasheet", predicted=989.4, measured=790.0,
              unit="TFLOP/s"),
    ])
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from workbook.config import WorkbookError, check_range


@dataclass(frozen=True)
class Claim:
    claim: str            # the lecture's words, paraphrased
    source: str           # who says so: "lecture", "FlashAttention paper, Fig. 2", ...
    predicted: float      # the claimed number
    measured: float       # what this machine (or the recorded device) did
    unit: str = ""
    where: str = ""       # device and date of the measurement
    rel_tol: float = 0.15  # how far off still counts as "holds"

    def __post_init__(self) -> None:
        verdict(self.predicted, self.measured, self.rel_tol)  # bad numbers: one line, here


def _number(name: str, value: object) -> float:
    """``value`` as a float: NaN passes (it means "not measured"); None, text and ±inf do not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isinf(value):
        raise WorkbookError(f"{name}={value!r} is not allowed; allowed: a finite number, or "
                            "NaN for 'not measured'")
    return float(value)


def verdict(predicted: float, measured: float, rel_tol: float = 0.15) -> str:
    """'holds' within ``rel_tol``; otherwise 'off: measured 1.3× higher'; or 'n/a'.

    NaN on either side means "not measured here" ('n/a'); values of opposite signs cannot be
    a factor apart ('wrong (opposite signs)').
    """
    predicted, measured = _number("predicted", predicted), _number("measured", measured)
    check_range("rel_tol", rel_tol, 0.0, 10.0)
    if math.isnan(predicted) or math.isnan(measured):
        return "n/a (not measured)"
    if predicted == 0 or measured == 0:
        return "holds" if predicted == measured else "wrong (one side is zero)"
    ratio = measured / predicted
    if ratio < 0:
        return "wrong (opposite signs)"
    if abs(ratio - 1) <= rel_tol:
        return "holds"
    factor = ratio if ratio >= 1 else 1 / ratio
    # "higher"/"lower" compares magnitudes: -3 against a predicted -1 is 3× higher in size
    direction = "higher" if ratio > 1 else "lower"
    return f"off: measured {factor:.2g}× {direction}"


def direction_verdict(holds: bool, measured: float) -> str:
    """For a claim about a direction ("A beats B"), not a number: 'holds', 'wrong', or n/a."""
    if not isinstance(holds, (bool, np.bool_)):
        raise WorkbookError(f"holds={holds!r} is not allowed; allowed: True or False")
    if math.isnan(_number("measured", measured)):
        return "n/a (not measured)"
    return "holds" if holds else "wrong"


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """One row per claim, with the verdict computed, never typed in."""
    frame = pd.DataFrame([asdict(c) for c in claims])
    frame["verdict"] = [verdict(c.predicted, c.measured, c.rel_tol) for c in claims]
    return frame.drop(columns="rel_tol")
