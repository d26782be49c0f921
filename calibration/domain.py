"""Applicability domain of a spectral model: T² and Q limits, and a moisture check independent of preprocessing.

T² and Q limits. A limit is honest when about the nominal share of
spectra like the calibration ones exceed it. In-sample statistics are too
small (the model was fitted to those spectra) and the F and χ²
approximations assume normal scores, which soil libraries are not: the
"99 %" F limit flagged 10.6 % of NIRsoil's own training spectra. So both
limits come from the cross-validated T² and Q of the calibration samples
(each against the model fitted without its fold). From EMPIRICAL_MIN_N
samples on, both limits sit at one empirical quantile p of their
cross-validated values, p chosen so that the union (T² or Q above its
limit) flags 1 - level of them. Below that, each limit is a moment-matched
g·χ²_h quantile (Box, G.E.P. 1954, Annals of Mathematical Statistics 25,
290-302; Nomikos, P., MacGregor, J.F. 1995, Technometrics 37, 41-59) at
level 1 - (1 - level)/2 (Bonferroni for the union).

Moisture. Preprocessing (derivatives, SNV) can hide water from T² and Q
(a dry-soil model with the default chain flagged 16 % of wet spectra), so
water is measured on the absorbance itself, before any preprocessing: the
depth of the O-H combination band near 1940 nm below a straight continuum
between its shoulders (water absorption bands at 1450 and 1940 nm: Bishop,
J.L., Pieters, C.M., Edwards, J.O. 1994, Clays and Clay Minerals 42,
702-716; Lobell, D.B., Asner, G.P. 2002, Soil Sci. Soc. Am. J. 66,
722-727). Dry soils hold hygroscopic water in proportion to their clay,
so when the grid covers it the depth is taken relative to the
regression on the clay (Al-OH) band depth at 2200 nm fitted on the
calibration spectra. The index is a linear functional of the absorbance
(one dot product per prediction). Measured on the paired soils of
shared/data/soilspec-epo: dry 0.152 at most, wet 0.144 at least (5 % of
wet below 0.17).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calibration._stats import chi2_ppf

EMPIRICAL_MIN_N = 100
"""From this many calibration samples on, the T²/Q limits are empirical quantiles of their CV values."""

WATER_BAND = ((1910.0, 1950.0), (1840.0, 1870.0), (2080.0, 2110.0))
"""Band and left/right shoulders (nm) of the 1940 nm water band depth."""
CLAY_BAND = ((2190.0, 2220.0), (2120.0, 2150.0), (2250.0, 2280.0))
"""Band and shoulders (nm) of the 2200 nm Al-OH (clay) band depth."""


def domain_limits(t2_cv: np.ndarray, q_cv: np.ndarray, level: float) -> tuple[float, float, str]:
    """(T² limit, Q limit, method) from cross-validated statistics, the union flagging ~1 - level."""
    t2, q = np.asarray(t2_cv, dtype=float), np.asarray(q_cv, dtype=float)
    n = t2.shape[0]
    if n >= EMPIRICAL_MIN_N:
        nominal = 1.0 - level
        best = (float(t2.max()), float(q.max()))
        for p in np.linspace(level, 1.0, 401):
            lim = (float(np.quantile(t2, p)), float(np.quantile(q, p)))
            if np.mean((t2 > lim[0]) | (q > lim[1])) <= nominal:
                best = lim
                break
        return best[0], best[1], "empirical quantile of cross-validated T2 and Q (union)"
    each = 1.0 - (1.0 - level) / 2.0
    return _box(t2, each), _box(q, each), "g*chi2_h moment match of cross-validated T2 and Q (Bonferroni)"


def _box(v: np.ndarray, level: float) -> float:
    mean, var = float(v.mean()), float(v.var(ddof=1)) if v.shape[0] > 1 else 0.0
    if mean > 0 and var > 0:
        g, h = var / (2.0 * mean), 2.0 * mean * mean / var
        return g * chi2_ppf(level, h)
    return float("inf")


@dataclass(frozen=True)
class MoistureIndex:
    """index(a) = weights · a + offset on the model grid's absorbance; above `limit` is wetter than allowed."""

    weights: np.ndarray
    offset: float
    limit: float
    basis: str               # "calibration" (dry model) or "epo_pairs" (wettest pair spectra)

    def __call__(self, a: np.ndarray) -> np.ndarray | float:
        return a @ self.weights + self.offset


def band_depth_weights(grid: np.ndarray, band: tuple[tuple[float, float], ...]) -> np.ndarray | None:
    """w with w·a = mean(a over band) - continuum between the shoulder means; None if not covered."""
    (b0, b1), (l0, l1), (r0, r1) = band
    masks = [(grid >= lo) & (grid <= hi) for lo, hi in ((b0, b1), (l0, l1), (r0, r1))]
    if not all(m.any() for m in masks):
        return None
    centre = [float(grid[m].mean()) for m in masks]
    frac = (centre[0] - centre[1]) / (centre[2] - centre[1])
    w = masks[0] / masks[0].sum() - (1.0 - frac) * masks[1] / masks[1].sum() - frac * masks[2] / masks[2].sum()
    return w.astype(float)


def fit_moisture_index(grid: np.ndarray, absorbance: np.ndarray, level: float, *,
                       wet_pairs: np.ndarray | None = None) -> MoistureIndex | None:
    """The moisture check for a model: limits from the calibration (dry model) or the wet pair spectra (EPO).

    None when the grid does not cover the 1940 nm water band and its shoulders.
    """
    water = band_depth_weights(grid, WATER_BAND)
    if water is None:
        return None
    clay = band_depth_weights(grid, CLAY_BAND)
    a = np.asarray(absorbance, dtype=float)
    w, offset = water, 0.0
    if clay is not None and a.shape[0] >= 10:
        x = a @ clay
        if np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, a @ water, 1)
            w, offset = water - slope * clay, -float(intercept)
    if wet_pairs is not None:
        wet = np.asarray(wet_pairs, dtype=float) @ w + offset
        return MoistureIndex(w, offset, float(wet.max()), "epo_pairs")
    idx = a @ w + offset
    if idx.shape[0] >= EMPIRICAL_MIN_N:
        limit = float(np.quantile(idx, level))
    else:   # robust normal limit: median + z·1.4826·MAD, never below the largest calibration value
        from calibration._stats import norm_ppf

        mad = 1.4826 * float(np.median(np.abs(idx - np.median(idx))))
        limit = max(float(np.median(idx)) + norm_ppf(level) * mad, float(idx.max()))
    return MoistureIndex(w, offset, limit, "calibration")


def moisture_meta(m: MoistureIndex | None, grid: np.ndarray) -> dict[str, Any]:
    if m is None:
        return {"check": None, "reason": f"the grid ({grid[0]:g}-{grid[-1]:g} nm) does not cover the 1940 nm "
                                          "water band and its shoulders (1840-2110 nm)"}
    return {"check": "1940 nm water band depth" + (" relative to the 2200 nm clay band"
                                                   if m.offset != 0.0 else ""),
            "offset": m.offset, "limit": m.limit, "basis": m.basis}
