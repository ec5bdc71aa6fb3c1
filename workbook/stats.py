"""The intervals the workbook's claims are judged on, written once.

A claim holds only when its interval clears the alternative, so how an interval is computed is
part of every verdict. Three kinds are used:

* :func:`t_interval`: the mean over a few independent seeds and its Student-t interval (the
  seeds' spread; none from a single seed);
* :func:`share_gap_interval`: the difference of two shares counted over items (exact-match
  answers, refused requests), Agresti–Caffo: one right and one wrong item added to each share,
  so a share of 0 or 1 still has an error (a plain normal interval of 0/24 against 0/24 has
  width 0, which would let three seeds that refuse nothing "prove" no change);
* :func:`median_interval`: a distribution-free interval of a median from its order statistics
  (timings, where one slow or fast repeat must not set the verdict).

The topic modules wrap these with their own rules for missing values (a NaN seed dropped, or
refused with one line).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from workbook.config import WorkbookError, check_range


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of finite ``values``: the mean and its Student-t interval at
    ``level`` (NaN bounds for a single value: one seed has no spread to measure)."""
    check_range("level", level, 0.5, 0.999)
    data = np.asarray([float(v) for v in values], dtype=float)
    if data.size == 0 or not np.isfinite(data).all():
        raise WorkbookError(f"values={list(values)!r} are not allowed; allowed: a non-empty "
                            "list of finite numbers")
    mean = float(data.mean())
    if data.size < 2:
        return mean, math.nan, math.nan
    from scipy import stats  # only here: importing scipy.stats costs seconds

    half = float(stats.t.ppf(0.5 + level / 2, data.size - 1) * data.std(ddof=1)
                 / math.sqrt(data.size))
    return mean, mean - half, mean + half


def share_gap_interval(p: float, q: float, n_p: int, n_q: int, z: float = 2.0
                       ) -> tuple[float, float]:
    """The interval of ``q - p``, two shares over ``n_p`` and ``n_q`` items: Agresti–Caffo
    (one right and one wrong item added to each), ``z`` standard errors each side (2 by
    default; 1.96 for 95 %), cut to [-1, 1]."""
    check_range("p", p, 0.0, 1.0)
    check_range("q", q, 0.0, 1.0)
    check_range("n_p", n_p, 1, 10**9)
    check_range("n_q", n_q, 1, 10**9)
    check_range("z", z, 0.1, 10.0)
    pp, qq = (p * n_p + 1) / (n_p + 2), (q * n_q + 1) / (n_q + 2)
    half = z * math.sqrt(pp * (1 - pp) / (n_p + 2) + qq * (1 - qq) / (n_q + 2))
    return max(qq - pp - half, -1.0), min(qq - pp + half, 1.0)


def median_interval(values: Sequence[float], coverage: float = 0.8
                    ) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of ``values``: the order
    statistics x₍ⱼ₎ and x₍ₙ₊₁₋ⱼ₎ with the largest j whose interval still covers the median
    with probability ≥ ``coverage`` (each value falls below the median with probability ½,
    so the coverage is 1 − 2·P(Binomial(n, ½) < j)). Returns (low, high, its coverage); with
    too few values for ``coverage`` it is the min and max, and their own (smaller) coverage."""
    xs = sorted(float(v) for v in values)
    check_range("coverage", coverage, 0.01, 0.999)
    if not xs or any(math.isnan(x) for x in xs):
        raise WorkbookError(f"median_interval needs ≥ 1 number, no NaN; got {len(xs)} values")
    n = len(xs)

    def cover(j: int) -> float:  # P(x₍ⱼ₎ ≤ median ≤ x₍ₙ₊₁₋ⱼ₎)
        return 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n

    j = 1
    while j + 1 <= (n + 1) // 2 and cover(j + 1) >= coverage:
        j += 1
    return xs[j - 1], xs[n - j], cover(j)
