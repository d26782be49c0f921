"""One reading in, the observations to spool out: raw values, QC flags, calibrated values.

Order per reading (DESIGN.md, "The flow"):

1. raw observations, always: one per quantity the driver declares. A failed
   poll gives NaN with flag MISSING and flag_test = the driver status
   (``timeout``, ``absent``...), so a gap is a recorded fact, not a silence.
   Values that came back with a warning status keep their value: STUCK and
   SATURATED are SUSPECT, OUT_OF_RANGE is FAIL.
2. QARTOD checks on every quantity with a ``[probes.qc.<quantity>]`` table
   (`collector.quality`), raw or calibrated.
3. calibration per ``[probes.calibration.<quantity>]`` (`collector.calibrate`);
   a calibrated value is never better than its input: its flag is the worst
   of the calibration's, its own QC's and its inputs'.
4. a reading taken while the clock is not synchronised is SUSPECT
   (``clock_unsynced``) throughout.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

from collector.calibrate import Calibrator
from collector.config import GatewayConfig, ProbeSettings
from collector.quality import SeriesQc
from firmware_bridge.reading import DriverStatus, Reading, Spectrum
from humus.records import Observation, QualityFlag, Source

_WARNING_STATUS = {DriverStatus.STUCK: QualityFlag.SUSPECT, DriverStatus.SATURATED: QualityFlag.SUSPECT,
                   DriverStatus.OUT_OF_RANGE: QualityFlag.FAIL}
_ORDER = {QualityFlag.NOT_EVALUATED: 0, QualityFlag.PASS: 1, QualityFlag.SUSPECT: 2,
          QualityFlag.FAIL: 3, QualityFlag.MISSING: 4}
SPECTRUM_QUANTITY = "spectrum"
REFLECTANCE_QUANTITY = "reflectance"
REFLECTANCE_MODEL = "dark-white-reference"


def worse(a: tuple[QualityFlag, str | None], b: tuple[QualityFlag, str | None]) -> tuple[QualityFlag, str | None]:
    return b if _ORDER[b[0]] > _ORDER[a[0]] else a


class ProbePipeline:
    """Turns the readings of one probe into observations; keeps its QC windows."""

    def __init__(self, cfg: GatewayConfig, probe: ProbeSettings, quantities: Mapping[str, str],
                 qc_state: Mapping[str, str] | None = None) -> None:
        self.site, self.gateway = cfg.gateway.site, cfg.gateway.id
        self.probe = probe
        self.quantities = dict(quantities)
        self.calibrators = [Calibrator(q, c) for q, c in probe.calibration.items()]
        # series_key per source, cached: formatting it (and Source.value, a Python-level property)
        # twice per observation was a tenth of this pipeline's time.
        self._keys: dict[Source, dict[str, str]] = {Source.RAW: {}, Source.CALIBRATED: {}}
        self.qc: dict[str, SeriesQc] = {}
        for q, s in probe.qc.items():
            for source in (Source.RAW, Source.CALIBRATED):
                key = self.series_key(q, source)
                self.qc[key] = SeriesQc(s, probe.interval_s)
                if qc_state and key in qc_state:
                    self.qc[key].restore(qc_state[key])
        self._last: dict[str, Observation] = {}

    def series_key(self, quantity: str, source: Source) -> str:
        keys = self._keys[source]
        key = keys.get(quantity)
        if key is None:
            key = keys[quantity] = f"{self.probe.id}/{quantity}/{source.value}"
        return key

    def process(self, reading: Reading, slot_ns: int, clock_synced: bool = True) -> tuple[list[Observation], dict[str, str]]:
        """Observations for one reading, and the QC state that changed (saved with them)."""
        out: list[Observation] = []
        touched: dict[str, str] = {}
        status = reading.status
        got_values = status is DriverStatus.OK or status in _WARNING_STATUS
        base = (QualityFlag.NOT_EVALUATED, None)
        if status in _WARNING_STATUS:
            base = (_WARNING_STATUS[status], status.value)
        if not clock_synced:
            base = worse(base, (QualityFlag.SUSPECT, "clock_unsynced"))
        common = dict(site=self.site, gateway=self.gateway, probe=self.probe.id, time_ns=reading.time_ns,
                      depth_cm=self.probe.depth_cm)
        raw_flags: dict[str, tuple[QualityFlag, str | None]] = {}
        names = list(self.quantities)
        for q in reading.values:
            if q not in self.quantities:
                names.append(q)
        for q in names:
            if q == SPECTRUM_QUANTITY and reading.spectrum is not None:
                continue
            rv = reading.values.get(q) if got_values else None
            if rv is None or not math.isfinite(rv.value):
                test = status.value if status is not DriverStatus.OK else "missing"
                o = Observation(quantity=q, value=math.nan, unit=self.quantities.get(q, rv.unit if rv else ""),
                                flag=QualityFlag.MISSING, flag_test=test, **common)
                self._qc(o, slot_ns, touched, out)
                raw_flags[q] = (QualityFlag.MISSING, test)
                continue
            flag = self._qc_flag(q, Source.RAW, slot_ns, rv.value, touched, out, base)
            raw_flags[q] = flag
            out.append(Observation(quantity=q, value=float(rv.value), unit=rv.unit or self.quantities.get(q, ""),
                                   flag=flag[0], flag_test=flag[1], **common))
            self._last[self.series_key(q, Source.RAW)] = out[-1]
        sp = reading.spectrum if got_values else None
        if sp is not None and sp.values and all(math.isfinite(v) for v in sp.values):
            out.append(Observation(quantity=SPECTRUM_QUANTITY, value=tuple(float(v) for v in sp.values),
                                   unit=sp.unit[:32], wavelengths_nm=tuple(float(w) for w in sp.wavelengths_nm),
                                   flag=base[0] if base[0] is not QualityFlag.NOT_EVALUATED else QualityFlag.NOT_EVALUATED,
                                   flag_test=base[1], **common))
            raw_flags[SPECTRUM_QUANTITY] = base
            out.extend(self._references(sp, base, common))
        elif SPECTRUM_QUANTITY in self.quantities and SPECTRUM_QUANTITY not in raw_flags:
            test = status.value if status is not DriverStatus.OK else "missing"
            out.append(Observation(quantity=SPECTRUM_QUANTITY, value=math.nan, unit=self.quantities[SPECTRUM_QUANTITY],
                                   flag=QualityFlag.MISSING, flag_test=test, **common))
            raw_flags[SPECTRUM_QUANTITY] = (QualityFlag.MISSING, test)
        for cal in self.calibrators:
            inputs = [raw_flags.get(i, (QualityFlag.MISSING, status.value)) for i in cal.inputs] or \
                     [raw_flags.get(SPECTRUM_QUANTITY, (QualityFlag.MISSING, status.value))]
            c = cal.apply(reading) if got_values else None
            if c is None:
                inherited = (QualityFlag.MISSING, status.value if status is not DriverStatus.OK else "missing_input")
                o = Observation(quantity=cal.quantity, value=math.nan, unit=cal.unit, flag=inherited[0],
                                flag_test=inherited[1], source=Source.CALIBRATED, model_id=cal.model_id,
                                model_version=cal.model_version, **common)
                self._qc(o, slot_ns, touched, out)
                continue
            flag = (c.flag, c.flag_test)
            for f in inputs:
                flag = worse(flag, f)
            if c.flag is QualityFlag.MISSING or not math.isfinite(c.value):
                o = Observation(quantity=cal.quantity, value=math.nan, unit=c.unit, flag=QualityFlag.MISSING,
                                flag_test=c.flag_test or "calibration_missing", source=Source.CALIBRATED,
                                model_id=c.model_id, model_version=c.model_version, **common)
                self._qc(o, slot_ns, touched, out)
                continue
            flag = self._qc_flag(cal.quantity, Source.CALIBRATED, slot_ns, c.value, touched, out, worse(flag, base))
            out.append(Observation(quantity=cal.quantity, value=c.value, unit=c.unit, uncertainty=c.uncertainty,
                                   flag=flag[0], flag_test=flag[1], source=Source.CALIBRATED,
                                   model_id=c.model_id, model_version=c.model_version, **common))
            self._last[self.series_key(cal.quantity, Source.CALIBRATED)] = out[-1]
        return out, touched

    @staticmethod
    def _references(sp: Spectrum, base: tuple[QualityFlag, str | None], common: dict) -> list[Observation]:
        """The dark and white references beside the counts, and the reflectance they give.

        Counts alone cannot be recalibrated: the references of that very
        reading are raw data too. Reflectance (S - D) / (W - D) is what
        researchers and models use, so it is sent ready-made, as a calibrated
        value of the fixed 'dark-white-reference' method.
        """
        from calibration.spectra import reflectance   # numpy: imported only where spectra are configured

        wl = tuple(float(w) for w in sp.wavelengths_nm)
        n = len(sp.values)
        refs = {name: tuple(float(v) for v in ref) for name, ref in (("spectrum_dark", sp.dark),
                                                                      ("spectrum_white", sp.white))
                if ref is not None and len(ref) == n and all(math.isfinite(v) for v in ref)}
        out = [Observation(quantity=name, value=ref, unit=sp.unit[:32], wavelengths_nm=wl, flag=base[0],
                           flag_test=base[1], **common) for name, ref in refs.items()]
        if sp.unit == "counts" and len(refs) == 2:
            r = reflectance(sp.values, refs["spectrum_dark"], refs["spectrum_white"])
            values = tuple(float(v) for v in r.value)
            if all(math.isfinite(v) for v in values):
                flag = worse(base, (QualityFlag(int(r.flag)), r.flag_test or None))
                out.append(Observation(quantity=REFLECTANCE_QUANTITY, value=values, unit="1", wavelengths_nm=wl,
                                       flag=flag[0], flag_test=flag[1], source=Source.CALIBRATED,
                                       model_id=REFLECTANCE_MODEL, model_version="1", **common))
        return out

    def _qc(self, o: Observation, slot_ns: int, touched: dict[str, str], out: list[Observation]) -> None:
        """A missing value still enters its QC window (as NaN), then is appended."""
        self._qc_flag(o.quantity, o.source, slot_ns, math.nan, touched, out, (o.flag, o.flag_test))
        out.append(o)

    def _qc_flag(self, quantity: str, source: Source, slot_ns: int, value: float, touched: dict[str, str],
                 out: list[Observation], base: tuple[QualityFlag, str | None]) -> tuple[QualityFlag, str | None]:
        key = self.series_key(quantity, source)
        qc = self.qc.get(key)
        if qc is None:
            return base if base[0] is not QualityFlag.NOT_EVALUATED else (QualityFlag.NOT_EVALUATED, None)
        verdict, late = qc.check(slot_ns, value)
        touched[key] = qc.state()
        if late is not None:
            prev = self._last.get(key)
            if prev is not None and _ORDER[late.flag] > _ORDER[prev.flag]:
                out.append(dataclasses.replace(prev, flag=late.flag, flag_test=late.test, revision=prev.revision + 1))
        return worse(base, (verdict.flag, verdict.test)) if base[0] is not QualityFlag.NOT_EVALUATED \
            else (verdict.flag, verdict.test)
