"""The report's figures as PNG files (matplotlib, the `report` extra), one function per figure.

Colour-blind-safe colours (Okabe, M., Ito, K. 2008, "Color Universal
Design"); uncertainty bands are ± 1 standard uncertainty; the trend band
is the 95 % confidence interval of the rate, pivoted at the series' mean
time (where the fitted line is best known).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from observatory.report.analysis import YEAR_NS, SiteAnalysis, StockSeries

COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
TARGET = "#D55E00"
DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _dates(t_ns) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(int(t) / 1e9, tz=dt.timezone.utc) for t in np.asarray(t_ns)]


def _save(fig, path: Path) -> Path:
    import matplotlib.dates as mdates

    for ax in fig.axes:
        if ax.xaxis.get_scale() == "linear" and isinstance(ax.xaxis.get_major_formatter(), mdates.AutoDateFormatter):
            locator = mdates.AutoDateLocator(maxticks=8)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _plt().close(fig)
    return path


def _band(ax, s: StockSeries, colour: str, label: str) -> None:
    ok = s.finite()
    d = _dates(s.time_ns[ok])
    ax.fill_between(d, s.value[ok] - s.uncertainty[ok], s.value[ok] + s.uncertainty[ok], color=colour, alpha=0.2,
                    linewidth=0)
    ax.plot(d, s.value[ok], ".", color=colour, markersize=3, label=label)


def _trend_lines(ax, a: SiteAnalysis, s: StockSeries) -> None:
    tr = a.trend
    if tr is None:
        return
    ok = s.finite()
    t = s.time_ns[ok].astype(float)
    lo, hi = min(t.min(), a.site.baseline_ns), t.max()
    grid = np.linspace(lo, hi, 50)
    line = a.line_at(grid)
    years = (grid - a.trend_t0_ns) / YEAR_NS
    centre = (t.mean() - a.trend_t0_ns) / YEAR_NS
    pivot = tr.baseline + tr.rate * centre
    lower = pivot + tr.rate_ci[0] * (years - centre)
    upper = pivot + tr.rate_ci[1] * (years - centre)
    d = _dates(grid)
    # The rate's CI is often narrow beside the readings' bands: a darker fill drawn above them, and dotted
    # edges, so it shows even then.
    ax.fill_between(d, np.minimum(lower, upper), np.maximum(lower, upper), color="#000000", alpha=0.25, linewidth=0,
                    zorder=3, label="rate, 95 % confidence")
    for edge in (lower, upper):
        ax.plot(d, edge, ":", color="#000000", linewidth=0.9, zorder=3)
    ax.plot(d, line, "-", color="#000000", linewidth=1.5, label=f"trend {tr.rate:+.2f} Mg C/ha/yr")
    b = a.baseline_stock
    target = b * (1 + tr.target_per_mille / 1000 * (grid - a.site.baseline_ns) / YEAR_NS)
    keep = grid >= a.site.baseline_ns
    ax.plot([x for x, k in zip(d, keep) if k], target[keep], "--", color=TARGET, linewidth=1.5,
            label=f"{tr.target_per_mille:g} per 1000 per year from the baseline")


def card(a: SiteAnalysis, path: Path) -> Path | None:
    """Small: stock to the reference depth, trend and the 4 per 1000 line (for the soil carbon card)."""
    if a.stock is None or not a.stock.finite().any():
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 2.8))
    _band(ax, a.stock, COLOURS[0], f"carbon stock 0-{a.site.reference_depth_cm:g} cm")
    _trend_lines(ax, a, a.stock)
    ax.set_ylabel("t C/ha")
    ax.legend(fontsize=7, loc="best", frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def stocks(a: SiteAnalysis, path: Path) -> Path | None:
    """Stock to the reference depth (fixed depth and equivalent soil mass) with trend, and per layer below."""
    if a.stock is None or not len(a.stock.time_ns):
        return None
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.0, 6.4), sharex=True)
    _band(top, a.stock, COLOURS[0], f"fixed depth 0-{a.site.reference_depth_cm:g} cm")
    if a.stock_esm is not None and a.stock_esm.finite().any():
        _band(top, a.stock_esm, COLOURS[2], f"equivalent soil mass ({a.reference_mass:.0f} Mg/ha of fine soil)")
    _trend_lines(top, a, a.stock)
    top.set_ylabel("SOC stock, Mg C/ha")
    top.set_title(f"{a.site.title}: soil organic carbon stock to {a.site.reference_depth_cm:g} cm", fontsize=10)
    top.legend(fontsize=7, frameon=False)
    top.grid(alpha=0.3)
    for i, (label, s) in enumerate(a.layer_stocks.items()):
        if s.finite().any():
            _band(bottom, s, COLOURS[i % len(COLOURS)], label)
    bottom.set_ylabel("SOC stock per layer, Mg C/ha")
    bottom.legend(fontsize=7, frameon=False)
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def context(a: SiteAnalysis, path: Path) -> Path | None:
    """Daily moisture and temperature of the site's probes: what the carbon readings were taken in."""
    panels = [(q, ss) for q, ss in a.context.items() if any(len(s) for s in ss)]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(panels), 1, figsize=(8.0, 2.4 * len(panels)), sharex=True, squeeze=False)
    for ax, (q, ss) in zip(axes[:, 0], panels):
        for i, s in enumerate(ss):
            unit = next((u for u in s.unit if u), "")
            ax.plot(_dates(s.time_ns), s.value, "-", linewidth=0.8, color=COLOURS[i % len(COLOURS)],
                    label=f"{s.probe} {'' if s.depth_cm is None else f'{s.depth_cm:g} cm'}")
            ax.set_ylabel(f"{q} ({unit})" if unit else q)
        ax.legend(fontsize=7, frameon=False, ncol=3)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def quality(a: SiteAnalysis, path: Path) -> Path | None:
    """Per probe and quantity: share of expected readings usable, suspect, failed, missing."""
    if not a.quality:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.0, 0.35 * len(a.quality) + 1.2))
    names = [f"{q.probe} {q.quantity}" for q in a.quality]
    y = np.arange(len(a.quality))
    left = np.zeros(len(a.quality))
    for codes, label, colour in (((1, 2), "usable (pass, not evaluated)", COLOURS[2]), ((3,), "suspect", COLOURS[1]),
                                 ((4,), "fail", TARGET), ((9,), "missing", "#999999")):
        share = np.array([sum(q.flags.get(c, 0) for c in codes) / q.expected if q.expected else 0 for q in a.quality])
        ax.barh(y, share * 100, left=left, color=colour, label=label)
        left += share * 100
    ax.barh(y, np.maximum(100 - left, 0), left=left, color="#FFFFFF", edgecolor="#999999", label="never received")
    ax.set_yticks(y, names, fontsize=7)
    ax.set_xlabel("% of the readings expected")
    ax.set_xlim(0, 100)
    ax.legend(fontsize=7, frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=5)
    return _save(fig, path)


