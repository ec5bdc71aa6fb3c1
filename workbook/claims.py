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

from workbook.config import WorkbookError, check_flag, check_range

KINDS = ("equal", "at_least", "at_most")
NO_INTERVAL = "n/a (one seed: no interval to judge so small an effect by)"


@dataclass(frozen=True)
class Claim:
    """One lecture claim beside its measurement. The verdict is computed from these fields.

    ``kind``: ``equal`` (a number; holds within ``rel_tol``, or within ``abs_tol`` where the
    claim says so, e.g. a prediction of zero), ``at_least`` / ``at_most`` (a budget or a bound).
    ``low``/``high``: the measurement's interval (bootstrap, seeds); where given, the claim holds
    only if the predicted value lies inside it, and a bound (``at_least``/``at_most``: "A beats
    B", the difference against 0) holds only if the whole interval clears it ("inconclusive"
    while the bound lies inside). With an interval *and* a stated tolerance (``abs_tol``:
    predicted ± abs_tol; ``factor``: predicted ×/÷ factor) an ``equal`` claim is "the value is
    within the tolerance": it holds only if the whole interval lies inside that band, is off if
    the interval lies wholly outside it, and is inconclusive where it straddles an edge.
    """

    claim: str            # the lecture's words, paraphrased
    source: str           # who says so: "lecture", "FlashAttention paper, Fig. 2", ...
    predicted: float      # the claimed number
    measured: float       # what this machine (or the recorded device) did
    unit: str = ""
    where: str = ""       # device and date of the measurement
    rel_tol: float = 0.15  # how far off still counts as "holds"
    abs_tol: float = 0.0   # |measured - predicted| that still holds (stated in the claim)
    low: float = math.nan  # the measurement's interval, if it has one
    high: float = math.nan
    kind: str = "equal"
    factor: float = 0.0    # with an interval: holds if it lies inside [predicted/f, predicted·f]
    # Only an interval can judge it (a gap that is small against the spread between seeds):
    # without one (a single seed) the verdict is "n/a", never a guess at the noise.
    needs_interval: bool = False
    # A bound's claim (at_least/at_most, with an interval): the interval's end in the best case
    # the test allows (every item going the claim's way). Where even that does not clear the
    # bound, no outcome could make the claim hold, and an inconclusive verdict says so.
    best_bound: float = math.nan

    def __post_init__(self) -> None:  # bad numbers or a bad kind: one line, here
        judge(self)


def judge(claim: Claim) -> str:
    """The verdict of ``claim``, from its fields (:func:`verdict`)."""
    return verdict(claim.predicted, claim.measured, claim.rel_tol, abs_tol=claim.abs_tol,
                   interval=(claim.low, claim.high), kind=claim.kind, factor=claim.factor,
                   needs_interval=claim.needs_interval, best_bound=claim.best_bound)


