"""4-per-1000 trend, its confidence interval and detectability against hand-computed cases."""

import math

import pytest

from calibration.trend import stock_trend, years_to_detect

T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105}   # Student t, 0.975
T80 = {1: 1.376381920, 2: 1.060660172, 3: 0.978472312, 4: 0.940964577}     # Student t, 0.80


def test_exact_line_with_equal_uncertainties_by_hand():
    # Stocks 50, 50.2, 50.4, 50.6, 50.8 at years 0-4, u = 0.5 each: slope 0.2 Mg C/ha/yr exactly.
    tr = stock_trend([0, 1, 2, 3, 4], [50, 50.2, 50.4, 50.6, 50.8], 0.5)
    assert tr.rate == pytest.approx(0.2)
    assert tr.baseline == pytest.approx(50.0)
    assert tr.per_mille == pytest.approx(4.0)                 # exactly the 4 ‰ target
    # No scatter: se = u / sqrt(Σ(t - t̄)²) = 0.5 / sqrt(10)
    se = 0.5 / math.sqrt(10)
    assert tr.rate_se == pytest.approx(se)
    assert tr.rate_ci == pytest.approx((0.2 - T975[3] * se, 0.2 + T975[3] * se), rel=1e-8)
    assert tr.min_detectable_rate == pytest.approx((T975[3] + T80[3]) * se, rel=1e-8)
    assert tr.min_detectable_change == pytest.approx((1.959963985 + 0.841621234) * math.sqrt(2) * 0.5, rel=1e-8)
    assert tr.noise_sd == pytest.approx(0.5)
    assert not tr.target_met                                  # the CI reaches well below 4 ‰


def test_scatter_beyond_the_stated_uncertainty_widens_the_interval():
    # Residuals +1, -1, -1, +1 around a flat line at 60 with u = 0.1: chi² = 4/0.01 = 400, dof 2.
    tr = stock_trend([0, 1, 2, 3], [61, 59, 59, 61], 0.1)
    assert tr.rate == pytest.approx(0.0, abs=1e-12)
    sxx = 5 / 0.01                                            # Σ w (t - t̄)² = (2.25+0.25+0.25+2.25)/0.01
    assert tr.rate_se == pytest.approx(math.sqrt((400 / 2) / sxx))
    assert not tr.change_detected


def test_weights_follow_the_uncertainties():
    # A very uncertain outlier barely moves the weighted slope.
    tr = stock_trend([0, 1, 2, 3], [40, 40.4, 60, 41.2], [0.2, 0.2, 50.0, 0.2])
    assert tr.rate == pytest.approx(0.4, abs=0.01)


def test_years_to_detect_by_hand():
    # rate 0.2, noise 0.5, yearly: n=3: se = 0.5/sqrt(2) = 0.354, need (12.706+1.376)·0.354 = 4.98 > 0.2
    # n years until 0.2 >= (t975(n-2) + t80(n-2)) · 0.5 / sqrt(n(n²-1)/12)
    def needed(n):
        from scipy import stats
        return (stats.t.ppf(0.975, n - 2) + stats.t.ppf(0.8, n - 2)) * 0.5 / math.sqrt(n * (n * n - 1) / 12)
    n = next(n for n in range(3, 200) if 0.2 >= needed(n))
    assert years_to_detect(0.2, 0.5, 1.0) == n - 1
    assert years_to_detect(0.2, 0.5, 2.0) < 2 * (n - 1)       # sparser but same noise: fewer points needed per year
    assert years_to_detect(0.2, 0.0) == 2.0


def test_series_gives_years_needed_for_the_4_per_mille_target():
    tr = stock_trend([0, 1, 2, 3, 4], [50, 50.2, 50.4, 50.6, 50.8], 0.5)
    assert tr.years_to_detect_target == years_to_detect(0.004 * 50.0, 0.5, 1.0)
    assert tr.as_dict()["target_per_mille"] == 4.0


def test_too_few_points_or_missing_uncertainty_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        stock_trend([0, 1], [50, 51], 0.5)
    with pytest.raises(ValueError, match="uncertainty"):
        stock_trend([0, 1, 2], [50, 51, 52], [0.5, 0.0, 0.5])
