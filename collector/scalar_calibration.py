"""The moisture and EC equations of `calibration.moisture`, for one reading at a time, in pure Python.

Why a second copy: the collector calibrates one scalar per poll, and numpy
(about 12 MB of resident memory, half the daemon's budget) plus an array
round trip per value are a poor price for a few multiplications. Spectra
still go through `calibration` and numpy; these scalar equations do not.

Same equations, same constants, same checks in the same order (the first
test to set the worst flag names it), so value, uncertainty, flag and test
match `calibration.moisture` (tests/collector/test_scalar_calibration.py
compares them on a grid of inputs including NaN and the range limits).
Sources, as there:

- METER Group, *TEROS 11/12 User Manual* (document 18224), section 4.1:
  mineral soil (Eq. 5), soilless media (Eq. 6), apparent permittivity
  (Eq. 7) from RAW counts; generic accuracy ±0.03 m³/m³ (section 3.1).
- Topp, Davis & Annan (1980), Water Resources Research 16(3), Eq. 6;
  standard error 0.013 m³/m³.
- Sheets & Hendrickx (1995), Water Resources Research 31(10):
  EC25 = EC_T (0.4470 + 1.4034 exp(-T/26.815)).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

from humus.records import QualityFlag

# Constants of calibration.moisture (same names, same sources).
TEROS12_GENERIC_UNCERTAINTY = 0.03
TOPP_UNCERTAINTY = 0.013
VWC_FAIL_BELOW = -0.10
PERMITTIVITY_AIR, PERMITTIVITY_WATER_MAX = 1.0, 81.0
MEDIA_MAX = {"mineral": 0.70, "soilless": 1.0}
EC_RANGE_US_CM = (0.0, 20_000.0)

_RANK = {QualityFlag.NOT_EVALUATED: 0, QualityFlag.PASS: 1, QualityFlag.SUSPECT: 2, QualityFlag.FAIL: 3,
         QualityFlag.MISSING: 4}


class ScalarCalibrated(NamedTuple):
    """One calibrated value: the fields `calibration.calibrated.Calibrated` has for a scalar input."""

    value: float
    uncertainty: float
    flag: QualityFlag
    flag_test: str


class _Flags:
    """`calibration.calibrated.FlagSet` for one element: the worst flag, named by the first test that set it."""

    __slots__ = ("flag", "test")

    def __init__(self) -> None:
        self.flag, self.test = QualityFlag.PASS, ""

    def raise_if(self, cond: bool, flag: QualityFlag, test: str) -> None:
        if cond and _RANK[self.flag] < _RANK[flag]:
            self.flag, self.test = flag, test


def _root(raw: float) -> float:
    """The square root of Eq. 7's permittivity, as calibration.moisture computes it (numpy ** 2 is x * x)."""
    return 2.887e-9 * _cube(raw) - 2.080e-5 * (raw * raw) + 5.276e-2 * raw - 43.39


def _cube(x: float) -> float:
    """x ** 3 as numpy computes it (the C library's pow), inf instead of OverflowError."""
    try:
        return x**3
    except OverflowError:
        return math.copysign(math.inf, x)


def _raw_checks(flags: _Flags, raw: float, root: float, eps: float) -> None:
    flags.raise_if(math.isnan(raw), QualityFlag.MISSING, "missing")
    flags.raise_if(root < 0 or eps < PERMITTIVITY_AIR, QualityFlag.FAIL, "raw_range")
    flags.raise_if(eps > PERMITTIVITY_WATER_MAX, QualityFlag.SUSPECT, "raw_range_high")


def _vwc_checks(flags: _Flags, vwc: float, media_max: float) -> None:
    flags.raise_if(vwc < VWC_FAIL_BELOW or vwc > 1.0, QualityFlag.FAIL, "vwc_physical_limits")
    flags.raise_if(vwc < 0.0, QualityFlag.SUSPECT, "vwc_below_zero")
    flags.raise_if(vwc > media_max, QualityFlag.SUSPECT, "vwc_above_range")


def teros12_permittivity(raw: float) -> ScalarCalibrated:
    """Apparent permittivity from TEROS 12 RAW counts (manual Eq. 7); ±1 up to 40, 15 % above."""
    raw = float(raw)
    root = _root(raw)
    eps = root * root
    flags = _Flags()
    _raw_checks(flags, raw, root, eps)
    return ScalarCalibrated(eps, 1.0 if eps <= 40.0 else 0.15 * eps, flags.flag, flags.test)


