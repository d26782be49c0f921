"""Site descriptions: the soil layers, their bulk density over time, and which probes measure which layer.

A sites file (TOML, validated like every Humus configuration: one line
naming the file, the key and the expectation):

    [sites.north-field]
    name = "North field"              # for people; the table key is the site id of the data
    baseline = 2024-03-01             # when monitoring of the change starts (a TOML date)
    latitude = 48.85                  # optional (WGS 84 degrees; NetCDF exports need them)
    longitude = 2.35
    reference_depth_cm = 30           # stock "to 30 cm" (default 30)

    [[sites.north-field.layers]]
    top_cm = 0
    bottom_cm = 15
    coarse_fraction = 0.05            # volume fraction of stones > 2 mm (default 0)
    probes = ["nir-1", "teros-1"]     # probes whose values stand for this layer
    bulk_density = [                  # fine-earth bulk density, g/cm3, with its standard uncertainty
        { date = 2024-03-01, value = 1.31, uncertainty = 0.05 },
        { date = 2026-03-01, value = 1.27, uncertainty = 0.05 },
    ]

At a time t a layer's bulk density is the latest measured at or before t
(the earliest before the first measurement): bulk density is resampled
every few years, not continuously. Stocks follow calibration.stock
(FAO GSOC-MRV 2020, Eq. 1).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from calibration.stock import BD_LIMITS, Layer
from humus.config import ConfigError, load_section, read_toml, setting
from humus.records import ID_PATTERN, QUANTITY_PATTERN

DAY_NS = 86400 * 10**9


def to_date(value: Any) -> dt.date:
    """A TOML date (or date-time), or an ISO 8601 date string."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value.strip())
    raise ValueError(f"{value!r} is not a date")


def _is_date(value: Any) -> bool:
    try:
        to_date(value)
        return True
    except ValueError:
        return False


def date_ns(value: Any) -> int:
    """Nanoseconds since 1970 of a date's midnight UTC."""
    d = to_date(value)
    return (d - dt.date(1970, 1, 1)).days * DAY_NS


@dataclass(frozen=True)
class BulkDensity:
    date: Any = setting(check=_is_date, expect="a date like 2026-03-01")
    value: float = setting(check=lambda v: BD_LIMITS[0] <= v <= BD_LIMITS[1],
                           expect=f"a fine-earth bulk density from {BD_LIMITS[0]} to {BD_LIMITS[1]} g/cm3")
    uncertainty: float = setting(0.0, check=lambda v: 0 <= v < 1, expect="a standard uncertainty from 0 to 1 g/cm3")

    @property
    def time_ns(self) -> int:
        return date_ns(self.date)


@dataclass(frozen=True)
class SiteLayer:
    top_cm: float = setting(check=lambda v: 0 <= v <= 10000, expect="a depth in cm >= 0")
    bottom_cm: float = setting(check=lambda v: 0 < v <= 10000, expect="a depth in cm > 0")
    bulk_density: tuple[BulkDensity, ...] = setting(
        check=lambda v: len(v) > 0, expect="a list of at least one { date, value, uncertainty }")
    coarse_fraction: float = setting(0.0, check=lambda v: 0 <= v < 1, expect="a volume fraction from 0 to below 1")
    probes: tuple[str, ...] = setting((), check=lambda v: all(ID_PATTERN.fullmatch(p) for p in v),
                                      expect="a list of probe ids (a-z, 0-9, '-')")

    def __post_init__(self) -> None:
        if not self.top_cm < self.bottom_cm:
            raise ValueError(f"top_cm < bottom_cm, got {self.top_cm:g} and {self.bottom_cm:g}")
        dates = [b.time_ns for b in self.bulk_density]
        if len(set(dates)) != len(dates):
            raise ValueError("one bulk density per date")

    @property
    def label(self) -> str:
        return f"{self.top_cm:g}-{self.bottom_cm:g} cm"

    def bulk_density_at(self, time_ns: int) -> BulkDensity:
        """The latest measurement at or before `time_ns`, else the earliest."""
        ordered = sorted(self.bulk_density, key=lambda b: b.time_ns)
        before = [b for b in ordered if b.time_ns <= time_ns]
        return before[-1] if before else ordered[0]

    def stock_layer(self, time_ns: int, soc_percent: float, soc_uncertainty: float = 0.0,
                    with_bd_uncertainty: bool = True) -> Layer:
        bd = self.bulk_density_at(time_ns)
        return Layer(self.top_cm, self.bottom_cm, soc_percent, bd.value, self.coarse_fraction, soc_uncertainty,
                     bd.uncertainty if with_bd_uncertainty else 0.0)


