"""Soil moisture (volumetric water content) and bulk EC from probe readings.

Sources:
- METER Group, *TEROS 11/12 User Manual* (document 18224), section 4.1
  "Calibrations": mineral soil (Equation 5), soilless media (Equation 6) and
  apparent dielectric permittivity (Equation 7) from the sensor's RAW
  calibrated counts; accuracy of the generic calibration ±0.03 m³/m³
  (mineral soils, saturation extract EC < 8 dS/m), VWC range 0-0.70 m³/m³
  (mineral) and 0-1.0 m³/m³ (soilless); bulk EC accuracy ±(5 % + 10 µS/cm),
  range 0-20,000 µS/cm; operating temperature -40 to +60 °C.
- Topp, G.C., Davis, J.L., Annan, A.P. (1980) Electromagnetic determination
  of soil water content. Water Resources Research 16(3), 574-582, Eq. 6;
  standard error of estimate 0.013 m³/m³.
- Sheets, K.R., Hendrickx, J.M.H. (1995) Noninvasive soil water content
  measurement using electromagnetic induction. Water Resources Research
  31(10), 2401-2409: EC25 = EC_T (0.4470 + 1.4034 exp(-T/26.815)), as
  recommended by Corwin, D.L., Lesch, S.M. (2005) Computers and Electronics
  in Agriculture 46, 11-43.

Values outside physical limits are flagged (FAIL or SUSPECT, with the name of
the test), never clipped: the raw observation is kept beside the calibrated
one and a person decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from calibration.calibrated import Calibrated, FlagSet, as_array, finish
from humus.config import setting
from humus.records import QualityFlag

TEROS12_GENERIC_UNCERTAINTY = 0.03
"""m³/m³, manual section 3.1 (generic calibration, mineral soils). METER states accuracies as ±a without a
coverage level; Humus uses a as the standard uncertainty (1σ), the conservative reading (GUM 4.3.7 would give
a/√3 for the bounds of a rectangular distribution). Documented in docs/calibration.md."""
TOPP_UNCERTAINTY = 0.013
"""m³/m³, standard error of estimate of Topp et al. (1980)."""
VWC_FAIL_BELOW = -0.10
"""m³/m³: below this no air gap or calibration offset explains it (FAIL)."""
PERMITTIVITY_AIR, PERMITTIVITY_WATER_MAX = 1.0, 81.0
"""Apparent permittivity bounds: below air or above liquid water (~80 at 20 °C) is impossible."""
_MEDIA_MAX = {"mineral": 0.70, "soilless": 1.0}


def teros12_permittivity(raw_counts: Any) -> Calibrated:
    """Apparent dielectric permittivity from TEROS 12 RAW counts (manual Eq. 7).

    ε_a = (2.887e-9 RAW³ - 2.080e-5 RAW² + 5.276e-2 RAW - 43.39)²; accuracy ±1
    for ε_a 1-40 and 15 % for 40-80 (manual 3.1).
    """
    raw, scalar = as_array(raw_counts)
    root = 2.887e-9 * raw**3 - 2.080e-5 * raw**2 + 5.276e-2 * raw - 43.39
    eps = root**2
    unc = np.where(eps <= 40.0, 1.0, 0.15 * eps)
    flags = FlagSet(raw.shape)
    _raw_checks(flags, raw, root, eps)
    return finish(eps, unc, flags, scalar)


def teros12_vwc(raw_counts: Any, media: Literal["mineral", "soilless"] = "mineral") -> Calibrated:
    """Volumetric water content (m³/m³) from TEROS 12 RAW counts.

    mineral (manual Eq. 5): θ = 3.879e-4 RAW - 0.6956;
    soilless (manual Eq. 6): θ = 6.771e-10 RAW³ - 5.105e-6 RAW² + 1.302e-2 RAW - 10.848.
    """
    if media not in _MEDIA_MAX:
        raise ValueError(f"media {media!r}: expected 'mineral' or 'soilless'")
    raw, scalar = as_array(raw_counts)
    if media == "mineral":
        vwc = 3.879e-4 * raw - 0.6956
    else:
        vwc = 6.771e-10 * raw**3 - 5.105e-6 * raw**2 + 1.302e-2 * raw - 10.848
    flags = FlagSet(raw.shape)
    root = 2.887e-9 * raw**3 - 2.080e-5 * raw**2 + 5.276e-2 * raw - 43.39
    _raw_checks(flags, raw, root, root**2)
    _vwc_checks(flags, vwc, _MEDIA_MAX[media])
    return finish(vwc, np.asarray(TEROS12_GENERIC_UNCERTAINTY), flags, scalar)


def topp_vwc(permittivity: Any, permittivity_uncertainty: Any = None) -> Calibrated:
    """Volumetric water content from apparent permittivity, Topp et al. (1980) Eq. 6.

    θ = -5.3e-2 + 2.92e-2 ε - 5.5e-4 ε² + 4.3e-6 ε³ (mineral soils; fitted
    for ε ≈ 3-40, so values above 40 are flagged suspect).
    Uncertainty: the equation's standard error (0.013) and the input's
    uncertainty u_ε carried through dθ/dε (GUM 5.1.2), combined in
    quadrature. `permittivity_uncertainty` None means a dielectric sensor's
    usual specification, the TEROS 12's (±1 for ε <= 40, 15 % above,
    manual 3.1), taken as a standard uncertainty; 0 for an exact input.
    At ε = 10 the input adds 0.019 m³/m³, more than the equation's own 0.013.
    """
    eps, scalar = as_array(permittivity)
    vwc = -5.3e-2 + 2.92e-2 * eps - 5.5e-4 * eps**2 + 4.3e-6 * eps**3
    if permittivity_uncertainty is None:
        u_eps = np.where(eps <= 40.0, 1.0, 0.15 * eps)
    else:
        u_eps = np.broadcast_to(np.asarray(permittivity_uncertainty, dtype=float), eps.shape)
    slope = 2.92e-2 - 1.1e-3 * eps + 1.29e-5 * eps**2
    unc = np.sqrt(TOPP_UNCERTAINTY**2 + (slope * u_eps) ** 2)
    flags = FlagSet(eps.shape)
    flags.raise_where(np.isnan(eps), QualityFlag.MISSING, "missing")
    flags.raise_where((eps < PERMITTIVITY_AIR) | (eps > PERMITTIVITY_WATER_MAX), QualityFlag.FAIL,
                      "permittivity_physical_limits")
    flags.raise_where(eps > 40.0, QualityFlag.SUSPECT, "topp_range")
    _vwc_checks(flags, vwc, 1.0)
    return finish(vwc, unc, flags, scalar)


@dataclass(frozen=True)
class PolynomialCalibration:
    """A soil-specific calibration θ = c0 + c1 x + c2 x² + ... from configuration.

    `input` says what x is: TEROS 12 RAW counts, apparent permittivity, or
    ``reading``: another sensor's own output (e.g. a Modbus probe's moisture
    in %), checked only against the physical limits of water content.
    Coefficients come from a soil-specific calibration (METER, "Soil sensor
    calibration" application note: fit θ measured gravimetrically against
    the sensor output over 4-6 water contents).
    """

    coefficients: tuple[float, ...] = setting(check=lambda c: 1 <= len(c) <= 6,
                                              expect="1 to 6 coefficients, c0 first",
                                              doc="θ = c0 + c1 x + c2 x² + ... (m³/m³)")
    input: str = setting("raw", check=lambda s: s in ("raw", "permittivity", "reading"),
                         expect="'raw', 'permittivity' or 'reading'", doc="what x is")
    uncertainty: float = setting(0.02, check=lambda u: 0 <= u < 1, expect="m³/m³ in [0, 1)",
                                 doc="standard uncertainty of the calibration (m³/m³)")
    max_vwc: float = setting(1.0, check=lambda v: 0 < v <= 1, expect="a porosity in (0, 1]",
                             doc="above this the value is flagged suspect (the soil's porosity)")


def polynomial_vwc(x: Any, calibration: PolynomialCalibration) -> Calibrated:
    """Volumetric water content from a soil-specific polynomial (coefficients c0 first)."""
    xs, scalar = as_array(x)
    vwc = np.polynomial.polynomial.polyval(xs, np.asarray(calibration.coefficients, dtype=float))
    flags = FlagSet(xs.shape)
    if calibration.input == "raw":
        root = 2.887e-9 * xs**3 - 2.080e-5 * xs**2 + 5.276e-2 * xs - 43.39
        _raw_checks(flags, xs, root, root**2)
    elif calibration.input == "reading":
        flags.raise_where(np.isnan(xs), QualityFlag.MISSING, "missing")
    else:
        flags.raise_where(np.isnan(xs), QualityFlag.MISSING, "missing")
        flags.raise_where((xs < PERMITTIVITY_AIR) | (xs > PERMITTIVITY_WATER_MAX), QualityFlag.FAIL,
                          "permittivity_physical_limits")
    _vwc_checks(flags, vwc, calibration.max_vwc)
    return finish(vwc, np.asarray(calibration.uncertainty), flags, scalar)


EC_RANGE_US_CM = (0.0, 20_000.0)
"""TEROS 12 bulk EC range (manual 3.1)."""


def ec_at_25c(ec_us_cm: Any, temperature_c: Any) -> Calibrated:
    """Bulk electrical conductivity (µS/cm) corrected to 25 °C, for sensors that report EC at soil temperature.

    Not for the TEROS 12: it already reports bulk EC corrected to 25 °C
    (METER TEROS 11/12 Integrator Guide), and correcting again biases EC by
    up to 40 % at 5 °C (`calibration.applicability.check_moisture_calibration`
    refuses the combination).

    Sheets & Hendrickx (1995): EC25 = EC_T (0.4470 + 1.4034 exp(-T/26.815)).
    Uncertainty: TEROS 12 accuracy ±(5 % + 10 µS/cm) of the reading, scaled by
    the same factor. Frozen soil (T < 0 °C) is outside the correction's
    validity and flagged suspect.
    """
    ec, scalar_ec = as_array(ec_us_cm)
    t, scalar_t = as_array(temperature_c)
    ec, t = np.broadcast_arrays(ec, t)
    factor = 0.4470 + 1.4034 * np.exp(-t / 26.815)
    ec25 = ec * factor
    unc = (0.05 * np.abs(ec) + 10.0) * factor
    flags = FlagSet(ec.shape)
    flags.raise_where(np.isnan(ec) | np.isnan(t), QualityFlag.MISSING, "missing")
    flags.raise_where(ec < EC_RANGE_US_CM[0], QualityFlag.FAIL, "ec_physical_limits")
    flags.raise_where(ec > EC_RANGE_US_CM[1], QualityFlag.SUSPECT, "ec_sensor_range")
    flags.raise_where((t < -40.0) | (t > 60.0), QualityFlag.FAIL, "temperature_sensor_range")
    flags.raise_where(t < 0.0, QualityFlag.SUSPECT, "ec_frozen_soil")
    return finish(ec25, unc, flags, scalar_ec and scalar_t)


def _raw_checks(flags: FlagSet, raw: np.ndarray, root: np.ndarray, eps: np.ndarray) -> None:
    flags.raise_where(np.isnan(raw), QualityFlag.MISSING, "missing")
    # Eq. 7's root is negative (or ε below air's) under the air reading (RAW ≈ 1650):
    # the count cannot come from a working sensor in any medium.
    flags.raise_where((root < 0) | (eps < PERMITTIVITY_AIR), QualityFlag.FAIL, "raw_range")
    # Above water's permittivity (RAW ≈ 3400) Eq. 7 is extrapolating: a very wet medium, a
    # sensor in standing water or a fault; a person should look.
    flags.raise_where(eps > PERMITTIVITY_WATER_MAX, QualityFlag.SUSPECT, "raw_range_high")


def _vwc_checks(flags: FlagSet, vwc: np.ndarray, media_max: float) -> None:
    flags.raise_where((vwc < VWC_FAIL_BELOW) | (vwc > 1.0), QualityFlag.FAIL, "vwc_physical_limits")
    # Slightly negative: air gaps around the needles (manual 4.3, troubleshooting).
    flags.raise_where(vwc < 0.0, QualityFlag.SUSPECT, "vwc_below_zero")
    flags.raise_where(vwc > media_max, QualityFlag.SUSPECT, "vwc_above_range")
