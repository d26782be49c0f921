"""From the archive to what a report says about one site: SOC per layer, stocks, trend, quality, models, lab.

Chain, per interval of `every` (default 7 days, epoch-aligned):

1. each probe's calibrated SOC (newest model version per time, observatory.query)
   is averaged over the interval, usable flags only (pass, not evaluated);
2. a layer's SOC is the mean of its probes' interval means;
3. stocks (calibration.stock): per layer, cumulative to the site's reference
   depth, and at equivalent soil mass (the baseline's fine-soil mass to the
   reference depth, Wendt & Hauser 2013), each with its uncertainty;
4. the trend (calibration.trend.stock_trend: GLS with AR(1) errors, a CI
   that keeps its coverage, minimum detectable change, years to detection).

Why the trend is fitted on the random part of the uncertainty only, and
with its scale estimated from the scatter: a bulk density measured once is
the same for every interval, so its error moves the whole series (and the
rate, in proportion) but adds no scatter; and a calibration model's stated
error (its RMSECV) is mostly an error per soil, shared by every reading of
the same probe, which a trend does not see either. Taken as independent
noise both would make the interval several times too wide (measured on
tests/observatory/synthetic_site.py: ±0.57 instead of ±0.11 Mg C/ha/yr),
so the stated uncertainties serve as relative weights and the scatter
gives the scale (calibration.trend, scale "estimated"). The bands of the
figures carry the full uncertainty.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from calibration.stock import (cumulative_stock, equivalent_mass_stock, layer_stock, soil_mass_to_depth)
from calibration.trend import Trend, stock_trend
from humus.records import QualityFlag
from observatory import filters as flt
from observatory import lab, query
from observatory.aggregate import aggregate
from observatory.sites import Site, SiteLayer
from observatory.store import Selection, SeriesData

YEAR_NS = 365.25 * 86400 * 10**9
USABLE = QualityFlag.NOT_EVALUATED


@dataclass
class StockSeries:
    time_ns: np.ndarray
    value: np.ndarray
    uncertainty: np.ndarray          # full: SOC and bulk density
    random: np.ndarray               # SOC part only (what scatters from interval to interval)

    def finite(self) -> np.ndarray:
        return np.isfinite(self.value)


@dataclass
class ProbeQuality:
    probe: str
    quantity: str
    rows: int
    expected: int
    usable: int
    flags: dict[int, int]
    first_ns: int
    last_ns: int

    @property
    def completeness(self) -> float:
        return self.usable / self.expected if self.expected else math.nan


@dataclass
class ModelUse:
    model_id: str
    model_version: str
    values: int
    first_ns: int
    last_ns: int
    recalibrated: bool


@dataclass
class SiteAnalysis:
    site: Site
    every_ns: int
    soc_by_layer: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    layer_stocks: dict[str, StockSeries] = field(default_factory=dict)
    stock: StockSeries | None = None
    stock_esm: StockSeries | None = None
    reference_mass: float = math.nan
    trend: Trend | None = None
    trend_esm: Trend | None = None
    trend_t0_ns: int = 0
    trend_note: str = ""
    context: dict[str, list[SeriesData]] = field(default_factory=dict)
    quality: list[ProbeQuality] = field(default_factory=list)
    models: list[ModelUse] = field(default_factory=list)
    lab: lab.Comparison | None = None
    last_ns: int | None = None

    @property
    def current(self) -> tuple[float, float, int] | None:
        """(stock, uncertainty, time) of the latest interval with a stock to the reference depth."""
        if self.stock is None or not self.stock.finite().any():
            return None
        i = np.flatnonzero(self.stock.finite())[-1]
        return float(self.stock.value[i]), float(self.stock.uncertainty[i]), int(self.stock.time_ns[i])

    def line_at(self, t_ns) -> np.ndarray:
        """The fitted trend line (Mg C/ha) at times `t_ns`."""
        t = (np.asarray(t_ns, dtype=float) - self.trend_t0_ns) / YEAR_NS
        return self.trend.baseline + self.trend.rate * t

    @property
    def baseline_stock(self) -> float:
        """The fitted stock at the site's baseline date: where the 4 per 1000 line starts."""
        return float(self.line_at([self.site.baseline_ns])[0])


