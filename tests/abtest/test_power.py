"""Sample size, MDE and power against the textbook figures, worked by hand."""

from __future__ import annotations

import math

import pytest

from shopformer.abtest import power as pw

Z_975, Z_80 = 1.959963985, 0.841621234


def test_sample_size_for_10_to_11_percent_is_the_textbook_14751():
    # pooled-variance formula: n = (z_a sqrt(2 pbar qbar) + z_b sqrt(p1 q1 + p2 q2))^2 / delta^2
    pbar = 0.105
    by_hand = (
        Z_975 * math.sqrt(2 * pbar * (1 - pbar)) + Z_80 * math.sqrt(0.1 * 0.9 + 0.11 * 0.89)
    ) ** 2 / 0.01**2
    assert by_hand == pytest.approx(14_750.6, abs=0.5)
    assert pw.proportion_sample_size(0.1, 0.01, 0.05, 0.8) == (14_751, 14_751)


def test_power_and_mde_invert_the_sample_size():
    n_a, n_b = pw.proportion_sample_size(0.03, 0.0015, 0.05, 0.8)
    assert pw.proportion_power(0.03, 0.0315, n_a, n_b, 0.05) == pytest.approx(0.8, abs=1e-3)
    assert pw.proportion_mde(0.03, n_a, n_b, 0.05, 0.8) == pytest.approx(0.0015, rel=1e-3)
    assert pw.proportion_mde(0.03, 10, 10, 0.05, 0.8) > 0.2  # tiny tests detect only huge lifts
    assert pw.proportion_power(0.03, 0.03, 10_000, 10_000, 0.05) == pytest.approx(0.025, abs=1e-3)


def test_unequal_split_needs_more_units_in_all():
    equal = sum(pw.proportion_sample_size(0.05, 0.005, ratio=1.0))
    skewed = pw.proportion_sample_size(0.05, 0.005, ratio=0.25)
    assert skewed[1] == math.ceil(skewed[0] * 0.25)
    assert sum(skewed) > equal
    assert pw.proportion_power(0.05, 0.055, *skewed, 0.05) == pytest.approx(0.8, abs=2e-3)


def test_means_by_hand():
    # n = (z_a + z_b)^2 sd^2 (1 + 1/k) / delta^2 = 7.849 * 100 * 2 / 1 = 1,569.8 -> 1,570
    assert pw.mean_sample_size(10.0, 1.0, 0.05, 0.8) == (1570, 1570)
    assert pw.mean_mde(10.0, 1570, 1570, 0.05, 0.8) == pytest.approx(1.0, rel=1e-3)
    assert pw.mean_power(1.0, 10.0, 1570, 1570, 0.05) == pytest.approx(0.8, abs=1e-3)


def test_impossible_requests_are_value_errors():
    with pytest.raises(ValueError, match="two different rates"):
        pw.proportion_sample_size(0.98, 0.05)
    with pytest.raises(ValueError, match="non-zero"):
        pw.mean_sample_size(1.0, 0.0)
