"""4-per-1000 progress: the rate of change of SOC stocks, its confidence, and detectability.

The "4 per 1000" initiative (COP21, 2015; Minasny, B. et al. 2017, Geoderma
292, 59-86) asks for stocks to rise by 4 ‰ of the baseline per year.

Rate: weighted least squares of stock on time with weights 1/u_i² (u_i the
standard uncertainty of each stock estimate). The slope's variance is
(1/Σw(t - t̄)²) × max(1, χ²/(n - 2)): the stated uncertainties when the
scatter agrees with them, inflated by the reduced chi-square (Birge ratio)
when the series scatters more (real year-to-year variation), never shrunk
below them. Confidence interval with Student's t, n - 2 degrees of freedom.
Observations are assumed independent (no autocorrelation correction).

Detectability (power analysis): a trend b is detected by a two-sided test at
level α with power 1 - β when |b| >= (t_{1-α/2} + t_{1-β}) · se(b)
(e.g. Smith, P. 2004, Global Change Biology 10, 1878-1883, for soil carbon;
standard sample-size formula). Assumptions stated: α = 0.05 (95 %
confidence), power 80 %, equally spaced independent observations with the
series' effective noise σ_e, for which se(b) = σ_e / (Δ sqrt(n (n² - 1)/12)).
The minimum detectable change between two single estimates (Smith 2004) is
(z_{1-α/2} + z_{1-β}) · sqrt(2) · σ_e.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration._stats import norm_ppf, t_ppf

TARGET_PER_MILLE = 4.0
ALPHA = 0.05
POWER = 0.80
MAX_YEARS = 1000


@dataclass(frozen=True)
class Trend:
    """What a stock series says about 4-per-1000 progress (stocks in Mg C/ha, time in years)."""

    n: int
    rate: float                          # Mg C/ha/yr
    rate_se: float
    rate_ci: tuple[float, float]         # 1 - alpha confidence interval
    baseline: float                      # fitted stock at the first time
    per_mille: float                     # rate / baseline × 1000, ‰/yr
    per_mille_ci: tuple[float, float]
    target_per_mille: float
    noise_sd: float                      # σ_e, effective noise of one stock estimate
    min_detectable_rate: float           # Mg C/ha/yr, for this series' design and noise
    min_detectable_per_mille: float
    min_detectable_change: float         # Mg C/ha between two single estimates
    years_to_detect_target: float        # years of monitoring at the series' spacing
    interval_years: float
    alpha: float
    power: float

    @property
    def change_detected(self) -> bool:
        """The confidence interval excludes zero."""
        return self.rate_ci[0] > 0 or self.rate_ci[1] < 0

    @property
    def target_met(self) -> bool:
        """The whole confidence interval is at or above the 4 ‰ target."""
        return self.per_mille_ci[0] >= self.target_per_mille

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(change_detected=self.change_detected, target_met=self.target_met)
        return d


def stock_trend(times_years: Any, stocks: Any, uncertainties: Any, *, alpha: float = ALPHA,
                power: float = POWER, target_per_mille: float = TARGET_PER_MILLE) -> Trend:
    """Annual rate of change of SOC stock with its CI, and how detectable 4 ‰/yr is."""
    t = np.asarray(times_years, dtype=float).ravel()
    s = np.asarray(stocks, dtype=float).ravel()
    u = np.broadcast_to(np.asarray(uncertainties, dtype=float), s.shape).ravel()
    n = int(t.shape[0])
    if s.shape[0] != n:
        raise ValueError(f"{n} times but {s.shape[0]} stocks")
    if n < 3:
        raise ValueError(f"a trend with a confidence interval needs at least 3 stock estimates, got {n}")
    if not (np.isfinite(t).all() and np.isfinite(s).all() and np.isfinite(u).all()):
        raise ValueError("times, stocks and uncertainties must be finite")
    if (u <= 0).any():
        raise ValueError("every stock estimate needs an uncertainty > 0")
    w = 1.0 / u**2
    tw = float(w @ t / w.sum())
    sw = float(w @ s / w.sum())
    sxx = float(w @ (t - tw) ** 2)
    if sxx <= 0:
        raise ValueError("all stock estimates are at the same time: no rate can be estimated")
    b = float(w @ ((t - tw) * (s - sw)) / sxx)
    a = sw - b * tw
    resid = s - (a + b * t)
    dof = n - 2
    birge = max(1.0, float(w @ resid**2) / dof)
    se = math.sqrt(birge / sxx)
    tq = t_ppf(1.0 - alpha / 2.0, dof)
    ci = (b - tq * se, b + tq * se)
    t0 = float(t.min())
    baseline = a + b * t0
    if baseline <= 0:
        raise ValueError(f"fitted baseline stock {baseline:.3g} Mg C/ha is not positive")
    pm = 1000.0 / baseline
    noise = math.sqrt(birge * n / float(w.sum()))
    mdr = (tq + t_ppf(power, dof)) * se
    mdc = (norm_ppf(1.0 - alpha / 2.0) + norm_ppf(power)) * math.sqrt(2.0) * noise
    interval = float(np.median(np.diff(np.sort(t))))
    interval = interval if interval > 0 else 1.0
    years = years_to_detect(target_per_mille / 1000.0 * baseline, noise, interval, alpha=alpha, power=power)
    return Trend(n, b, se, ci, baseline, b * pm, (ci[0] * pm, ci[1] * pm), target_per_mille, noise,
                 mdr, mdr * pm, mdc, years, interval, alpha, power)


def years_to_detect(rate: float, noise_sd: float, interval_years: float = 1.0, *, alpha: float = ALPHA,
                    power: float = POWER) -> float:
    """Years of monitoring (one estimate every `interval_years`) to detect `rate` (same units/yr).

    Smallest n >= 3 with rate >= (t_{1-α/2,n-2} + t_{power,n-2}) σ / (Δ sqrt(n(n²-1)/12));
    returns (n - 1) Δ, or inf beyond MAX_YEARS.
    """
    if rate <= 0 or noise_sd < 0 or interval_years <= 0:
        raise ValueError("rate and interval must be > 0 and noise >= 0")
    if noise_sd == 0:
        return 2 * interval_years
    n = 3
    while (n - 1) * interval_years <= MAX_YEARS:
        dof = n - 2
        se = noise_sd / (interval_years * math.sqrt(n * (n * n - 1) / 12.0))
        if rate >= (t_ppf(1.0 - alpha / 2.0, dof) + t_ppf(power, dof)) * se:
            return (n - 1) * interval_years
        n += 1
    return math.inf
