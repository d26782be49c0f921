"""Apply the configured calibration of each calibrated quantity to one reading.

One `Calibrator` per ``[probes.calibration.<quantity>]`` table, built once
when the configuration is loaded (a spectral model file is read and checked
then, so a bad file is a configuration error, not a failure at every poll).
`apply` never raises: a model that fails gives a MISSING calibrated value
with the reason in flag_test, and the raw observation is kept regardless.

Model ids and versions name the equation and its source, so a stored value
says how it was made: e.g. ``teros12-vwc-mineral`` version ``meter-18224-eq5``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

from collector.config import CalibrationSettings
from firmware_bridge.reading import Reading
from humus.records import QualityFlag

log = logging.getLogger(__name__)
_FLAGS = {int(f): f for f in QualityFlag}


@dataclass(frozen=True, slots=True)
class CalibratedValue:
    quantity: str
    value: float
    unit: str
    uncertainty: float | None
    flag: QualityFlag
    flag_test: str | None
    model_id: str
    model_version: str


class CalibrationSetupError(ValueError):
    """A calibration that cannot be built (e.g. an unreadable model file); `quantity` says which."""

    quantity = ""


class Calibrator:
    def __init__(self, quantity: str, settings: CalibrationSettings) -> None:
        self.quantity = quantity
        self.settings = settings
        try:
            self.model_id, self.model_version, self.unit, self._fn = _build(settings)
        except CalibrationSetupError as e:
            e.quantity = quantity     # which [probes.calibration.<quantity>] it was
            raise
        self.model = getattr(self._fn, "model", None)   # the SpectralModel of a spectral calibration
        self.inputs = tuple(q for q in (settings.input, settings.temperature_input) if q)

    def apply(self, reading: Reading) -> CalibratedValue | None:
        """The calibrated value, or None when the reading lacks this model's inputs entirely."""
        s = self.settings
        try:
            if s.model == "spectral":
                if reading.spectrum is None:
                    return None
                return self._wrap(self._fn(reading))
            if s.input not in reading.values:
                return None
            if s.model == "ec25":
                if s.temperature_input not in reading.values:
                    return None
                r = self._fn(reading.values[s.input].value, reading.values[s.temperature_input].value)
            else:
                r = self._fn(reading.values[s.input].value)
            return self._wrap(r)
        except Exception as e:  # noqa: BLE001 - a model bug must not lose the raw value
            log.warning("probe %s: calibration %s of %s failed (%s: %s); raw values kept, check the model",
                        reading.probe, s.model, self.quantity, type(e).__name__, e)
            return CalibratedValue(self.quantity, math.nan, self.unit, None, QualityFlag.MISSING,
                                   "calibration_error", self.model_id, self.model_version)

    def _wrap(self, r: Any) -> CalibratedValue:
        value = float(r.value)
        code = int(r.flag)
        flag = _FLAGS.get(code) or QualityFlag(code)    # a dict, not the Enum call: this runs per value
        unc = float(r.uncertainty) if r.uncertainty is not None and math.isfinite(float(r.uncertainty)) else None
        if not math.isfinite(value):
            value, flag = math.nan, QualityFlag.MISSING
        test = str(r.flag_test) or None
        if flag is QualityFlag.MISSING and not test:
            test = "calibration_missing"
        model_id = getattr(r, "model_id", None) or self.model_id
        version = getattr(r, "model_version", None) or self.model_version
        return CalibratedValue(self.quantity, value, self.unit, unc, flag, test if flag is not QualityFlag.PASS else None,
                               model_id, str(version))


def _build(s: CalibrationSettings) -> tuple[str, str, str, Callable[..., Any]]:
    # Scalar equations in pure Python (collector.scalar_calibration): numpy is imported only for spectra.
    from collector import scalar_calibration as sc

    if s.model == "teros12_vwc":
        eq = "eq5" if s.media == "mineral" else "eq6"
        media = s.media
        return f"teros12-vwc-{s.media}", f"meter-18224-{eq}", "m3/m3", lambda x: sc.teros12_vwc(x, media)
    if s.model == "teros12_permittivity":
        return "teros12-permittivity", "meter-18224-eq7", "1", sc.teros12_permittivity
    if s.model == "topp_vwc":
        return "topp-1980", "eq6", "m3/m3", sc.topp_vwc
    if s.model == "ec25":
        return "ec25-sheets-hendrickx-1995", "1", "uS/cm", sc.ec_at_25c
    if s.model == "polynomial_vwc":
        coefficients, kind, unc = tuple(s.coefficients), s.polynomial_input, s.uncertainty
        version = "c=" + ",".join(f"{c:g}" for c in s.coefficients)
        return "polynomial-vwc", version[:128], "m3/m3", lambda x: sc.polynomial_vwc(x, coefficients, kind, unc)
    if s.model == "spectral":
        from calibration.model import ModelFileError, SpectralModel

        try:
            model = SpectralModel.load(s.path)
        except ModelFileError as e:
            raise CalibrationSetupError(str(e)) from None
        unit = str(model.meta.get("unit") or model.meta.get("target_unit") or "%")
        kind = s.kind or None

        def predict(reading: Reading) -> Any:
            sp = reading.spectrum
            assert sp is not None
            k = kind or {"counts": "counts", "reflectance": "reflectance"}.get(sp.unit)
            return model.predict(sp.wavelengths_nm, sp.values, kind=k, dark=sp.dark, white=sp.white)

        predict.model = model   # type: ignore[attr-defined]  # for the configuration checks (Calibrator.model)
        return model.id, model.version, unit[:32], predict
    raise CalibrationSetupError(f"unknown calibration model {s.model!r}")