def analyse(store, site: Site, every_ns: int, note=lambda text: None) -> SiteAnalysis:
    a = SiteAnalysis(site, every_ns)
    raw_soc: dict[str, SeriesData] = {}
    for p in site.probes:
        note(f"{site.id}: reading {site.soc_quantity} of {p}")
        for s in query.series(store, site=site.id, probe=p, quantity=site.soc_quantity, source="calibrated"):
            raw_soc[p] = s                        # one per probe (a probe has one depth)
    _models(a, store, raw_soc.values())
    for layer in site.ordered_layers:
        binned = [aggregate(raw_soc[p], every_ns, "mean", USABLE) for p in layer.probes if p in raw_soc]
        a.soc_by_layer[layer.label] = _layer_mean(binned)
    note(f"{site.id}: stocks and trend")
    _stocks(a)
    _trend(a)
    note(f"{site.id}: moisture, temperature and data quality")
    _context_and_quality(a, store, raw_soc)
    note(f"{site.id}: lab cores")
    a.lab = lab.compare(store, [site])
    return a


def _layer_mean(binned: list[SeriesData]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, SOC %, u) of a layer: per interval the mean of its probes with a value."""
    if not binned:
        return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    times = np.unique(np.concatenate([b.time_ns for b in binned]))
    v = np.full((len(binned), len(times)), np.nan)
    u = np.full((len(binned), len(times)), np.nan)
    for i, b in enumerate(binned):
        at = np.searchsorted(times, b.time_ns)
        v[i, at], u[i, at] = b.value, b.uncertainty
    n = np.isfinite(v).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(v, axis=0) / n
        unc = np.sqrt(np.nansum(np.where(np.isfinite(v), np.nan_to_num(u) ** 2, 0.0), axis=0)) / n
    mean[n == 0] = np.nan
    return times, mean, unc


def _stocks(a: SiteAnalysis) -> None:
    site = a.site
    layers = site.ordered_layers
    times = np.unique(np.concatenate([a.soc_by_layer[l.label][0] for l in layers]))
    soc = {}
    for l in layers:
        t, v, u = a.soc_by_layer[l.label]
        full_v, full_u = np.full(len(times), np.nan), np.full(len(times), np.nan)
        at = np.searchsorted(times, t)
        full_v[at], full_u[at] = v, u
        soc[l.label] = (full_v, full_u)
    base = [l.stock_layer(site.baseline_ns, 0.0, 0.0) for l in layers]
    a.reference_mass = soil_mass_to_depth(base, site.reference_depth_cm)
    n = len(times)
    per_layer = {l.label: [np.full(n, np.nan) for _ in range(3)] for l in layers}
    tot = [np.full(n, np.nan) for _ in range(3)]
    esm = [np.full(n, np.nan) for _ in range(3)]
    for i, t in enumerate(times.tolist()):
        full, rnd = [], []
        for l in layers:
            v, u = soc[l.label][0][i], soc[l.label][1][i]
            if not math.isfinite(v):
                continue
            u = u if math.isfinite(u) else 0.0
            lf, lr = l.stock_layer(t, v, u), l.stock_layer(t, v, u, with_bd_uncertainty=False)
            full.append(lf)
            rnd.append(lr)
            s = layer_stock(lf)
            if s.flag is not QualityFlag.FAIL:
                per_layer[l.label][0][i], per_layer[l.label][1][i] = s.value, s.uncertainty
                per_layer[l.label][2][i] = layer_stock(lr).uncertainty
        if len(full) != len(layers):
            continue              # a stock to the reference depth needs every layer of the interval
        c, cr = cumulative_stock(full, site.reference_depth_cm), cumulative_stock(rnd, site.reference_depth_cm)
        if c.flag is not QualityFlag.FAIL:
            tot[0][i], tot[1][i], tot[2][i] = c.value, c.uncertainty, cr.uncertainty
        e = equivalent_mass_stock(full, a.reference_mass)
        er = equivalent_mass_stock(rnd, a.reference_mass)
        if e.flag is not QualityFlag.FAIL:
            esm[0][i], esm[1][i], esm[2][i] = e.value, e.uncertainty, er.uncertainty
    a.layer_stocks = {k: StockSeries(times, *v) for k, v in per_layer.items()}
    a.stock = StockSeries(times, *tot)
    a.stock_esm = StockSeries(times, *esm)


def _fit(s: StockSeries, t0: int) -> Trend | None:
    ok = s.finite()
    if ok.sum() < 3:
        return None
    t = (s.time_ns[ok] - t0) / YEAR_NS
    u = s.random[ok]
    try:
        return stock_trend(t, s.value[ok], u if (u > 0).all() else None, scale="estimated")
    except ValueError:
        return None


def _trend(a: SiteAnalysis) -> None:
    s = a.stock
    if s is None or s.finite().sum() < 3:
        a.trend_note = (f"fewer than 3 intervals with every layer measured down to {a.site.reference_depth_cm:g} cm: "
                        "no trend yet")
        return
    a.trend_t0_ns = int(s.time_ns[s.finite()][0])
    a.trend = _fit(s, a.trend_t0_ns)
    a.trend_esm = _fit(a.stock_esm, a.trend_t0_ns) if a.stock_esm is not None else None
    if a.trend is None:
        a.trend_note = "the stock series allows no trend fit"


def _models(a: SiteAnalysis, store, series) -> None:
    recal = flt.read_catalogue(store, Selection(site=a.site.id))
    uses: dict[tuple, list] = {}
    for s in series:
        ids = np.asarray(s.model_id, dtype=object)
        vers = np.asarray(s.model_version, dtype=object)
        for (mid, ver), n in Counter(zip(ids.tolist(), vers.tolist())).items():
            if not mid:
                continue
            at = (ids == mid) & (vers == ver)
            t = s.time_ns[at]
            u = uses.setdefault((mid, ver), [0, int(t.min()), int(t.max())])
            u[0] += n
            u[1], u[2] = min(u[1], int(t.min())), max(u[2], int(t.max()))
    a.models = [ModelUse(mid, ver, n, lo, hi, (a.site.soc_quantity, mid, ver) in recal)
                for (mid, ver), (n, lo, hi) in sorted(uses.items())]


def _context_and_quality(a: SiteAnalysis, store, raw_soc: dict[str, SeriesData]) -> None:
    site = a.site
    last = []
    for q in (site.moisture_quantity, site.temperature_quantity):
        a.context[q] = []
        for p in site.probes:
            for s in query.series(store, site=site.id, probe=p, quantity=q):
                a.quality.append(_quality(s))
                last.append(int(s.time_ns[-1]))
                a.context[q].append(aggregate(s, 86400 * 10**9, "mean", USABLE))
    for s in raw_soc.values():
        a.quality.append(_quality(s))
        last.append(int(s.time_ns[-1]))
    a.quality.sort(key=lambda x: (x.probe, x.quantity))
    a.last_ns = max(last) if last else None


def _quality(s: SeriesData) -> ProbeQuality:
    n = len(s)
    steps = np.diff(s.time_ns)
    step = float(np.median(steps[steps > 0])) if (steps > 0).any() else 0.0
    expected = int(round((int(s.time_ns[-1]) - int(s.time_ns[0])) / step)) + 1 if step else n
    usable = int(((s.flag <= int(USABLE)) & np.isfinite(s.value)).sum())
    flags = {int(k): int(v) for k, v in zip(*np.unique(s.flag, return_counts=True))}
    return ProbeQuality(s.probe, s.quantity, n, max(expected, n), usable, flags, int(s.time_ns[0]),
                        int(s.time_ns[-1]))


def layer_of(site: Site, label: str) -> SiteLayer:
    return next(l for l in site.layers if l.label == label)
