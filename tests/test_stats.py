"""workbook.stats: the intervals every claim is judged on, against scipy and hand counts, and
the topic modules' wrappers agreeing with them."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from workbook import stats
from workbook.config import WorkbookError


def test_t_interval_is_scipys_student_t():
    values = [0.31, 0.25, 0.28, 0.40]
    mean, low, high = stats.t_interval(values, 0.95)
    want = scipy_stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 4,
                                  scale=scipy_stats.sem(values))
    assert mean == pytest.approx(0.31) and (low, high) == pytest.approx(want)
    one = stats.t_interval([2.0])
    assert one[0] == 2.0 and math.isnan(one[1]) and math.isnan(one[2]), "one seed: no spread"
    for bad in ([], [1.0, math.nan]):
        with pytest.raises(WorkbookError, match="allowed: a non-empty list of finite numbers"):
            stats.t_interval(bad)


def test_share_gap_interval_adds_one_right_and_one_wrong_item():
    # 0 of 24 refused before and after: (0·24 + 1)/26 each side, two standard errors
    low, high = stats.share_gap_interval(0.0, 0.0, 24, 24)
    se = math.sqrt(2 * (1 / 26) * (25 / 26) / 26)
    assert (low, high) == pytest.approx((-2 * se, 2 * se)) and high > 0.1
    low, high = stats.share_gap_interval(0.0, 1.0, 200, 200)
    assert high == 1.0 and low < 1.0, "cut at 1, never of width 0"
    with pytest.raises(WorkbookError, match="allowed"):
        stats.share_gap_interval(1.5, 0.0, 10, 10)


def test_median_interval_uses_order_statistics():
    low, high, cover = stats.median_interval([7.0, 1.0, 5.0, 3.0, 9.0, 2.0, 8.0], 0.8)
    assert (low, high) == (2.0, 8.0) and cover == pytest.approx(1 - 2 * 8 / 128)


def test_the_topic_modules_use_the_same_intervals():
    from workbook import evaluation, lora, memory, sft

    values = [0.2, 0.35, 0.3]
    want = stats.t_interval(values)
    assert sft.mean_interval(values) == pytest.approx(want)
    assert lora.seed_interval(values) == pytest.approx(want)
    assert evaluation.mean_interval(values + [math.nan]) == pytest.approx(want), "NaN left out"
    assert sft.agresti_caffo(0.6, 0.5, 40, 0.95) == pytest.approx(
        stats.share_gap_interval(0.5, 0.6, 40, 40, z=scipy_stats.norm.ppf(0.975)))
    assert evaluation.share_gap_interval(0.5, 0.6, 40, 30) == pytest.approx(
        stats.share_gap_interval(0.5, 0.6, 40, 30, z=2.0))
    assert memory.median_interval is stats.median_interval
