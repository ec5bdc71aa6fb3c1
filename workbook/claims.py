"""The closing table of every notebook: each lecture claim, checked against a measurement.

    claims_table([
        Claim("bf16 matmul peak", "H100 datasheet", predicted=989.4, measured=790.0,
              unit="TFLOP/s"),
    ])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class Claim:
    claim: str            # the lecture's words, paraphrased
    source: str           # who says so: "lecture", "FlashAttention paper, Fig. 2", ...
    predicted: float      # the claimed number
    measured: float       # what this machine (or the recorded device) did
    unit: str = ""
    where: str = ""       # device and date of the measurement
    rel_tol: float = 0.15  # how far off still counts as "holds"


def verdict(predicted: float, measured: float, rel_tol: float = 0.15) -> str:
    """'holds' within ``rel_tol``; otherwise 'off by 1.3×' (measured vs predicted); or 'n/a'."""
    if any(not isinstance(v, (int, float)) or math.isnan(v) for v in (predicted, measured)):
        return "n/a (not measured)"
    if not (math.isfinite(predicted) and math.isfinite(measured)):  # inf: no ratio to name
        return "n/a (not a finite number)"
    if predicted == 0 or measured == 0:
        return "holds" if predicted == measured else "wrong (one side is zero)"
    ratio = measured / predicted
    if abs(ratio - 1) <= rel_tol:
        return "holds"
    factor = ratio if ratio >= 1 else 1 / ratio
    direction = "higher" if ratio > 1 else "lower"
    return f"off: measured {factor:.2g}× {direction}"


def direction_verdict(holds: bool, measured: float) -> str:
    """For a claim about a direction ("A beats B"), not a number: 'holds', 'wrong', or n/a."""
    if isinstance(measured, float) and math.isnan(measured):
        return "n/a (not measured)"
    return "holds" if holds else "wrong"


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """One row per claim, with the verdict computed, never typed in."""
    frame = pd.DataFrame([asdict(c) for c in claims])
    frame["verdict"] = [verdict(c.predicted, c.measured, c.rel_tol) for c in claims]
    return frame.drop(columns="rel_tol")