def _number(name: str, value: object) -> float:
    """``value`` as a float: NaN passes (it means "not measured"); None, text and ±inf do not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isinf(value):
        raise WorkbookError(f"{name}={value!r} is not allowed; allowed: a finite number, or "
                            "NaN for 'not measured'")
    return float(value)


def verdict(predicted: float, measured: float, rel_tol: float = 0.15, *, abs_tol: float = 0.0,
            interval: tuple[float, float] | None = None, kind: str = "equal",
            factor: float = 0.0, needs_interval: bool = False,
            best_bound: float = math.nan) -> str:
    """'holds' (with the reason where it is not a plain ratio), 'off: measured 1.3× lower',
    'missed: …' for a bound, or 'n/a (not measured)'. Never typed by hand: a claims table
    calls this.

    NaN on either side means "not measured here"; ±inf, None or text is a one-line error.
    """
    if kind not in KINDS:
        raise WorkbookError(f"kind={kind!r} is not allowed; choose one of: {', '.join(KINDS)}")
    predicted, measured = _number("predicted", predicted), _number("measured", measured)
    check_range("rel_tol", rel_tol, 0.0, 10.0)
    check_range("abs_tol", abs_tol, 0.0, 1e15)
    if factor != 0.0:
        check_range("factor", factor, 1.0, 1e6)
    if interval is None:
        interval = (math.nan, math.nan)
    if not isinstance(interval, (tuple, list)) or len(interval) != 2:
        raise WorkbookError(f"interval={interval!r} is not allowed; allowed: None or "
                            "(low, high), the measurement's interval")
    low, high = interval
    low, high = _number("low", low), _number("high", high)
    check_flag("needs_interval", needs_interval)
    best_bound = _number("best_bound", best_bound)
    if math.isnan(predicted) or math.isnan(measured):
        return "n/a (not measured)"
    if needs_interval and (math.isnan(low) or math.isnan(high)):
        return NO_INTERVAL
    if kind in ("at_least", "at_most") and not (math.isnan(low) or math.isnan(high)):
        # "A beats B" with the measurement's interval (seeds, bootstrap): it holds only when the
        # whole interval clears the bound, is wrong when the whole interval lies on the other
        # side, and is no verdict either way while the bound lies inside it
        said = _bound_by_interval(predicted, low, high, kind)
        short = best_bound > predicted if kind == "at_most" else best_bound < predicted
        if said.startswith("inconclusive") and short:   # NaN compares False: no such bound
            said = (f"inconclusive: this test cannot resolve {fixed(predicted)}; even its best "
                    f"case bounds it at {fixed(best_bound)} ({fixed(predicted)} inside "
                    f"[{fixed(low)}, {fixed(high)}])")
        return said
    if kind in ("at_least", "at_most") and abs_tol > 0:
        # "A beats B" with a stated resolution: a gap inside it is noise, not a verdict
        gap = (measured - predicted) * (1 if kind == "at_least" else -1)
        if abs(gap) <= abs_tol:
            return (f"inconclusive: |Δ| = {fixed(abs(gap), 2)} ≤ {fixed(abs_tol, 2)} "
                    "(within noise)")
        return (f"holds (by {fixed(gap, 2)} > {fixed(abs_tol, 2)})" if gap > 0
                else f"wrong: the other way, by {fixed(-gap, 2)}")
    if kind == "at_least":
        return (f"holds ({fixed(measured)} ≥ {fixed(predicted)})" if measured >= predicted
                else f"missed: {fixed(measured)} < {fixed(predicted)}")
    if kind == "at_most":
        return (f"holds ({fixed(measured)} ≤ {fixed(predicted)})" if measured <= predicted
                else f"missed: {fixed(measured)} > {fixed(predicted)}")
    if not (math.isnan(low) or math.isnan(high)):
        span = f"[{fixed(low)}, {fixed(high)}]"
        if abs_tol > 0 or factor > 0:   # "within the tolerance", judged by the whole interval
            return _band_verdict(predicted, low, high, abs_tol, factor)
        if low <= predicted <= high:
            return f"holds ({fixed(predicted)} inside {span})"
        side = "above" if predicted > high else "below"
        return f"off: {fixed(predicted)} lies {side} the measured {span}"
    gap = abs(measured - predicted)
    if gap <= abs_tol:
        return "holds" if abs_tol == 0 else (
            f"holds (|Δ| = {fixed(gap, 2)} ≤ {fixed(abs_tol, 2)})")
    if (predicted == 0 or measured == 0) and abs_tol > 0:  # the claim's own tolerance
        return f"off: |Δ| = {fixed(gap, 2)} > {fixed(abs_tol, 2)}"
    if predicted == 0 or measured == 0:
        return "wrong (one side is zero)"
    ratio = measured / predicted
    if ratio < 0:
        return "wrong (opposite signs)"
    if abs(ratio - 1) <= rel_tol:
        return "holds"
    times = ratio if ratio >= 1 else 1 / ratio
    # "higher"/"lower" compares magnitudes: -3 against a predicted -1 is 3× higher in size
    direction = "higher" if ratio > 1 else "lower"
    if times < 1.5:   # "1.1× lower" hides an 11 % gap: the percentage says it plainly
        return f"off: |Δ| = {fixed(gap, 2)}, {abs(ratio - 1):.1%} {direction}"
    return f"off: measured {fixed(times, 2)}× {direction}"


def fixed(value: float, digits: int = 3) -> str:
    """A number for a verdict's text: ``digits`` significant digits in fixed notation (1,235 ·
    0.00123), never 1e+03 or 1.23×10³ for an ordinary number; only a very large or tiny one
    (beyond 10⁷ or under 10⁻⁴) as 2.5×10⁹, the way :func:`readable` writes it."""
    if math.isfinite(value) and (value == 0 or 1e-4 <= abs(value) < 1e7):
        text = f"{value:,.{digits}g}"
        return f"{value:,.0f}" if "e" in text else text  # 1234.5 -> 1,234 (not 1.23e+03)
    return _power_of_ten(value, digits)


def _power_of_ten(value: float, digits: int) -> str:
    """2.5×10⁹ from the formatter's own rounding (3.645e25 -> 3.65×10²⁵, where dividing by
    10²⁵ first gave 3.6449999… and 3.64)."""
    text = f"{value:.{digits}g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}×10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def _bound_by_interval(predicted: float, low: float, high: float, kind: str) -> str:
    if low > high:
        raise WorkbookError(f"interval=({low}, {high}) is not allowed; allowed: low <= high")
    span = f"[{fixed(low)}, {fixed(high)}]"
    above, below = low > predicted, high < predicted
    if (above and kind == "at_least") or (below and kind == "at_most"):
        side = "above" if kind == "at_least" else "below"
        return f"holds ({span} lies {side} {fixed(predicted)})"
    if above or below:
        side = "above" if above else "below"
        return f"wrong: the other way ({span} lies {side} {fixed(predicted)})"
    return f"inconclusive: {fixed(predicted)} inside {span} (the data cannot tell)"


def _band(predicted: float, abs_tol: float, factor: float) -> tuple[float, float, str]:
    if factor > 0:
        return predicted / factor, predicted * factor, f"{fixed(predicted)} ×/÷ {fixed(factor)}"
    return predicted - abs_tol, predicted + abs_tol, f"{fixed(predicted)} ± {fixed(abs_tol, 2)}"


def _band_verdict(predicted: float, low: float, high: float, abs_tol: float,
                  factor: float) -> str:
    lo, hi, band = _band(predicted, abs_tol, factor)
    span = f"[{fixed(low)}, {fixed(high)}]"
    if lo <= low and high <= hi:
        return f"holds ({span} inside {band})"
    if high < lo or low > hi:
        return f"off: {span} lies outside {band}"
    return f"inconclusive: {span} straddles an edge of {band}"


def holds_if(claim: Claim) -> str:
    """The rule a claim is judged by, in words: the table states its tolerance."""
    if claim.kind in ("at_least", "at_most"):
        sign = "≥" if claim.kind == "at_least" else "≤"
        if claim.needs_interval or (math.isfinite(claim.low) and math.isfinite(claim.high)):
            word = "above" if claim.kind == "at_least" else "below"
            return f"the measured interval lies wholly {word} {fixed(claim.predicted)}"
        if claim.abs_tol:
            word = "above" if claim.kind == "at_least" else "below"
            return (f"{word} {fixed(claim.predicted)} by more than "
                    f"{fixed(claim.abs_tol, 2)} (noise)")
        return f"{sign} {fixed(claim.predicted)}"
    if math.isfinite(claim.low) and math.isfinite(claim.high):
        if claim.abs_tol > 0 or claim.factor > 0:
            band = _band(claim.predicted, claim.abs_tol, claim.factor)[2]
            return f"measured interval inside {band}"
        return "claimed value inside the measured interval"
    parts = []
    if claim.rel_tol and claim.predicted != 0:  # a ratio to 0 means nothing: verdict skips it
        parts.append(f"within {100 * claim.rel_tol:.3g}%")   # 0.1 %, not "0%"
    if claim.abs_tol:
        parts.append(f"within ±{fixed(claim.abs_tol, 2)}")
    return " or ".join(parts) or "equal"


def direction_verdict(holds: bool, measured: float) -> str:
    """For a claim about a direction ("A beats B"), not a number: 'holds', 'wrong', or n/a."""
    if not isinstance(holds, (bool, np.bool_)):
        raise WorkbookError(f"holds={holds!r} is not allowed; allowed: True or False")
    if math.isnan(_number("measured", measured)):
        return "n/a (not measured)"
    return "holds" if holds else "wrong"


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def readable(value: object) -> str:
    """A number as a reader wants it in a table: 1,979 · 0.0956 · 3.15×10²³ (never 3.15e+23),
    an empty cell for NaN; anything else as its text."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "" if value is None else str(value)
    if math.isnan(value):
        return ""
    # the same bounds as :func:`fixed`, so a table and its verdict write one number one way
    if value == 0 or 1e-4 <= abs(value) < 1e7:
        text = f"{value:,.4g}"
        return f"{value:,.0f}" if abs(value) >= 1e4 or "e" in text else text  # 9,999.7: 10,000
    return _power_of_ten(value, 3)


