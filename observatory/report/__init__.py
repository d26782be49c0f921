"""`humus report`: what the archive says about soil carbon at one or several sites, as HTML with PNG figures.

    from observatory.report import build_report
    result = build_report("sqlite:archive.sqlite", sites, "report/", every="7d")

Writes DIR/index.html (the soil carbon card of each site first, then the
detail: stocks per layer and to the reference depth at fixed depth and
equivalent soil mass, the trend with its CI and the 4 per 1000 line,
detectability, moisture and temperature, completeness and flags per
probe, models used, lab cores), DIR/figures/*.png, and DIR/summary.json
(the same numbers for scripts). Several sites get a comparison first.
Figures need matplotlib (the `report` extra); analysis.py says how each
number is made.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.util
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from observatory.report.analysis import SiteAnalysis, analyse


class ReportError(Exception):
    """A report that cannot be made (matplotlib missing, output directory unusable): one line."""


@dataclass
class ReportResult:
    index: Path
    figures: list[Path]
    analyses: list[SiteAnalysis]


def build_report(store, sites: Sequence, out_dir: str | Path, every: str | int = "7d",
                 progress: Callable[[int, str], None] | None = None, title: str | None = None) -> ReportResult:
    """Analyse `sites` (observatory.sites.Site) in `store` (URL or open store) and write the report to `out_dir`."""
    from observatory import query
    from observatory.aggregate import parse_every
    from observatory.report import figures as fig
    from observatory.report import html

    if importlib.util.find_spec("matplotlib") is None:
        raise ReportError("figures need matplotlib: pip install 'humus[report]'")
    every_ns = every if isinstance(every, int) else parse_every(every)
    out = Path(out_dir)
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out}: cannot create the report directory ({e.strerror})") from None
    s, owned = query._open(store)
    step = [0]

    def note(text: str) -> None:
        step[0] += 1
        if progress:
            progress(step[0], text)
    try:
        analyses = [analyse(s, site, every_ns, note) for site in sites]
    finally:
        if owned:
            s.close()
    made: list[Path] = []

    def figure(name: str, draw, *args) -> str | None:
        note(f"figure {name}")
        path = draw(*args, out / "figures" / f"{name}.png")
        if path is None:
            return None
        made.append(path)
        return f"figures/{path.name}"

    body = []
    if len(analyses) > 1:
        body.append(html.comparison(analyses, figure("sites", fig.sites, analyses)))
    details = []
    for a in analyses:
        sid = a.site.id
        body.append(html.card(a, figure(f"{sid}-card", fig.card, a)))
        figs = {"stocks": figure(f"{sid}-stocks", fig.stocks, a), "context": figure(f"{sid}-context", fig.context, a),
                "quality": figure(f"{sid}-quality", fig.quality, a), "lab": figure(f"{sid}-lab", fig.lab_scatter, a)}
        details.append(html.detail(a, figs))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = title or ("Soil carbon: " + ", ".join(a.site.title for a in analyses))
    _write(out / "index.html", html.page(name, body + details, f"Made by humus report on {now}, "
                                                               f"intervals of {every_ns / 86400e9:g} days."))
    _write(out / "summary.json", json.dumps(summary(analyses), indent=1, allow_nan=False))
    return ReportResult(out / "index.html", made, analyses)


def summary(analyses: Sequence[SiteAnalysis]) -> dict:
    """The report's numbers for scripts (NaN and infinity as null)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    out = {}
    for a in analyses:
        cur = a.current
        out[a.site.id] = clean({
            "stock": None if cur is None else {"value": cur[0], "uncertainty": cur[1], "time_ns": cur[2]},
            "reference_depth_cm": a.site.reference_depth_cm, "reference_mass": a.reference_mass,
            "trend": None if a.trend is None else a.trend.as_dict(),
            "trend_esm": None if a.trend_esm is None else a.trend_esm.as_dict(),
            "trend_note": a.trend_note,
            "models": [dataclasses.asdict(m) for m in a.models],
            "lab": None if a.lab is None else {"n": a.lab.n, "bias": a.lab.bias, "rmse": a.lab.rmse,
                                               "holds": a.lab.holds, "unmatched": a.lab.unmatched},
        })
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
