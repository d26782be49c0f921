"""4-per-1000 progress: the rate of change of SOC stocks, a confidence interval that keeps its promise, detectability.

The "4 per 1000" initiative (COP21, 2015; Minasny, B. et al. 2017, Geoderma
292, 59-86) asks for stocks to rise by 4 ‰ of the baseline per year.

Model: s_i = a + b t_i + u_i η_i, with u_i the stated standard uncertainty
of each stock (all 1 when none is stated) and η a stationary first-order
autoregressive process in time: corr(η_i, η_j) = φ^(|t_i - t_j|/Δ), Δ the
median sampling interval (a continuous-time AR(1), so uneven spacing is
handled exactly; soil series are autocorrelated, φ 0.5-0.6 is usual). Its
precision matrix is tridiagonal, so generalised least squares is ordinary
least squares on the innovations η_i - ρ_i η_(i-1) over sqrt(1 - ρ_i²),
ρ_i = φ^((t_i - t_(i-1))/Δ) (Prais, S.J., Winsten, C.B. 1954, Cowles
Commission Discussion Paper 383, for equal spacing).

- φ is estimated by restricted maximum likelihood on a grid (REML, which
  accounts for the estimated intercept and slope: Patterson, H.D., Thompson,
  R. 1971, Biometrika 58, 545-554), and used only when the restricted
  likelihood-ratio test rejects φ = 0 at level AR_TEST_LEVEL (a boundary
  test: critical value χ²₁ at 1 - 2·level, Self, S.G., Liang, K.-Y. 1987,
  J. Am. Stat. Assoc. 82, 605-610). Series shorter than MIN_POINTS_AR are
  taken as independent (reported).
- Scale: the stated uncertainties are taken as known (normal quantile)
  while the scatter agrees with them: χ² = whitened residual sum of squares
  against χ²(n - 2); when it exceeds the 95 % quantile the scale is
  estimated instead (Student t), and `scatter_exceeds_uncertainty` says so.
  Without stated uncertainties the scale is always estimated.
- With autocorrelation the quantile is Student's t with n_eff - 2 degrees of
  freedom, n_eff = n (1 - φ)/(1 + φ) (Santer, B.D. et al. 2000, J. Geophys.
  Res. 105, 7337-7356): φ is itself estimated.

Measured on simulated series (tests/calibration/test_trend.py, 40 points):
95 % intervals cover the true rate 94-96 % of the time for white noise with
known u, an estimated scale, uneven spacing, and AR(1) φ = 0.5.

Detectability (power analysis): a trend b is detected by a two-sided test at
level α with power 1 - β when |b| >= (q_{1-α/2} + q_{1-β}) · se(b) (Smith, P.
2004, Global Change Biology 10, 1878-1883, for soil carbon). se(b) for
equally spaced AR(1) noise is the exact GLS standard error; with φ = 0.5
monitoring takes about ((1 + φ)/(1 - φ))^(1/3) = 1.44 times longer than with
independent noise (Weatherhead, E.C. et al. 1998, J. Geophys. Res. 103,
17149-17161, Eq. 3). The minimum detectable change between two single
estimates is (z_{1-α/2} + z_{1-β}) · sqrt(2) · σ_e.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration._stats import chi2_cdf, chi2_ppf, norm_ppf, t_ppf

TARGET_PER_MILLE = 4.0
ALPHA = 0.05
POWER = 0.80
MAX_YEARS = 1000
AR_TEST_LEVEL = 0.10
"""Level of the test for autocorrelation: a missed φ costs coverage, a spurious one only width."""
MIN_POINTS_AR = 8
"""Below this many points φ is not estimated (the series is taken as independent)."""
PHI_GRID = np.linspace(0.0, 0.98, 50)
SCALE_CHECK_LEVEL = 0.95
"""χ² consistency check: scatter beyond this quantile of χ²(n - 2) means the stated u are too small."""


@dataclass(frozen=True)
class TrendFit:
    """The rate and its confidence interval, with what the interval assumed."""

    n: int
    rate: float
    rate_se: float
    rate_ci: tuple[float, float]
    intercept: float                  # fitted stock at the first time
    phi: float                        # lag-1 autocorrelation per median interval (0 when not used)
    phi_estimate: float               # REML estimate, whether used or not
    autocorrelated: bool
    scale: str                        # "known" (stated u) or "estimated"
    chi2: float | None                # whitened residual sum of squares, against stated u
    chi2_dof: int
    chi2_p: float | None              # P(χ² >= observed) if the stated u were right
    scatter_exceeds_uncertainty: bool
    n_effective: float
    dof: float                        # of the quantile (inf: normal)
    noise_sd: float                   # σ_e, effective standard deviation of one stock estimate
    interval_years: float
    note: str


def fit_trend(times_years: Any, stocks: Any, uncertainties: Any = None, *, alpha: float = ALPHA,
              autocorrelation: str = "auto", scale: str = "auto") -> TrendFit:
    """Generalised least-squares rate with a (1 - alpha) CI; see the module docstring for the choices.

    `autocorrelation`: "auto" (AR(1) when the test finds it) or "none";
    `scale`: "auto", "known" (trust the stated u) or "estimated".
    """
    if autocorrelation not in ("auto", "none"):
        raise ValueError(f"autocorrelation {autocorrelation!r}: expected 'auto' or 'none'")
    if scale not in ("auto", "known", "estimated"):
        raise ValueError(f"scale {scale!r}: expected 'auto', 'known' or 'estimated'")
    t = np.asarray(times_years, dtype=float).ravel()
    s = np.asarray(stocks, dtype=float).ravel()
    n = int(t.shape[0])
    if s.shape[0] != n:
        raise ValueError(f"{n} times but {s.shape[0]} stocks")
    if n < 3:
        raise ValueError(f"a trend with a confidence interval needs at least 3 stock estimates, got {n}")
    stated = uncertainties is not None
    u = np.broadcast_to(np.asarray(uncertainties if stated else 1.0, dtype=float), s.shape).ravel()
    if not (np.isfinite(t).all() and np.isfinite(s).all() and np.isfinite(u).all()):
        raise ValueError("times, stocks and uncertainties must be finite")
    if (u <= 0).any():
        raise ValueError("every stock estimate needs an uncertainty > 0")
    if not stated and scale == "known":
        raise ValueError("scale 'known' needs stated uncertainties")
    order = np.argsort(t, kind="stable")
    t, s, u = t[order], s[order], u[order]
    if np.ptp(t) <= 0:
        raise ValueError("all stock estimates are at the same time: no rate can be estimated")
    dt = np.diff(t)
    positive = dt[dt > 0]
    step = float(np.median(positive))
    note = ""
    phis = PHI_GRID
    if autocorrelation == "none":
        phis = PHI_GRID[:1]
    elif n < MIN_POINTS_AR:
        phis, note = PHI_GRID[:1], f"autocorrelation not estimated: fewer than {MIN_POINTS_AR} points"
    elif (dt <= 0).any():
        phis, note = PHI_GRID[:1], "autocorrelation not estimated: several estimates share a time"
    t0 = float(t[0])
    x = np.column_stack([np.ones(n), t - t0])
    beta, xtx, rss, loglik = _gls_grid(x, s, u, dt, step, phis)
    g_hat = int(np.argmax(loglik))
    g = 0
    if g_hat > 0 and 2.0 * (loglik[g_hat] - loglik[0]) > chi2_ppf(1.0 - 2.0 * AR_TEST_LEVEL, 1.0):
        g = g_hat
    phi = float(phis[g])
    cov = np.linalg.inv(xtx[g])
    dof_res = n - 2
    chi2 = float(rss[g]) if stated else None
    chi2_p = 1.0 - chi2_cdf(chi2, dof_res) if stated else None
    exceeds = bool(stated and chi2 > chi2_ppf(SCALE_CHECK_LEVEL, dof_res))
    mode = "known" if scale == "known" or (scale == "auto" and stated and not exceeds) else "estimated"
    s2 = 1.0 if mode == "known" else float(rss[g]) / dof_res
    n_eff = n * (1.0 - phi) / (1.0 + phi)
    if phi > 0:
        dof = max(1.0, n_eff - 2.0)
    else:
        dof = math.inf if mode == "known" else float(dof_res)
    q = norm_ppf(1.0 - alpha / 2.0) if math.isinf(dof) else t_ppf(1.0 - alpha / 2.0, dof)
    b = float(beta[g][1])
    se = math.sqrt(s2 * cov[1, 1])
    noise = math.sqrt(s2 * n / float(np.sum(1.0 / u**2)))
    return TrendFit(n, b, se, (b - q * se, b + q * se), float(beta[g][0]), phi, float(phis[g_hat]), phi > 0,
                    mode, chi2, dof_res, chi2_p, exceeds, n_eff, dof, noise, step, note)


def _gls_grid(x: np.ndarray, s: np.ndarray, u: np.ndarray, dt: np.ndarray, step: float, phis: np.ndarray):
    """GLS fit and restricted log-likelihood (scale profiled) for each φ in `phis`, vectorised.

    Innovations of the continuous AR(1) on time-sorted data divided by u:
    w_1 = v_1, w_i = (v_i - ρ_i v_(i-1)) / sqrt(1 - ρ_i²). REML (up to a
    constant): -½[(n - 2) ln RSS + Σ ln(1 - ρ_i²) + ln det(X̃'X̃)].
    """
    n = s.shape[0]
    with np.errstate(divide="ignore"):
        rho = phis[:, None] ** (dt[None, :] / step)                # (G, n-1)
    rho = np.where(dt[None, :] > 0, rho, 0.0) if phis.shape[0] == 1 else rho
    c = np.sqrt(1.0 - rho**2)
    ys, xs = s / u, x / u[:, None]
    yw = np.empty((phis.shape[0], n))
    yw[:, 0] = ys[0]
    yw[:, 1:] = (ys[None, 1:] - rho * ys[None, :-1]) / c
    xw = np.empty((phis.shape[0], n, 2))
    xw[:, 0, :] = xs[0]
    xw[:, 1:, :] = (xs[None, 1:, :] - rho[..., None] * xs[None, :-1, :]) / c[..., None]
    xtx = np.einsum("gni,gnj->gij", xw, xw)
    xty = np.einsum("gni,gn->gi", xw, yw)
    beta = np.linalg.solve(xtx, xty[..., None])[..., 0]
    res = yw - np.einsum("gni,gi->gn", xw, beta)
    rss = np.einsum("gn,gn->g", res, res)
    loglik = -0.5 * ((n - 2) * np.log(np.maximum(rss, 1e-300)) + 2.0 * np.log(c).sum(axis=1)
                     + np.linalg.slogdet(xtx)[1])
    return beta, xtx, rss, loglik


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
    years_to_detect_target: float        # years of monitoring at the series' spacing (autocorrelation included)
    interval_years: float
    alpha: float
    power: float
    phi: float = 0.0                     # lag-1 autocorrelation used (per median interval)
    phi_estimate: float = 0.0            # REML estimate, reported even when the test did not retain it
    scale: str = "known"                 # "known": stated u trusted; "estimated" from the scatter
    chi2: float | None = None            # whitened residuals against stated u, chi2_dof degrees of freedom
    chi2_dof: int = 0
    chi2_p: float | None = None          # small: scatter exceeds u; near 1: u overstated (power lost)
    scatter_exceeds_uncertainty: bool = False
    n_effective: float = 0.0
    note: str = ""

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


def stock_trend(times_years: Any, stocks: Any, uncertainties: Any = None, *, alpha: float = ALPHA,
                power: float = POWER, target_per_mille: float = TARGET_PER_MILLE,
                autocorrelation: str = "auto", scale: str = "auto") -> Trend:
    """Annual rate of change of SOC stock with its CI, and how detectable 4 ‰/yr is (fit_trend for the CI)."""
    f = fit_trend(times_years, stocks, uncertainties, alpha=alpha, autocorrelation=autocorrelation, scale=scale)
    baseline = f.intercept
    if baseline <= 0:
        raise ValueError(f"fitted baseline stock {baseline:.3g} Mg C/ha is not positive")
    pm = 1000.0 / baseline
    if math.isinf(f.dof):
        q_sum = norm_ppf(1.0 - alpha / 2.0) + norm_ppf(power)
    else:
        q_sum = t_ppf(1.0 - alpha / 2.0, f.dof) + t_ppf(power, f.dof)
    mdr = q_sum * f.rate_se
    mdc = (norm_ppf(1.0 - alpha / 2.0) + norm_ppf(power)) * math.sqrt(2.0) * f.noise_sd
    years = years_to_detect(target_per_mille / 1000.0 * baseline, f.noise_sd, f.interval_years, alpha=alpha,
                            power=power, phi=f.phi, known_scale=f.scale == "known")
    return Trend(f.n, f.rate, f.rate_se, f.rate_ci, baseline, f.rate * pm, (f.rate_ci[0] * pm, f.rate_ci[1] * pm),
                 target_per_mille, f.noise_sd, mdr, mdr * pm, mdc, years, f.interval_years, alpha, power,
                 f.phi, f.phi_estimate, f.scale, f.chi2, f.chi2_dof, f.chi2_p, f.scatter_exceeds_uncertainty,
                 f.n_effective, f.note)


def ar1_slope_se(n: int, noise_sd: float, interval_years: float, phi: float) -> float:
    """Exact GLS standard error of the slope for n equally spaced points with AR(1) noise (marginal sd)."""
    i = np.arange(n, dtype=float) * interval_years
    x = np.column_stack([np.ones(n), i])
    c = math.sqrt(1.0 - phi * phi)
    xw = np.vstack([x[:1], (x[1:] - phi * x[:-1]) / c])
    return noise_sd * math.sqrt(np.linalg.inv(xw.T @ xw)[1, 1])


def years_to_detect(rate: float, noise_sd: float, interval_years: float = 1.0, *, alpha: float = ALPHA,
                    power: float = POWER, phi: float = 0.0, known_scale: bool = False) -> float:
    """Years of monitoring (one estimate every `interval_years`) to detect `rate` (same units/yr).

    Smallest n >= 3 with rate >= (q_{1-α/2} + q_{power}) se_n, se_n the GLS slope
    error for AR(1) noise with lag-1 correlation `phi` (0: independent,
    σ / (Δ sqrt(n(n²-1)/12))); quantiles of Student's t with n - 2 degrees of
    freedom (n_eff - 2 with autocorrelation), or normal with `known_scale` and
    no autocorrelation. Returns (n - 1) Δ, or inf beyond MAX_YEARS.
    """
    if rate <= 0 or noise_sd < 0 or interval_years <= 0:
        raise ValueError("rate and interval must be > 0 and noise >= 0")
    if not 0 <= phi < 1:
        raise ValueError(f"phi {phi}: expected 0 <= phi < 1")
    if noise_sd == 0:
        return 2 * interval_years

    def detected(n: int) -> bool:
        if phi > 0:
            se = ar1_slope_se(n, noise_sd, interval_years, phi)
            dof = max(1.0, n * (1 - phi) / (1 + phi) - 2)
        else:
            se = noise_sd / (interval_years * math.sqrt(n * (n * n - 1) / 12.0))
            dof = math.inf if known_scale else n - 2.0
        if math.isinf(dof):
            q = norm_ppf(1.0 - alpha / 2.0) + norm_ppf(power)
        else:
            q = t_ppf(1.0 - alpha / 2.0, dof) + t_ppf(power, dof)
        return rate >= q * se

    top = int(MAX_YEARS / interval_years) + 1
    if not detected(top):
        return math.inf
    lo, hi = 2, top          # detected(hi) holds; find the smallest such n by bisection (se falls with n)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if detected(mid):
            hi = mid
        else:
            lo = mid
    return (hi - 1) * interval_years
