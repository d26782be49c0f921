"""Spectral preprocessing: counts to reflectance to absorbance, SNV, Savitzky-Golay, resampling.

Everything here is numpy only, so it runs on a gateway. Sources:
- Reflectance from dark and white references: R = (S - D) / (W - D) · ρ_white
  (e.g. ASTM E1331; the usual flat-field correction of a spectrometer).
- Absorbance (apparent): A = log10(1/R) (Williams & Norris, *Near-Infrared
  Technology in the Agricultural and Food Industries*, 2001).
- Standard normal variate: Barnes, R.J., Dhanoa, M.S., Lister, S.J. (1989)
  Applied Spectroscopy 43, 772-777 (row-wise centring and scaling; sample
  standard deviation, ddof = 1, as prospectr's `standardNormalVariate`).
- Savitzky, A., Golay, M.J.E. (1964) Analytical Chemistry 36, 1627-1639:
  least-squares polynomial fits over a moving window; edges handled as
  scipy.signal.savgol_filter's default ``mode='interp'`` (the polynomial fitted
  to the first/last window is evaluated at the edge points).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import factorial
from typing import Any

import numpy as np

from calibration.calibrated import Calibrated, FlagSet
from humus.records import QualityFlag

REFLECTANCE_SUSPECT = (-0.02, 1.05)
"""Reflectance outside this range points to a bad reference or a saturated channel."""


def reflectance(counts: Any, dark: Any, white: Any, white_reflectance: float = 1.0) -> Calibrated:
    """Reflectance per band from raw counts and dark/white reference counts.

    The whole spectrum shares one flag: FAIL when the white reference is not
    above the dark one at some band (the reference is unusable), SUSPECT when
    some reflectance is outside REFLECTANCE_SUSPECT.
    """
    s, d, w = (np.asarray(v, dtype=float) for v in (counts, dark, white))
    if not s.shape == d.shape == w.shape:
        raise ValueError(f"counts {s.shape}, dark {d.shape} and white {w.shape} must have the same shape")
    span = w - d
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(span > 0, (s - d) / np.where(span > 0, span, 1.0) * white_reflectance, np.nan)
    flags = FlagSet(())
    flags.raise_where(np.isnan(s).any(), QualityFlag.MISSING, "missing")
    flags.raise_where(not (span > 0).all(), QualityFlag.FAIL, "white_reference")
    lo, hi = REFLECTANCE_SUSPECT
    flags.raise_where(bool(((r < lo) | (r > hi)).any()), QualityFlag.SUSPECT, "reflectance_range")
    return Calibrated(r, None, QualityFlag(int(flags.flag)), str(flags.test[()]))


def absorbance(r: Any) -> np.ndarray:
    """Apparent absorbance log10(1/R); NaN where R <= 0 (no physical absorbance)."""
    r = np.asarray(r, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, -np.log10(np.where(r > 0, r, 1.0)), np.nan)


def snv(a: Any) -> np.ndarray:
    """Standard normal variate of each spectrum (last axis): (a - mean) / sd, ddof = 1."""
    a = np.asarray(a, dtype=float)
    mean = a.mean(axis=-1, keepdims=True)
    sd = a.std(axis=-1, ddof=1, keepdims=True)
    return (a - mean) / sd


def savgol_coefficients(window: int, polyorder: int, deriv: int = 0, delta: float = 1.0,
                        pos: int | None = None) -> np.ndarray:
    """Weights w such that the SG estimate at window position `pos` is Σ w[k] y[k].

    Least squares: the polynomial coefficients are pinv(V) y with V the
    Vandermonde matrix of the window positions; the `deriv`-th derivative at
    x0 is Σ_j j!/(j-deriv)! x0^(j-deriv) c_j / delta^deriv.
    """
    _check_sg(window, polyorder, deriv)
    half = window // 2
    pos = half if pos is None else pos
    x = np.arange(window, dtype=float) - half
    vander = x[:, None] ** np.arange(polyorder + 1)[None, :]
    pinv = np.linalg.pinv(vander)                       # (polyorder+1, window)
    x0 = float(pos - half)
    d = np.zeros(polyorder + 1)
    for j in range(deriv, polyorder + 1):
        d[j] = factorial(j) / factorial(j - deriv) * x0 ** (j - deriv)
    return d @ pinv / delta**deriv


@dataclass(frozen=True)
class SavitzkyGolay:
    """A Savitzky-Golay filter with its weights precomputed for repeated use."""

    window: int
    polyorder: int
    deriv: int = 0
    delta: float = 1.0
    _centre: np.ndarray = field(init=False, repr=False, compare=False)
    _left: np.ndarray = field(init=False, repr=False, compare=False)
    _right: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_sg(self.window, self.polyorder, self.deriv)
        half = self.window // 2
        rows = [savgol_coefficients(self.window, self.polyorder, self.deriv, self.delta, pos)
                for pos in range(self.window)]
        object.__setattr__(self, "_centre", rows[half][::-1].copy())   # reversed: np.convolve flips
        object.__setattr__(self, "_left", np.array(rows[:half]))
        object.__setattr__(self, "_right", np.array(rows[half + 1:]))

    def __call__(self, a: Any) -> np.ndarray:
        """Filter each spectrum along the last axis (same length out)."""
        a = np.asarray(a, dtype=float)
        if a.shape[-1] < self.window:
            raise ValueError(f"spectrum of {a.shape[-1]} bands is shorter than the SG window {self.window}")
        if a.ndim == 1:
            return np.concatenate((self._left @ a[: self.window], np.convolve(a, self._centre, "valid"),
                                   self._right @ a[-self.window:]))
        return a @ self.matrix(a.shape[-1]).T

    def matrix(self, n: int) -> np.ndarray:
        """The filter as a dense (n, n) linear operator: out = M @ spectrum."""
        w, half = self.window, self.window // 2
        m = np.zeros((n, n))
        m[:half, :w] = self._left
        m[n - half:, n - w:] = self._right
        centre = self._centre[::-1]
        for i in range(half, n - half):
            m[i, i - half: i - half + w] = centre
        return m


def _check_sg(window: int, polyorder: int, deriv: int) -> None:
    if window < 3 or window % 2 == 0:
        raise ValueError(f"Savitzky-Golay window {window}: expected an odd number >= 3")
    if not 0 <= polyorder < window:
        raise ValueError(f"Savitzky-Golay polyorder {polyorder}: expected 0 <= polyorder < window ({window})")
    if not 0 <= deriv <= polyorder:
        raise ValueError(f"Savitzky-Golay deriv {deriv}: expected 0 <= deriv <= polyorder ({polyorder})")


def resample(wavelengths_nm: Any, values: Any, grid_nm: Any) -> np.ndarray:
    """Linear interpolation of spectra (last axis) onto `grid_nm`; NaN outside the measured range.

    No extrapolation: a model grid wider than what the probe measured gives
    NaN bands, which the model flags rather than inventing data.
    """
    wl = np.asarray(wavelengths_nm, dtype=float)
    v = np.asarray(values, dtype=float)
    g = np.asarray(grid_nm, dtype=float)
    if wl.ndim != 1 or wl.shape[0] != v.shape[-1]:
        raise ValueError(f"{wl.shape[0] if wl.ndim == 1 else wl.shape} wavelengths for spectra of "
                         f"{v.shape[-1]} bands")
    if np.any(np.diff(wl) <= 0):
        order = np.argsort(wl)
        wl, v = wl[order], v[..., order]
    if v.ndim == 1:
        return np.interp(g, wl, v, left=np.nan, right=np.nan)
    return np.stack([np.interp(g, wl, row, left=np.nan, right=np.nan) for row in v.reshape(-1, v.shape[-1])]
                    ).reshape(v.shape[:-1] + g.shape)