@dataclass(frozen=True)
class Site:
    baseline: Any = setting(check=_is_date, expect="a date like 2024-03-01 (when monitoring of the change starts)")
    layers: tuple[SiteLayer, ...] = setting(check=lambda v: len(v) > 0, expect="at least one [[layers]] table")
    name: str = setting("", check=lambda v: len(v) <= 200, expect="a name of at most 200 characters")
    latitude: float | None = setting(None, check=lambda v: v is None or -90 <= v <= 90,
                                     expect="degrees north from -90 to 90")
    longitude: float | None = setting(None, check=lambda v: v is None or -180 <= v <= 180,
                                      expect="degrees east from -180 to 180")
    reference_depth_cm: float = setting(30.0, check=lambda v: 0 < v <= 1000, expect="a depth in cm > 0")
    soc_quantity: str = setting("soc", check=lambda v: bool(QUANTITY_PATTERN.fullmatch(v)), expect="a quantity name")
    moisture_quantity: str = setting("vwc", check=lambda v: bool(QUANTITY_PATTERN.fullmatch(v)),
                                     expect="a quantity name")
    temperature_quantity: str = setting("soil_temp", check=lambda v: bool(QUANTITY_PATTERN.fullmatch(v)),
                                        expect="a quantity name")
    id: str = ""

    def __post_init__(self) -> None:
        ordered = sorted(self.layers, key=lambda l: l.top_cm)
        for a, b in zip(ordered, ordered[1:]):
            if b.top_cm < a.bottom_cm:
                raise ValueError(f"layers that do not overlap, got {a.label} and {b.label}")

    @property
    def baseline_ns(self) -> int:
        return date_ns(self.baseline)

    @property
    def title(self) -> str:
        return self.name or self.id

    @property
    def ordered_layers(self) -> list[SiteLayer]:
        return sorted(self.layers, key=lambda l: l.top_cm)

    @property
    def probes(self) -> list[str]:
        return sorted({p for l in self.layers for p in l.probes})

    def layer_of(self, top_cm: float, bottom_cm: float) -> SiteLayer | None:
        """The configured layer with these bounds, or the one containing the core's middle."""
        for layer in self.layers:
            if layer.top_cm == top_cm and layer.bottom_cm == bottom_cm:
                return layer
        mid = (top_cm + bottom_cm) / 2
        return next((l for l in self.layers if l.top_cm <= mid < l.bottom_cm), None)


@dataclass(frozen=True)
class SitesFile:
    sites: dict[str, Site] = setting(check=lambda v: len(v) > 0, expect="at least one [sites.<id>] table")


def load_sites(path: str | Path) -> dict[str, Site]:
    """The sites of a TOML file, by id; ConfigError (one line: file, key, expectation) when unusable."""
    doc = load_section(SitesFile, read_toml(path), file=path)
    out: dict[str, Site] = {}
    for sid, site in doc.sites.items():
        if not ID_PATTERN.fullmatch(sid):
            raise ConfigError(path, f"sites.{sid}", "a site id of 1-64 characters a-z, 0-9 and '-'", sid)
        out[sid] = dataclasses.replace(site, id=sid)
    return out


def pick(sites: Mapping[str, Site], wanted: list[str] | None, path: str | Path) -> list[Site]:
    """The sites asked for (all when none), or ConfigError naming the missing one."""
    if not wanted:
        return list(sites.values())
    out = []
    for sid in wanted:
        if sid not in sites:
            raise ConfigError(path, f"sites.{sid}", f"a site described in the file (it has {', '.join(sites)})",
                              found="no such table")
        out.append(sites[sid])
    return out
