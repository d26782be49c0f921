"""4-per-1000 trend: hand-computed cases, and confidence intervals that cover the true rate as promised."""

import math

import numpy as np
import pytest

from calibration.trend import ar1_slope_se, fit_trend, stock_trend, years_to_detect

T975 = {2: 4.302652730, 3: 3.182446305}                   # Student t, 0.975
Z975, Z80 = 1.959963985, 0.841621234


def test_exact_line_with_known_uncertainties_uses_the_normal_quantile():
    # Stocks 50, 50.2, 50.4, 50.6, 50.8 at years 0-4, u = 0.5 each: slope 0.2 Mg C/ha/yr exactly.
    tr = stock_trend([0, 1, 2, 3, 4], [50, 50.2, 50.4, 50.6, 50.8], 0.5)
    assert tr.rate == pytest.approx(0.2)
    assert tr.baseline == pytest.approx(50.0)
    assert tr.per_mille == pytest.approx(4.0)                 # exactly the 4 ‰ target
    se = 0.5 / math.sqrt(10)                                  # u / sqrt(Σ(t - t̄)²)
    assert tr.rate_se == pytest.approx(se)
    assert tr.scale == "known" and tr.chi2 == pytest.approx(0.0, abs=1e-20)
    assert tr.rate_ci == pytest.approx((0.2 - Z975 * se, 0.2 + Z975 * se), rel=1e-8)
    assert tr.min_detectable_rate == pytest.approx((Z975 + Z80) * se, rel=1e-8)
    assert tr.min_detectable_change == pytest.approx((Z975 + Z80) * math.sqrt(2) * 0.5, rel=1e-8)
    assert tr.noise_sd == pytest.approx(0.5)
    assert not tr.target_met                                  # the CI reaches well below 4 ‰
    assert tr.phi == 0.0 and "fewer than" in tr.note          # 5 points: autocorrelation not estimated


def test_scatter_beyond_the_stated_uncertainty_switches_to_an_estimated_scale_and_says_so():
    # Residuals +1, -1, -1, +1 around a flat line at 60 with u = 0.1: chi² = 4/0.01 = 400, dof 2.
    tr = stock_trend([0, 1, 2, 3], [61, 59, 59, 61], 0.1)
    assert tr.rate == pytest.approx(0.0, abs=1e-12)
    assert tr.chi2 == pytest.approx(400.0) and tr.chi2_dof == 2 and tr.chi2_p < 1e-6
    assert tr.scatter_exceeds_uncertainty and tr.scale == "estimated"
    sxx = 5 / 0.01                                            # Σ w (t - t̄)²
    se = math.sqrt((400 / 2) / sxx)
    assert tr.rate_se == pytest.approx(se)
    assert tr.rate_ci[1] == pytest.approx(T975[2] * se, rel=1e-8)
    assert not tr.change_detected


def test_overstated_uncertainties_are_reported_not_hidden():
    rng = np.random.default_rng(3)
    t = np.arange(12.0)
    tr = stock_trend(t, 50 + 0.1 * t + rng.normal(0, 0.1, 12), 1.0)  # u ten times the real scatter
    assert tr.chi2_p > 0.999                                  # the scatter is far below what u claims
    assert not tr.scatter_exceeds_uncertainty and tr.scale == "known"


def test_weights_follow_the_uncertainties():
    # A very uncertain outlier barely moves the weighted slope.
    tr = stock_trend([0, 1, 2, 3], [40, 40.4, 60, 41.2], [0.2, 0.2, 50.0, 0.2])
    assert tr.rate == pytest.approx(0.4, abs=0.01)


def test_without_uncertainties_the_scale_is_estimated():
    tr = stock_trend([0, 1, 2, 3, 4], [50, 50.3, 50.3, 50.7, 50.8])
    assert tr.scale == "estimated" and tr.chi2 is None
    with pytest.raises(ValueError, match="known"):
        stock_trend([0, 1, 2], [50, 51, 52], scale="known")


def test_autocorrelated_residuals_are_detected_and_widen_the_interval():
    rng = np.random.default_rng(11)
    n, phi = 60, 0.6
    e = np.empty(n)
    e[0] = rng.normal()
    for i in range(1, n):
        e[i] = phi * e[i - 1] + math.sqrt(1 - phi * phi) * rng.normal()
    t = np.arange(n, dtype=float)
    s = 50 + 0.2 * t + 0.5 * e
    auto, plain = fit_trend(t, s, 0.5), fit_trend(t, s, 0.5, autocorrelation="none")
    assert auto.autocorrelated and 0.3 < auto.phi < 0.85
    assert auto.rate_se > 1.5 * plain.rate_se
    assert auto.n_effective == pytest.approx(n * (1 - auto.phi) / (1 + auto.phi))


