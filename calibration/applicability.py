"""Science checks of a calibration against the probe it is configured for, before any reading arrives.

A model that cannot apply to a probe does not fail loudly at run time: a
spectral model whose grid the probe does not cover gives MISSING for every
reading, forever; a TEROS equation fed another sensor's numbers gives
plausible-looking nonsense. These pure functions return the problems as
one-line messages naming the probe, the model and the ranges, for the
configuration check (`humus check-config`) and the collector's start-up to
refuse. An empty list means nothing is wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import numpy as np   # imported in check_applicable: the moisture check must not load numpy on a gateway

INPUT_KINDS = ("absorbance", "reflectance", "counts")
MAX_SPACING_RATIO = 4.0
"""A probe sampling the model's range more than this many times more coarsely than the model's grid feeds
interpolated detail to derivative preprocessing (a Savitzky-Golay window of 11 model bands)."""
GRID_TOLERANCE_NM = 1e-6


def check_applicable(model: Any, probe_wavelengths_nm: Sequence[float] | np.ndarray | None, input_kind: str | None,
                     *, probe: str = "", has_references: bool = True) -> list[str]:
    """Problems that stop `model` (a SpectralModel) from predicting from this probe's spectra.

    `probe_wavelengths_nm`: the wavelengths the probe reports (None if the
    probe reports no spectrum); `input_kind`: what its values are
    ("counts" need dark and white references, `has_references`).
    """
    import numpy as np

    who = f"probe {probe}: " if probe else ""
    name = f"spectral model {model.id} v{model.version}"
    grid = np.asarray(model.grid, dtype=float)
    lo, hi = float(grid[0]), float(grid[-1])
    problems: list[str] = []
    if probe_wavelengths_nm is None or len(probe_wavelengths_nm) == 0:
        return [f"{who}{name} needs a spectrum ({lo:g}-{hi:g} nm) but the probe reports none"]
    wl = np.sort(np.asarray(probe_wavelengths_nm, dtype=float))
    if not np.isfinite(wl).all():
        return [f"{who}probe wavelengths must be finite numbers (nm)"]
    plo, phi = float(wl[0]), float(wl[-1])
    if plo > lo + GRID_TOLERANCE_NM or phi < hi - GRID_TOLERANCE_NM:
        missing = grid[(grid < plo - GRID_TOLERANCE_NM) | (grid > phi + GRID_TOLERANCE_NM)]
        problems.append(f"{who}{name} needs {lo:g}-{hi:g} nm but the probe measures {plo:g}-{phi:g} nm: "
                        f"{missing.shape[0]} of the model's {grid.shape[0]} bands are not covered, so every "
                        f"reading would be MISSING; use a model fitted on {max(lo, plo):g}-{min(hi, phi):g} nm")
    inside = wl[(wl >= lo - GRID_TOLERANCE_NM) & (wl <= hi + GRID_TOLERANCE_NM)]
    if inside.shape[0] >= 2 and grid.shape[0] >= 2:
        probe_step = float(np.median(np.diff(inside)))
        model_step = float(np.median(np.diff(grid)))
        if probe_step > MAX_SPACING_RATIO * model_step:
            problems.append(f"{who}{name} was fitted on a {model_step:.3g} nm grid but the probe samples every "
                            f"{probe_step:.3g} nm: the model would see interpolated spectra; fit the model on "
                            f"spectra resampled to the probe's wavelengths")
    if input_kind is not None and input_kind not in INPUT_KINDS:
        problems.append(f"{who}spectrum kind {input_kind!r} for {name}: expected one of {', '.join(INPUT_KINDS)}")
    elif input_kind == "counts" and not has_references:
        problems.append(f"{who}{name} converts raw counts to reflectance with dark and white references, "
                        f"which the probe does not report; configure the probe to send reflectance or references")
    return problems


TEROS12_DRIVERS = ("teros12",)
"""Drivers that report TEROS 11/12 RAW calibrated counts (METER equations 5-7 apply only to these)."""
EC_AT_25C_DRIVERS = ("teros12",)
"""Drivers whose bulk EC is already corrected to 25 °C by the sensor (TEROS 12: METER TEROS 11/12
Integrator Guide, bulk EC output "corrected to 25 °C"; the driver documents it)."""


def check_moisture_calibration(model: str, driver: str, *, probe: str = "", polynomial_input: str | None = None,
                               input_unit: str | None = None) -> list[str]:
    """Problems of a moisture/EC calibration (collector model name) used with a probe `driver`."""
    who = f"probe {probe} (driver {driver}): " if probe else f"driver {driver}: "
    problems: list[str] = []
    if model in ("teros12_vwc", "teros12_permittivity") and driver not in TEROS12_DRIVERS:
        problems.append(f"{who}calibration {model} converts TEROS 11/12 RAW counts (METER manual equations "
                        f"5-7); this driver does not report them: use polynomial_vwc with input 'reading' "
                        f"or the sensor's own calibration")
    if model == "polynomial_vwc" and polynomial_input == "raw" and driver not in TEROS12_DRIVERS:
        problems.append(f"{who}polynomial_vwc with input 'raw' runs the TEROS RAW-count checks on a sensor "
                        f"that reports no RAW counts: set polynomial_input to 'reading' (or 'permittivity')")
    if model == "ec25" and driver in EC_AT_25C_DRIVERS:
        problems.append(f"{who}calibration ec25 would correct the EC to 25 °C a second time: the TEROS 12 "
                        f"already reports bulk EC at 25 °C; publish the raw ec_bulk as it is")
    if input_unit is not None:
        expected = {"teros12_vwc": ("counts",), "teros12_permittivity": ("counts",),
                    "topp_vwc": ("1", "", "permittivity"), "ec25": ("uS/cm", "µS/cm")}.get(model)
        if expected and input_unit not in expected:
            problems.append(f"{who}calibration {model} expects its input in {' or '.join(repr(e) for e in expected)}"
                            f", the probe reports {input_unit!r}")
    return problems
