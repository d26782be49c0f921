"""Soil cores from the laboratory: read, store beside the sensor series, and compare with the sensors.

A lab CSV has one row per core and layer:

    site,layer,date,soc_percent,bulk_density,soc_uncertainty,bd_uncertainty,core,1350,1360,...
    north-field,0-15,2025-03-04,2.31,1.29,0.05,0.04,a,0.412,0.415,...

Required: site, the layer (``layer`` as TOP-BOTTOM in cm, or ``top_cm`` and
``bottom_cm``), date (ISO 8601) and soc_percent. Optional: bulk_density
(g/cm3), soc_uncertainty and bd_uncertainty (standard uncertainties, same
units), core (a replicate id), and the core's spectrum as one column per
wavelength in nm (the layout of `humus calibrate`'s spectral libraries).

Stored as observations of gateway ``lab`` and probe ``core-TOP-BOTTOM[-CORE]``
(``12.5`` written ``12p5``), depth_cm = the layer's top, at the date's
midnight UTC: quantities ``lab_soc`` (%), ``lab_bulk_density`` (g/cm3) and
``lab_spectrum``. Raw measurements (source raw), flag pass. Importing the
same file again writes the same points (the stores keep them once).

Comparison: each core's SOC against the mean of the sensor estimates of
its site and layer within ± `window_days` of its date (usable flags only,
the newest model version). Bias = mean(sensor - lab); RMSE; z_i = (sensor -
lab) / sqrt(u_sensor² + u_lab²). The calibration holds while Σ z_i² stays
within the 95 % quantile of χ²(n): the stated uncertainties explain the
differences, bias included (the test of a stated uncertainty of
JCGM 100:2008 / ISO 13528:2022 §9.7 z-scores, pooled).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from calibration._stats import chi2_cdf
from humus.file_checks import FileProblem, read_regular
from humus.records import ID_PATTERN, Observation, QualityFlag, Source

LAB_GATEWAY = "lab"
SOC, BD, SPECTRUM = "lab_soc", "lab_bulk_density", "lab_spectrum"
MAX_CSV_BYTES = 256 << 20
DAY_NS = 86400 * 10**9
_PROBE = re.compile(r"\Acore-(?P<top>\d+(?:p\d+)?)-(?P<bottom>\d+(?:p\d+)?)(?:-(?P<core>[a-z0-9-]+))?\Z")
_LAYER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*(?:cm)?\s*$")


class LabError(ValueError):
    """A lab file that cannot be used; str() is the one line (file, line, column, expectation)."""


@dataclass(frozen=True)
class Core:
    site: str
    top_cm: float
    bottom_cm: float
    date: dt.date
    soc_percent: float
    bulk_density: float | None = None
    soc_uncertainty: float | None = None
    bd_uncertainty: float | None = None
    core: str = ""
    spectrum: tuple[float, ...] | None = None
    wavelengths_nm: tuple[float, ...] | None = None

    @property
    def time_ns(self) -> int:
        return (self.date - dt.date(1970, 1, 1)).days * DAY_NS

    @property
    def probe(self) -> str:
        def cm(x: float) -> str:
            return f"{x:g}".replace(".", "p")
        return f"core-{cm(self.top_cm)}-{cm(self.bottom_cm)}" + (f"-{self.core}" if self.core else "")

    @property
    def layer(self) -> str:
        return f"{self.top_cm:g}-{self.bottom_cm:g} cm"


def layer_of_probe(probe: str) -> tuple[float, float] | None:
    """(top, bottom) cm of a lab probe id `core-TOP-BOTTOM[-CORE]`, None for any other probe."""
    m = _PROBE.match(probe)
    if not m:
        return None
    return float(m.group("top").replace("p", ".")), float(m.group("bottom").replace("p", "."))


def read_lab_csv(path: str | Path) -> list[Core]:
    """The cores of a lab CSV; LabError (one line) naming the file, line and column of the first problem."""
    path = Path(path)
    try:
        text = read_regular(path, MAX_CSV_BYTES).decode("utf-8-sig")
    except FileProblem as e:
        raise LabError(f"{path}: {e.reason}; expected a lab results CSV file") from None
    except UnicodeDecodeError:
        raise LabError(f"{path}: not UTF-8 text; expected a lab results CSV file") from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise LabError(f"{path}: empty; expected a header with site, layer, date, soc_percent")
    header = [h.strip() for h in rows[0]]
    wl_cols = [(i, float(h)) for i, h in enumerate(header) if _is_number(h)]
    names = {h: i for i, h in enumerate(header) if not _is_number(h)}
    has_layer = "layer" in names or ("top_cm" in names and "bottom_cm" in names)
    missing = [c for c in ("site", "date", "soc_percent") if c not in names] + ([] if has_layer else ["layer"])
    if missing:
        raise LabError(f"{path}: line 1: no column {missing[0]!r}; expected site, layer (or top_cm and bottom_cm), "
                       "date, soc_percent")
    wavelengths = tuple(w for _, w in wl_cols) or None
    cores = []
    seen: dict[tuple, int] = {}
    for n, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise LabError(f"{path}: line {n}: {len(row)} cells for {len(header)} columns")

        def cell(name: str) -> str:
            return row[names[name]].strip() if name in names else ""

        def number(name: str, required: bool = False, lo: float = 0.0, hi: float = math.inf) -> float | None:
            text = cell(name)
            if not text:
                if required:
                    raise LabError(f"{path}: line {n}, column {name!r}: expected a number, the cell is empty")
                return None
            try:
                v = float(text)
            except ValueError:
                raise LabError(f"{path}: line {n}, column {name!r}: expected a number, got {text[:40]!r}") from None
            if not (math.isfinite(v) and lo <= v <= hi):
                raise LabError(f"{path}: line {n}, column {name!r}: expected a number from {lo:g} to {hi:g}, "
                               f"got {text[:40]!r}")
            return v

        site = cell("site")
        if not ID_PATTERN.fullmatch(site):
            raise LabError(f"{path}: line {n}, column 'site': expected a site id (a-z, 0-9, '-'), got {site[:40]!r}")
        if "layer" in names and cell("layer"):
            m = _LAYER.match(cell("layer"))
            if not m:
                raise LabError(f"{path}: line {n}, column 'layer': expected TOP-BOTTOM in cm like 0-15, "
                               f"got {cell('layer')[:40]!r}")
            top, bottom = float(m.group(1)), float(m.group(2))
        else:
            top, bottom = number("top_cm", True, 0, 10000), number("bottom_cm", True, 0, 10000)
        if not top < bottom:
            raise LabError(f"{path}: line {n}: layer {top:g}-{bottom:g} cm: expected top < bottom")
        try:
            date = dt.date.fromisoformat(cell("date")[:10])
        except ValueError:
            raise LabError(f"{path}: line {n}, column 'date': expected a date like 2025-03-04, "
                           f"got {cell('date')[:40]!r}") from None
        core = cell("core").lower()
        if core and not re.fullmatch(r"[a-z0-9-]{1,24}", core):
            raise LabError(f"{path}: line {n}, column 'core': expected a replicate id of 1-24 characters a-z, 0-9, "
                           f"'-', got {cell('core')[:40]!r}")
        spectrum = None
        if wl_cols:
            cells = [row[i].strip() for i, _ in wl_cols]
            if any(cells):
                try:
                    spectrum = tuple(float(c) for c in cells)
                except ValueError:
                    raise LabError(f"{path}: line {n}: a spectrum cell is not a number; expected one number per "
                                   "wavelength column") from None
                if not all(math.isfinite(v) for v in spectrum):
                    raise LabError(f"{path}: line {n}: the spectrum holds a non-finite number")
        c = Core(site, top, bottom, date, number("soc_percent", True, 0, 100), number("bulk_density", False, 0.05, 2.65),
                 number("soc_uncertainty", False, 0, 100), number("bd_uncertainty", False, 0, 2.65), core, spectrum,
                 wavelengths if spectrum else None)
        key = (c.site, c.probe, c.time_ns)
        if key in seen:
            raise LabError(f"{path}: line {n}: the same site, layer, date and core as line {seen[key]}; "
                           "expected a distinct 'core' id for replicates")
        seen[key] = n
        cores.append(c)
    if not cores:
        raise LabError(f"{path}: no data rows; expected one row per core and layer")
    return cores


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def observations(cores: Iterable[Core], spectrum_unit: str = "1") -> list[Observation]:
    """The cores as observations of gateway `lab` (see the module docstring for the layout)."""
    out = []
    for c in cores:
        common = dict(site=c.site, gateway=LAB_GATEWAY, probe=c.probe, depth_cm=float(c.top_cm), time_ns=c.time_ns,
                      flag=QualityFlag.PASS, source=Source.RAW)
        out.append(Observation(quantity=SOC, value=float(c.soc_percent), unit="%", uncertainty=c.soc_uncertainty,
                               **common))
        if c.bulk_density is not None:
            out.append(Observation(quantity=BD, value=float(c.bulk_density), unit="g/cm3",
                                   uncertainty=c.bd_uncertainty, **common))
        if c.spectrum is not None:
            out.append(Observation(quantity=SPECTRUM, value=c.spectrum, unit=spectrum_unit,
                                   wavelengths_nm=c.wavelengths_nm, **common))
    return out


# -- comparison --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    site: str
    layer: str
    time_ns: int
    core: str
    lab: float
    lab_uncertainty: float
    sensor: float
    sensor_uncertainty: float
    n_sensor: int
    model: str                  # "id@version" of most sensor values used

    @property
    def difference(self) -> float:
        return self.sensor - self.lab

    @property
    def z(self) -> float:
        u = math.hypot(self.lab_uncertainty, self.sensor_uncertainty)
        return self.difference / u if u > 0 else math.nan


@dataclass(frozen=True)
class Comparison:
    pairs: tuple[Pair, ...]
    unmatched: int                                  # cores without sensor values in the window
    n: int = 0
    bias: float = math.nan
    rmse: float = math.nan
    chi2: float = math.nan
    chi2_p: float = math.nan
    holds: bool | None = None                       # None: no pair to judge by
    by_model: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.holds is None:
            return "no core has sensor values within the window: nothing to judge"
        if self.holds:
            return (f"the calibration holds: sensor minus lab {self.bias:+.3g} % on average, RMSE {self.rmse:.3g} %, "
                    f"within the stated uncertainties (chi2 p = {self.chi2_p:.2f})")
        return (f"the calibration does not hold: sensor minus lab {self.bias:+.3g} % on average, RMSE {self.rmse:.3g} %, "
                f"beyond the stated uncertainties (chi2 p = {self.chi2_p:.3f}); check the model against new cores")


def summarise(pairs: Sequence[Pair], unmatched: int = 0) -> Comparison:
    if not pairs:
        return Comparison((), unmatched)
    d = np.array([p.difference for p in pairs])
    z = np.array([p.z for p in pairs])
    z = z[np.isfinite(z)]
    chi2 = float(np.sum(z * z)) if len(z) else math.nan
    p = 1.0 - chi2_cdf(chi2, len(z)) if len(z) else math.nan
    by_model: dict[str, dict] = {}
    for m in sorted({x.model for x in pairs}):
        sub = [x for x in pairs if x.model == m]
        dd = np.array([x.difference for x in sub])
        by_model[m] = {"n": len(sub), "bias": float(dd.mean()), "rmse": float(np.sqrt(np.mean(dd * dd)))}
    return Comparison(tuple(pairs), unmatched, len(pairs), float(d.mean()), float(np.sqrt(np.mean(d * d))), chi2, p,
                      bool(p >= 0.05) if len(z) else None, by_model)


def compare(store, sites, window_days: float = 1.0, worst_flag: QualityFlag = QualityFlag.NOT_EVALUATED) -> Comparison:
    """Pair each lab core of `sites` (observatory.sites.Site) with its layer's sensor estimates; see above."""
    from observatory import query

    pairs: list[Pair] = []
    unmatched = 0
    w = int(window_days * DAY_NS)
    for site in sites:
        for lab in query.series(store, site=site.id, gateway=LAB_GATEWAY, quantity=SOC):
            bounds = layer_of_probe(lab.probe)
            layer = site.layer_of(*bounds) if bounds else None
            if layer is None or not layer.probes:
                unmatched += len(lab)
                continue
            sensors = [s for p in layer.probes
                       for s in query.series(store, site=site.id, probe=p, quantity=site.soc_quantity,
                                             source="calibrated", since=int(lab.time_ns.min()) - w,
                                             until=int(lab.time_ns.max()) + DAY_NS + w)]
            for i, t in enumerate(lab.time_ns.tolist()):
                vals, uncs, models = [], [], []
                for s in sensors:
                    at = (s.time_ns >= t - w) & (s.time_ns < t + DAY_NS + w) & (s.flag <= int(worst_flag)) \
                        & np.isfinite(s.value)
                    vals += s.value[at].tolist()
                    uncs += s.uncertainty[at].tolist()
                    models += [f"{m}@{v}" for m, v in zip(np.asarray(s.model_id, dtype=object)[at],
                                                          np.asarray(s.model_version, dtype=object)[at])]
                if not vals:
                    unmatched += 1
                    continue
                u = np.array(uncs, dtype=float)
                # The model error is shared by the readings of one soil: their mean keeps it (no 1/sqrt(n)).
                u_sensor = float(np.sqrt(np.nanmean(u * u))) if np.isfinite(u).any() else 0.0
                lab_u = float(lab.uncertainty[i]) if math.isfinite(lab.uncertainty[i]) else 0.0
                core = lab.probe.split("-", 3)[3] if lab.probe.count("-") >= 3 else ""
                pairs.append(Pair(site.id, layer.label, t, core, float(lab.value[i]), lab_u, float(np.mean(vals)),
                                  u_sensor, len(vals), max(set(models), key=models.count)))
    return summarise(pairs, unmatched)