class ClaimsTable(pd.DataFrame):
    """A claims table: a plain DataFrame to code, and in a notebook every cell in full (the
    ``where`` column is the provenance; pandas would cut it at 50 characters) with numbers in
    fixed notation."""

    @property
    def _constructor(self):  # pandas operations keep the type
        return ClaimsTable

    def _repr_html_(self) -> str:
        numeric = [c for c in ("predicted", "measured", "low", "high") if c in self.columns]
        # escape: a claim's words may hold '<' ("None < ZeRO-1"), which HTML reads as a tag
        styled = pd.DataFrame(self).style.format(escape="html") \
            .format(_cell, subset=numeric).hide(axis="index")
        return styled.set_properties(**{"text-align": "left", "white-space": "normal"}) \
            .to_html()

    def __repr__(self) -> str:  # the text view too: no cell cut at 50 characters ("2026-11-...")
        numeric = [c for c in ("predicted", "measured", "low", "high") if c in self.columns]
        shown = pd.DataFrame(self).astype(object)
        for column in numeric:
            shown[column] = [_cell(v) for v in self[column]]
        with pd.option_context("display.max_colwidth", None, "display.width", None,
                               "display.max_columns", None):
            return shown.to_string(index=False)


def _cell(value) -> str:
    """A number of a claims table; "–" where there is none (a claim without an interval has
    no low/high: a blank cell read as a value lost)."""
    return readable(value) or "–"