def teros12_vwc(raw: float, media: str = "mineral") -> ScalarCalibrated:
    """Volumetric water content (m³/m³) from TEROS 12 RAW counts (manual Eq. 5 mineral, Eq. 6 soilless)."""
    if media not in MEDIA_MAX:
        raise ValueError(f"media {media!r}: expected 'mineral' or 'soilless'")
    raw = float(raw)
    if media == "mineral":
        vwc = 3.879e-4 * raw - 0.6956
    else:
        vwc = 6.771e-10 * _cube(raw) - 5.105e-6 * (raw * raw) + 1.302e-2 * raw - 10.848
    flags = _Flags()
    root = _root(raw)
    _raw_checks(flags, raw, root, root * root)
    _vwc_checks(flags, vwc, MEDIA_MAX[media])
    return ScalarCalibrated(vwc, TEROS12_GENERIC_UNCERTAINTY, flags.flag, flags.test)


def topp_vwc(eps: float) -> ScalarCalibrated:
    """VWC from apparent permittivity, Topp et al. (1980) Eq. 6, with the TEROS 12's ε uncertainty carried."""
    eps = float(eps)
    vwc = -5.3e-2 + 2.92e-2 * eps - 5.5e-4 * (eps * eps) + 4.3e-6 * _cube(eps)
    u_eps = 1.0 if eps <= 40.0 else 0.15 * eps
    slope = 2.92e-2 - 1.1e-3 * eps + 1.29e-5 * (eps * eps)
    su = slope * u_eps
    unc = math.sqrt(TOPP_UNCERTAINTY**2 + su * su)
    flags = _Flags()
    flags.raise_if(math.isnan(eps), QualityFlag.MISSING, "missing")
    flags.raise_if(eps < PERMITTIVITY_AIR or eps > PERMITTIVITY_WATER_MAX, QualityFlag.FAIL,
                   "permittivity_physical_limits")
    flags.raise_if(eps > 40.0, QualityFlag.SUSPECT, "topp_range")
    _vwc_checks(flags, vwc, 1.0)
    return ScalarCalibrated(vwc, unc, flags.flag, flags.test)


def polynomial_vwc(x: float, coefficients: tuple[float, ...], input: str, uncertainty: float,
                   max_vwc: float = 1.0) -> ScalarCalibrated:
    """θ = c0 + c1 x + ... by Horner's rule, as numpy's polyval evaluates it; checks by what x is."""
    x = float(x)
    c = [float(v) for v in coefficients]
    vwc = c[-1] + x * 0
    for i in range(2, len(c) + 1):
        vwc = c[-i] + vwc * x
    flags = _Flags()
    if input == "raw":
        root = _root(x)
        _raw_checks(flags, x, root, root * root)
    elif input == "reading":
        flags.raise_if(math.isnan(x), QualityFlag.MISSING, "missing")
    else:
        flags.raise_if(math.isnan(x), QualityFlag.MISSING, "missing")
        flags.raise_if(x < PERMITTIVITY_AIR or x > PERMITTIVITY_WATER_MAX, QualityFlag.FAIL,
                       "permittivity_physical_limits")
    _vwc_checks(flags, vwc, max_vwc)
    return ScalarCalibrated(vwc, float(uncertainty), flags.flag, flags.test)


def ec_at_25c(ec: float, t: float) -> ScalarCalibrated:
    """Bulk EC (µS/cm) corrected to 25 °C (Sheets & Hendrickx 1995); uncertainty ±(5 % + 10 µS/cm) scaled."""
    ec, t = float(ec), float(t)
    factor = 0.4470 + 1.4034 * _exp(-t / 26.815)
    flags = _Flags()
    flags.raise_if(math.isnan(ec) or math.isnan(t), QualityFlag.MISSING, "missing")
    flags.raise_if(ec < EC_RANGE_US_CM[0], QualityFlag.FAIL, "ec_physical_limits")
    flags.raise_if(ec > EC_RANGE_US_CM[1], QualityFlag.SUSPECT, "ec_sensor_range")
    flags.raise_if(t < -40.0 or t > 60.0, QualityFlag.FAIL, "temperature_sensor_range")
    flags.raise_if(t < 0.0, QualityFlag.SUSPECT, "ec_frozen_soil")
    return ScalarCalibrated(ec * factor, (0.05 * abs(ec) + 10.0) * factor, flags.flag, flags.test)


def _exp(x: float) -> float:
    """exp that, like numpy's, gives inf on overflow and NaN for NaN instead of raising."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


SCALAR_MODELS: dict[str, Callable[..., ScalarCalibrated]] = {
    "teros12_vwc": teros12_vwc, "teros12_permittivity": teros12_permittivity, "topp_vwc": topp_vwc,
    "polynomial_vwc": polynomial_vwc, "ec25": ec_at_25c}
"""The collector's calibration models computed here (every one but `spectral`)."""
