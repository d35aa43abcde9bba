"""Calibration statistics on hand-made trade sets whose answers are computed by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.analytics.calibration import (
    MIN_TRADES,
    SignalTrade,
    bucket_of,
    calibrate,
    mean_lower_bound_90,
    reliability_points,
    strategy_report,
    t_90,
    wilson_interval,
)


def trades(strategy: str, confidence: float, results_in_r: list[float], risk: str = "10") -> list[SignalTrade]:
    return [SignalTrade(strategy, confidence, None, Decimal(str(r)) * Decimal(risk), Decimal(risk))
            for r in results_in_r]


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(8, 10)      # p = 0.8, n = 10: [0.490, 0.943]
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    low, high = wilson_interval(0, 10)      # no win at all still has an upper bound: 0.278
    assert (round(low, 3), round(high, 3)) == (0.0, 0.278)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_students_t_and_the_lower_bound_of_a_mean() -> None:
    assert t_90(1) == 3.078 and t_90(19) == 1.328
    assert t_90(30) == 1.310 and t_90(60) == pytest.approx(1.296, abs=0.001)   # Cornish-Fisher past the table
    # 14 wins of +2 R and 6 losses of -1 R: mean 1.1, sd 1.41049, se 0.315395, t(19) 1.328 -> 0.68115
    assert mean_lower_bound_90([2.0] * 14 + [-1.0] * 6) == pytest.approx(0.68115, abs=1e-4)
    assert mean_lower_bound_90([1.0]) is None


def test_buckets_are_tens_from_fifty_and_a_hundred_is_in_the_last() -> None:
    assert bucket_of(49.9) is None
    assert bucket_of(50) == (50, 60) and bucket_of(69.99) == (60, 70) and bucket_of(70) == (70, 80)
    assert bucket_of(100) == (90, 100)


def test_the_threshold_is_the_lowest_bucket_that_earns_with_90_percent_confidence() -> None:
    data = (trades("Bitcoin Pro", 65, [1.0] * 9 + [-1.0] * 11)           # 60-70: -0.1 R, loses
            + trades("Bitcoin Pro", 75, [2.0] * 14 + [-1.0] * 6)         # 70-80: +1.1 R, lower bound +0.68
            + trades("Bitcoin Pro", 85, [2.0] * 5))                      # 80-90: wins, but 5 trades
    [report] = calibrate(data)
    by_label = {bucket.label: bucket for bucket in report.buckets}
    assert by_label["60-70"].mean_r == pytest.approx(-0.1) and not by_label["60-70"].earns
    assert by_label["70-80"].mean_r == pytest.approx(1.1) and by_label["70-80"].earns
    assert by_label["70-80"].win_rate == 0.7 and by_label["80-90"].trades == 5 and not by_label["80-90"].earns
    assert report.suggested_threshold == 70
    assert "suggested threshold 70 %" in report.verdict


def test_too_little_data_is_said_not_guessed() -> None:
    report = strategy_report("Safe Trader", trades("Safe Trader", 75, [3.0] * (MIN_TRADES - 1)))
    assert report.suggested_threshold is None
    assert report.verdict.startswith("too little data: 19 trades")


def test_a_strategy_that_never_earns_gets_no_threshold() -> None:
    report = strategy_report("Trend Rider", trades("Trend Rider", 72, [1.0] * 10 + [-1.5] * 10)
                             + trades("Trend Rider", 91, [0.2] * 10 + [-0.3] * 10))
    assert report.suggested_threshold is None
    assert report.verdict.startswith("no bucket with enough trades earns")


def test_a_noisy_bucket_with_a_positive_mean_does_not_earn_without_confidence() -> None:
    # Mean +0.14 R but a huge spread: the lower bound is below zero.
    report = strategy_report("Range Scalper", trades("Range Scalper", 80, [5.0] * 11 + [-5.2] * 10))
    [bucket] = report.buckets
    assert bucket.mean_r > 0 and bucket.mean_r_lower_90 is not None and bucket.mean_r_lower_90 < 0
    assert report.suggested_threshold is None


def test_returns_are_in_units_of_risk_whatever_the_position_size() -> None:
    small = trades("X", 75, [1.0], risk="5")[0]
    large = trades("X", 75, [1.0], risk="500")[0]
    assert small.r_multiple == large.r_multiple == 1.0


def test_reliability_points_put_each_buckets_middle_against_its_win_rate() -> None:
    report = strategy_report("X", trades("X", 75, [1.0] * 3 + [-1.0]))
    assert reliability_points(report) == [{"confidence": 0.75, "winRate": 0.75, "low": pytest.approx(0.3006, abs=1e-4),
                                           "high": pytest.approx(0.9544, abs=1e-4), "trades": 4}]