def claims_table(claims: list[Claim]) -> pd.DataFrame:
    """One row per claim, with the verdict computed, never typed in, and the rule it was
    judged by (``holds if``); the measured interval where a claim has one. Shown in full,
    numbers in fixed notation (:class:`ClaimsTable`)."""
    frame = pd.DataFrame([asdict(c) for c in claims])
    frame["holds if"] = [holds_if(c) for c in claims]
    frame["verdict"] = [judge(c) for c in claims]
    drop = ["rel_tol", "abs_tol", "kind", "factor", "needs_interval", "best_bound"]
    if frame[["low", "high"]].isna().all().all():
        drop += ["low", "high"]
    return ClaimsTable(frame.drop(columns=drop))


def caption(table: pd.DataFrame) -> str:
    """Markdown, one bullet per claim of a :func:`claims_table`: the claim, its verdict, the
    measured and predicted numbers and where they were measured. The prose under a claims table
    is this, printed from the rows, so it cannot drift from them."""
    if not isinstance(table, pd.DataFrame) or not {"claim", "verdict", "measured",
                                                   "predicted"} <= set(table.columns):
        raise WorkbookError("table is not allowed; allowed: a claims_table(...) DataFrame")
    lines = []
    for _, row in table.iterrows():
        unit = f" {row['unit']}" if row.get("unit") else ""
        where = f" ({row['where']})" if row.get("where") else ""
        measured = readable(row["measured"])
        lines.append(f"* **{row['claim']}**: {row['verdict']}. " + (
            f"Measured {measured}{unit} against {readable(row['predicted'])}{unit}{where}."
            if measured else f"Not measured{where}."))
    return "\n".join(lines) if lines else "*No claims to check yet.*"