def lab_scatter(a: SiteAnalysis, path: Path) -> Path | None:
    """Lab SOC against the sensors' estimate of the same layer and date, ± 1 u, with the 1:1 line."""
    if a.lab is None or not a.lab.pairs:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    p = a.lab.pairs
    x = np.array([q.lab for q in p])
    y = np.array([q.sensor for q in p])
    ax.errorbar(x, y, xerr=[q.lab_uncertainty for q in p], yerr=[q.sensor_uncertainty for q in p], fmt="o",
                color=COLOURS[0], markersize=4, elinewidth=0.8)
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    pad = 0.1 * (hi - lo or 1)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "-", color="#666666", linewidth=0.8, label="1:1")
    ax.set_xlabel("lab SOC, %")
    ax.set_ylabel("sensor SOC, %")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def sites(analyses: list[SiteAnalysis], path: Path) -> Path | None:
    """Sites side by side: rate in per mille per year with its 95 % CI, against the 4 per 1000 target."""
    fitted = [a for a in analyses if a.trend is not None]
    if not fitted:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(fitted) + 1.4))
    y = np.arange(len(fitted))
    pm = np.array([a.trend.per_mille for a in fitted])
    lo = np.array([a.trend.per_mille_ci[0] for a in fitted])
    hi = np.array([a.trend.per_mille_ci[1] for a in fitted])
    ax.errorbar(pm, y, xerr=[pm - lo, hi - pm], fmt="o", color=COLOURS[0], capsize=3)
    ax.axvline(fitted[0].trend.target_per_mille, color=TARGET, linestyle="--", label="4 per 1000 target")
    ax.axvline(0, color="#666666", linewidth=0.8)
    ax.set_yticks(y, [a.site.title for a in fitted], fontsize=8)
    ax.set_ylim(-0.7, len(fitted) - 0.3)
    ax.set_xlabel("SOC stock change, per mille of the baseline per year (95 % CI)")
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)