def _series(rng, scenario: str, n: int):
    """(times, stocks, stated u) for one simulated series with true rate 0.2 Mg C/ha/yr."""
    t = np.arange(n, dtype=float)
    u = np.full(n, 0.5)
    if scenario == "uneven":
        t = np.cumsum(rng.uniform(0.2, 1.8, n))
    if scenario == "ar1":                                     # AR(1), phi 0.5, marginal sd = u
        e = np.empty(n)
        e[0] = rng.normal()
        for i in range(1, n):
            e[i] = 0.5 * e[i - 1] + math.sqrt(0.75) * rng.normal()
        return t, 50 + 0.2 * t + 0.5 * e, u
    if scenario == "estimated":                               # no stated uncertainty; true sd 1
        return t, 50 + 0.2 * t + rng.normal(0, 1.0, n), None
    return t, 50 + 0.2 * t + rng.normal(0, 1, n) * u, u


@pytest.mark.parametrize("scenario", ["white_known_u", "estimated", "uneven", "ar1"])
def test_95_percent_interval_covers_the_true_rate_95_percent_of_the_time(scenario):
    # 1,000 seeded series of 40 points each: the Monte Carlo standard error of a coverage is 0.7 points.
    rng = np.random.default_rng({"white_known_u": 1, "estimated": 2, "uneven": 3, "ar1": 4}[scenario])
    hits = 0
    for _ in range(1000):
        t, s, u = _series(rng, scenario, 40)
        lo, hi = fit_trend(t, s, u).rate_ci
        hits += lo <= 0.2 <= hi
    assert 0.93 <= hits / 1000 <= 0.97


def test_without_the_autocorrelation_correction_ar1_series_undercover():
    # The same AR(1) series with the correction switched off: the interval misses far more often.
    rng = np.random.default_rng(4)
    hits = 0
    for _ in range(300):
        t, s, u = _series(rng, "ar1", 40)
        lo, hi = fit_trend(t, s, u, autocorrelation="none").rate_ci
        hits += lo <= 0.2 <= hi
    assert hits / 300 < 0.88


def test_years_to_detect_by_hand():
    # n years until 0.2 >= (t975(n-2) + t80(n-2)) · 0.5 / sqrt(n(n²-1)/12)
    def needed(n):
        from scipy import stats
        return (stats.t.ppf(0.975, n - 2) + stats.t.ppf(0.8, n - 2)) * 0.5 / math.sqrt(n * (n * n - 1) / 12)
    n = next(n for n in range(3, 200) if 0.2 >= needed(n))
    assert years_to_detect(0.2, 0.5, 1.0) == n - 1
    assert years_to_detect(0.2, 0.5, 2.0) < 2 * (n - 1)       # sparser but same noise: fewer points needed per year
    assert years_to_detect(0.2, 0.0) == 2.0


def test_autocorrelation_lengthens_monitoring_as_weatherhead_predicts():
    # Weatherhead et al. (1998): years scale with ((1 + phi)/(1 - phi))^(1/3) = 1.44 for phi = 0.5.
    white, ar = years_to_detect(0.05, 0.5, 1.0), years_to_detect(0.05, 0.5, 1.0, phi=0.5)
    assert ar / white == pytest.approx(3 ** (1 / 3), rel=0.12)
    # The exact GLS slope error for phi = 0 is the textbook sigma / sqrt(Σ(t - t̄)²).
    assert ar1_slope_se(10, 0.5, 1.0, 0.0) == pytest.approx(0.5 / math.sqrt(82.5))


def test_series_gives_years_needed_for_the_4_per_mille_target():
    tr = stock_trend([0, 1, 2, 3, 4], [50, 50.2, 50.4, 50.6, 50.8], 0.5)
    assert tr.years_to_detect_target == years_to_detect(0.004 * 50.0, 0.5, 1.0, known_scale=True)
    d = tr.as_dict()
    assert d["target_per_mille"] == 4.0 and d["scale"] == "known" and "phi" in d


def test_too_few_points_or_missing_uncertainty_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        stock_trend([0, 1], [50, 51], 0.5)
    with pytest.raises(ValueError, match="uncertainty"):
        stock_trend([0, 1, 2], [50, 51, 52], [0.5, 0.0, 0.5])
