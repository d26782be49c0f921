"""The report as one HTML page: the soil carbon card first (one printed page a farmer reads), then the detail.

Plain HTML and CSS, no external resource, so the page opens from a USB
stick or an e-mail attachment; figures are PNG files beside it. A few lines
of script mark a figure that failed to load, so a broken report says so
instead of showing an empty frame.
"""

from __future__ import annotations

import datetime as dt
import math
from html import escape

from observatory.report.analysis import YEAR_NS, SiteAnalysis

CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 1rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.25rem; border-bottom: 1px solid #ccc; } h3 { font-size: 1.05rem; }
.card { border: 2px solid #009E73; border-radius: 0.5rem; padding: 1rem 1.25rem; margin: 1rem 0 2rem; }
.card .big { font-size: 2rem; font-weight: 600; } .card .verdict { font-size: 1.15rem; margin: 0.5rem 0; }
.card .small { color: #555; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
td, th { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; } td.n { text-align: right; }
img { max-width: 100%; } .missing-figure { color: #D55E00; font-weight: 600; }
.note { color: #555; font-size: 0.9rem; }
@media print { .card { page-break-after: always; } }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var images = document.querySelectorAll('img');
  for (var i = 0; i < images.length; i++) {
    var ok = images[i].complete && images[i].naturalWidth > 0;
    images[i].setAttribute('data-loaded', ok ? 'yes' : 'no');
    images[i].setAttribute('data-width', String(images[i].naturalWidth));
    if (!ok) {
      var p = document.createElement('p'); p.className = 'missing-figure';
      p.textContent = 'This figure did not load: ' + images[i].getAttribute('src');
      images[i].parentNode.insertBefore(p, images[i]);
    }
  }
  document.body.setAttribute('data-figures-checked', String(images.length));
});
"""


def _date(ns: int | None) -> str:
    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc).strftime("%Y-%m-%d")


def _n(x: float, digits: int = 2) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _img(src: str | None, alt: str) -> str:
    return f'<p><img src="{escape(src)}" alt="{escape(alt)}"></p>' if src else ""


def verdict(a: SiteAnalysis) -> str:
    """The card's sentence: what the trend says in words, with the numbers that back it."""
    tr = a.trend
    if tr is None:
        return f"Not enough data yet to see a trend ({escape(a.trend_note)})."
    ci = f"between {tr.per_mille_ci[0]:+.1f} and {tr.per_mille_ci[1]:+.1f} ‰ per year"
    if tr.target_met:
        return f"Carbon is rising at least as fast as the 4 per 1000 goal: {tr.per_mille:+.1f} ‰ per year ({ci})."
    if tr.change_detected and tr.rate > 0:
        return (f"Carbon is rising: {tr.per_mille:+.1f} ‰ per year ({ci}); not yet sure it reaches the "
                "4 per 1000 goal.")
    if tr.change_detected:
        return f"Carbon is falling: {tr.per_mille:+.1f} ‰ per year ({ci})."
    years = tr.years_to_detect_target
    when = ""
    if math.isfinite(years):
        start = a.trend_t0_ns / 1e9
        year = dt.datetime.fromtimestamp(start, tz=dt.timezone.utc).year + int(math.ceil(years))
        when = (f" With this monitoring, a rise of 4 ‰ per year becomes visible after about {years:.0f} years "
                f"of data (around {year}).")
    return f"No change can be told apart from the noise yet ({ci}).{when}"


def card(a: SiteAnalysis, figure: str | None) -> str:
    site = a.site
    cur = a.current
    lines = [f'<section class="card" id="card-{escape(site.id)}">',
             f"<h2>Soil carbon card: {escape(site.title)}</h2>"]
    if cur:
        lines.append(f'<p>Carbon in the top {site.reference_depth_cm:g} cm of soil '
                     f'(on {_date(cur[2])}): <span class="big">{cur[0]:.1f} t C/ha</span> '
                     f'(± {cur[1]:.1f})</p>')
    else:
        lines.append(f"<p>No carbon stock yet: every layer down to {site.reference_depth_cm:g} cm needs a value.</p>")
    lines.append(f'<p class="verdict">{verdict(a)}</p>')
    tr = a.trend
    if tr is not None:
        since = (a.current[2] - site.baseline_ns) / YEAR_NS if cur else 0.0
        lines.append(f"<p>Change per year: <b>{tr.rate:+.2f} t C/ha</b> (95 % confidence: {tr.rate_ci[0]:+.2f} to "
                     f"{tr.rate_ci[1]:+.2f}). Since the baseline of {_date(site.baseline_ns)}: "
                     f"{tr.rate * since:+.1f} t C/ha. The 4 per 1000 goal here is "
                     f"+{tr.target_per_mille / 1000 * a.baseline_stock:.2f} t C/ha per year.</p>")
    lines.append(_img(figure, f"carbon stock of {site.title} over time"))
    usable = [q for q in a.quality if q.quantity == site.soc_quantity]
    share = sum(q.usable for q in usable) / sum(q.expected for q in usable) if usable else math.nan
    lines.append(f'<p class="small">Carbon readings usable: {_n(100 * share, 0)} % of those expected; last reading '
                 f"{_date(a.last_ns)}. 1 t C/ha = one tonne of carbon per hectare.</p></section>")
    return "\n".join(lines)


def detail(a: SiteAnalysis, figs: dict[str, str | None]) -> str:
    site = a.site
    out = [f'<section id="site-{escape(site.id)}"><h2>{escape(site.title)}: the detail</h2>']
    out.append("<h3>Stocks and trend</h3>")
    out.append(_img(figs.get("stocks"), "SOC stock to the reference depth and per layer"))
    tr = a.trend
    if tr is not None:
        rows = [("rate", f"{tr.rate:+.3f} Mg C/ha/yr (95 % CI {tr.rate_ci[0]:+.3f} to {tr.rate_ci[1]:+.3f})"),
                ("relative rate", f"{tr.per_mille:+.2f} ‰/yr (95 % CI {tr.per_mille_ci[0]:+.2f} to "
                                  f"{tr.per_mille_ci[1]:+.2f}); target {tr.target_per_mille:g} ‰/yr"),
                ("fitted stock at the first interval", f"{tr.baseline:.2f} Mg C/ha"),
                ("minimum detectable rate", f"{tr.min_detectable_rate:.3f} Mg C/ha/yr ({tr.min_detectable_per_mille:.2f} "
                                            f"‰/yr), α = {tr.alpha:g}, power {tr.power:.0%}"),
                ("minimum detectable change", f"{tr.min_detectable_change:.2f} Mg C/ha between two single estimates"),
                ("years to detect 4 ‰/yr", "not within 1000 years" if not math.isfinite(tr.years_to_detect_target)
                 else f"{tr.years_to_detect_target:.1f}"),
                ("intervals used", f"{tr.n} of {a.every_ns / 86400e9:g} days; autocorrelation φ = {tr.phi:.2f} "
                                   f"(REML estimate {tr.phi_estimate:.2f}), scale {tr.scale}"
                                   + ("; the scatter exceeds the stated uncertainties" if tr.scatter_exceeds_uncertainty
                                      else ""))]
        if a.trend_esm is not None:
            e = a.trend_esm
            rows.append(("equivalent soil mass rate", f"{e.rate:+.3f} Mg C/ha/yr (95 % CI {e.rate_ci[0]:+.3f} to "
                                                      f"{e.rate_ci[1]:+.3f}), reference {a.reference_mass:.0f} Mg/ha"))
        out.append(_table(("", ""), rows, header=False))
        if tr.note:
            out.append(f'<p class="note">{escape(tr.note)}</p>')
    else:
        out.append(f'<p class="note">{escape(a.trend_note)}</p>')
    layer_rows = []
    for l in site.ordered_layers:
        bd = sorted(l.bulk_density, key=lambda b: b.time_ns)
        layer_rows.append((l.label, ", ".join(f"{b.value:g} ± {b.uncertainty:g} ({_date(b.time_ns)})" for b in bd),
                           f"{l.coarse_fraction:g}", ", ".join(l.probes) or "-"))
    out.append(_table(("layer", "bulk density g/cm³ (date)", "coarse fraction", "probes"), layer_rows))
    out.append("<h3>Moisture and temperature</h3>")
    out.append(_img(figs.get("context"), "daily soil moisture and temperature") or
               '<p class="note">No moisture or temperature series for these probes.</p>')
    out.append("<h3>Data completeness and quality flags</h3>")
    out.append(_img(figs.get("quality"), "completeness and flags per probe"))
    out.append(_table(("probe", "quantity", "readings", "expected", "usable", "suspect", "fail", "missing", "from",
                       "to"),
                      [(q.probe, q.quantity, q.rows, q.expected, q.usable, q.flags.get(3, 0), q.flags.get(4, 0),
                        q.flags.get(9, 0), _date(q.first_ns), _date(q.last_ns)) for q in a.quality]))
    out.append("<h3>Calibration models used</h3>")
    if a.models:
        out.append(_table(("model id", "version", "values", "from", "to", "how"),
                          [(m.model_id, m.model_version, m.values, _date(m.first_ns), _date(m.last_ns),
                            "recalibrated" if m.recalibrated else "on the gateway") for m in a.models]))
        out.append('<p class="note">Cite a value by its model id and version (docs/researchers.md); the archive '
                   "keeps every version, and this report takes the newest per time.</p>")
    else:
        out.append('<p class="note">No calibrated carbon values.</p>')
    out.append("<h3>Lab cores against the sensors</h3>")
    c = a.lab
    if c is not None and c.pairs:
        out.append(_img(figs.get("lab"), "lab SOC against sensor SOC"))
        out.append(f"<p>{escape(c.verdict)}</p>")
        out.append(_table(("layer", "date", "core", "lab %", "sensor %", "sensor − lab", "z", "model"),
                          [(p.layer, _date(p.time_ns), p.core, _n(p.lab), _n(p.sensor), f"{p.difference:+.2f}",
                            f"{p.z:+.2f}", p.model) for p in c.pairs]))
    else:
        out.append('<p class="note">No lab core with sensor values on its date (humus lab import).</p>')
    out.append("</section>")
    return "\n".join(out)


def comparison(analyses: list[SiteAnalysis], figure: str | None) -> str:
    rows = []
    for a in analyses:
        cur, tr = a.current, a.trend
        rows.append((a.site.title, "-" if not cur else f"{cur[0]:.1f} ± {cur[1]:.1f}",
                     "-" if tr is None else f"{tr.per_mille:+.1f} ({tr.per_mille_ci[0]:+.1f} to {tr.per_mille_ci[1]:+.1f})",
                     "-" if tr is None else ("yes" if tr.target_met else "not yet" if tr.rate > 0 else "no"),
                     "-" if tr is None or not math.isfinite(tr.years_to_detect_target)
                     else f"{tr.years_to_detect_target:.0f}"))
    return ("<section><h2>Sites compared</h2>" + _img(figure, "rate per site against the 4 per 1000 target")
            + _table(("site", "stock t C/ha", "‰ per year (95 % CI)", "4 ‰ goal met", "years to detect 4 ‰"), rows)
            + "</section>")


def _table(columns, rows, header: bool = True) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in columns) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f'<td{" class=n" if isinstance(c, (int, float)) else ""}>{escape(str(c))}</td>'
                                    for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def page(title: str, body: list[str], generated: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n<h1>{escape(title)}</h1>\n" + "\n".join(body)
            + f'\n<p class="note">{escape(generated)}</p>\n<script>{SCRIPT}</script>\n</body></html>\n')
