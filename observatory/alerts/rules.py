"""Alert rules: pure functions of a `Snapshot` and their parameters, returning what is wrong now.

Each rule returns one `Finding` per subject (a probe's series, a probe, a
gateway, a site) whose condition holds at the snapshot's time; a subject not
returned is fine. The life cycle (pending -> firing -> resolved) is not
theirs: observatory.alerts.lifecycle applies it. The live service and
`humus alerts replay` call these same functions on the same kind of
snapshot, so a rule tuned on last season behaves the same live.

Where a rule mirrors a QARTOD test (flat line, gross range) it calls
collector.qartod, the gateway's own implementation, so its verdict is the
QARTOD verdict on the same data (U.S. IOOS QARTOD manuals; ioos_qc 3.x).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import numpy as np

from collector import qartod
from observatory.alerts import config as C
from observatory.alerts.buffers import (NS, GatewayView, SeriesKey, SeriesView, Snapshot, test_code, test_codes,
                                       test_name)
from observatory.stores.lineprotocol import depth_tag

CHECK_PROBE = "the probe's cable, connector and power, and the gateway log (journalctl -u humus-collect)"


@dataclass(frozen=True, slots=True)
class Finding:
    """A condition that holds now for one subject."""

    rule: str
    labels: tuple[tuple[str, str], ...]     # sorted (name, value) pairs: the subject's identity
    severity: str
    value: float                            # the number the condition is about (shown, stored)
    summary: str                            # what happened, with the last values
    check: str                              # what a person should check
    since_ns: int | None = None             # when the data says it began, if it knows

    @property
    def subject(self) -> str:
        return subject_text(dict(self.labels))


def subject_text(labels: dict[str, str]) -> str:
    """`site/gateway/probe` plus the series or event it is about, for one-line displays."""
    path = "/".join(labels[k] for k in ("site", "gateway", "probe") if k in labels)
    extra = [labels[k] for k in ("quantity", "kind", "subject") if k in labels]
    if "depth_cm" in labels:
        extra.insert(0, f"{labels['depth_cm']} cm")
    return path + (" " + " ".join(extra) if extra else "")


def depth_text(depth: float | None) -> str:
    """The depth as the configuration and InfluxDB's `depth_cm` tag write it ("10", "12.5"): one filter finds both."""
    return depth_tag(depth) or ""


def series_labels(k: SeriesKey) -> tuple[tuple[str, str], ...]:
    d = {"site": k.site, "gateway": k.gateway, "probe": k.probe, "quantity": k.quantity, "source": k.source}
    if k.depth_cm is not None:
        d["depth_cm"] = depth_text(k.depth_cm)
    return tuple(sorted(d.items()))


def _labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in kv.items() if v is not None))


def fmt_time(ns: int | None) -> str:
    if ns is None:
        return "never"
    return datetime.fromtimestamp(ns / NS, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def fmt_duration(s: float) -> str:
    s = abs(s)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _fmt(v: float) -> str:
    return "nan" if v != v else f"{v:.4g}"


def _in(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """values in codes, for the few codes a rule names (faster than numpy.isin on small sets)."""
    out = np.zeros(len(values), bool)
    for c in codes:
        out |= values == c
    return out


def median(a: np.ndarray) -> float:
    """numpy.median of a 1-d array without NaN, at a fraction of its call overhead."""
    n = len(a)
    if n == 0:
        return math.nan
    k = n // 2
    if n % 2:
        return float(np.partition(a, k)[k])
    p = np.partition(a, (k - 1, k))
    return (float(p[k - 1]) + float(p[k])) / 2


def _median_step_s(t: np.ndarray) -> float | None:
    if len(t) < 2:
        return None
    d = np.diff(t[-50:])
    d = d[d > 0]
    return median(d) / NS if len(d) else None


# -- probe and series rules -------------------------------------------------------------------


def no_data(snap: Snapshot, p: C.NoData) -> list[Finding]:
    """No valid value from a probe for `intervals` of its polling interval (at least `min_gap_s`).

    A gateway that says it is offline, or sends nothing at all, is gateway_offline's business,
    so a probe only counts while its gateway still sends something (missing-value rows count).
    """
    t = snap.t_ns
    probes: dict[tuple[str, str, str], list[SeriesView]] = {}
    gateway_last: dict[tuple[str, str], int] = {}
    for s in snap.series:
        k = s.key
        probes.setdefault((k.site, k.gateway, k.probe), []).append(s)
        if len(s):
            g = (k.site, k.gateway)
            gateway_last[g] = max(gateway_last.get(g, 0), int(s.time_ns[-1]))
    for (site, gw), view in snap.gateways.items():
        if view.latest is not None and view.latest.online:
            for pid in view.latest.probes:
                probes.setdefault((site, gw, pid), [])
    out = []
    for (site, gw, probe), views in probes.items():
        status = snap.gateways.get((site, gw))
        latest = status.latest if status is not None else None
        if latest is not None and not latest.online:
            continue
        ps = latest.probes.get(probe) if latest is not None else None
        interval = ps.interval_s if ps is not None and ps.interval_s else None
        if interval is None:
            steps = [_median_step_s(v.time_ns) for v in views]
            steps = [x for x in steps if x]
            interval = min(steps) if steps else None
        if interval is None:
            continue
        limit_s = max(p.intervals * interval, p.min_gap_s)
        last_valid = max((v.last_valid_ns for v in views if v.last_valid_ns is not None), default=None)
        if last_valid is None and ps is not None and ps.last_ok_ns is not None:
            last_valid = ps.last_ok_ns
        if last_valid is None:
            first = min((int(v.time_ns[0]) for v in views if len(v)), default=None)
            if first is None:
                continue
            reference = first        # never a valid value: count from the first row seen
        else:
            reference = last_valid
        silent_s = (t - reference) / NS
        if silent_s <= limit_s:
            continue
        heard = gateway_last.get((site, gw))
        heard_status = latest.time_ns if latest is not None else None
        recent = max(x for x in (heard, heard_status, 0) if x is not None)
        if (t - recent) / NS > limit_s:
            continue     # the whole gateway is silent: gateway_offline, not this probe
        state = f"; the gateway reports it '{ps.state}'" + (f": {ps.message}" if ps.message else "") \
            if ps is not None and ps.state not in ("ok", "") else ""
        last = _last_values(views)
        out.append(Finding(
            "no_data", _labels(site=site, gateway=gw, probe=probe), p.severity, silent_s,
            f"no valid value from probe {probe} on {site}/{gw} for {fmt_duration(silent_s)} "
            f"(since {fmt_time(last_valid)}; polled every {interval:g} s){state}{last}",
            CHECK_PROBE, last_valid))
    return out


def _last_values(views: Iterable[SeriesView]) -> str:
    shown = []
    for v in views:
        ok = np.flatnonzero(v.valid)
        if len(ok) and np.isfinite(v.value[ok[-1]]):
            shown.append(f"{v.key.quantity}={_fmt(float(v.value[ok[-1]]))}")
    return f"; last values {', '.join(shown[:6])}" if shown else ""


def qartod_flags(snap: Snapshot, p: C.QartodFlags) -> list[Finding]:
    """At least `share` of a series' QC-evaluated values in `window_s` flagged SUSPECT/FAIL by the gateway's
    QARTOD tests."""
    t0 = snap.t_ns - int(p.window_s * NS)
    wanted = np.array(sorted(p.flags), np.uint8)
    out = []
    for s in snap.series:
        w = s.since(t0)
        if len(w) < p.min_count:
            continue
        evaluated = (w.flag == 1) | (w.flag == 3) | (w.flag == 4)
        flagged = _in(w.flag, wanted)
        if not flagged.any():
            continue
        if p.tests:
            flagged &= _in(w.test, test_codes(p.tests))
        elif p.ignore_tests:
            flagged &= ~_in(w.test, test_codes(p.ignore_tests))
        n, k = int(evaluated.sum()), int(flagged.sum())
        if n < p.min_count or k / n < p.share:
            continue
        tests = Counter(test_name(int(x)) for x in w.test[flagged] if x)
        by = ", ".join(f"{name} {c}" for name, c in tests.most_common(3)) or "no test named"
        out.append(Finding(
            "qartod_flags", series_labels(s.key), p.severity, k / n,
            f"{k} of {n} {s.key.quantity} values of {s.key.probe} flagged suspect/fail in the last "
            f"{fmt_duration(p.window_s)} ({by}); last value {_fmt(float(w.value[-1]))}",
            "the probe's installation (air gap, water pooling), the QC spans in the gateway's [probes.qc] "
            "tables, and a recent calibration change"))
    return out


def flat_line(snap: Snapshot, p: C.FlatLine) -> list[Finding]:
    """The QARTOD flat-line test (collector.qartod.flat_line) flags the newest value FAIL (or SUSPECT)."""
    level = qartod.FAIL if p.level == "fail" else qartod.SUSPECT
    out = []
    for s in snap.series:
        spec = p.quantities.get(s.key.quantity)
        if spec is None or len(s) < 3:
            continue
        step = _median_step_s(s.time_ns)
        if not step:
            continue
        w = s.since(snap.t_ns - int((spec.fail_threshold_s + 3 * step) * NS))
        finite = np.flatnonzero(np.isfinite(w.value))
        if len(finite) < 3 or (snap.t_ns - int(w.time_ns[finite[-1]])) / NS > 3 * step:
            continue        # stopped sending: no_data's business
        upto = finite[-1] + 1
        if upto >= 2 and min(spec.suspect_threshold_s, spec.fail_threshold_s) >= 2 * step \
                and np.isfinite(w.value[upto - 2]) and abs(w.value[upto - 1] - w.value[upto - 2]) >= spec.tolerance:
            continue    # the last two values differ: no flat-line window that holds both can flag
        try:
            flags = qartod.flat_line(w.value[:upto], w.time_ns[:upto], spec.suspect_threshold_s,
                                     spec.fail_threshold_s, spec.tolerance)
        except ValueError:
            continue    # steps under a second: QARTOD's whole-second flat line is undefined there
        if flags[finite[-1]] < level or flags[finite[-1]] == qartod.MISSING:
            continue
        stuck_for = 0.0
        v = float(w.value[finite[-1]])
        same = np.flatnonzero(np.abs(w.value[finite] - v) >= spec.tolerance)
        start = int(w.time_ns[finite[same[-1] + 1]]) if len(same) else int(w.time_ns[finite[0]])
        stuck_for = (int(w.time_ns[finite[-1]]) - start) / NS
        out.append(Finding(
            "flat_line", series_labels(s.key), p.severity, v,
            f"{s.key.quantity} of {s.key.probe} has stayed at {_fmt(v)} (within {spec.tolerance:g}) for "
            f"{fmt_duration(stuck_for)}+ (QARTOD flat line, fail after {fmt_duration(spec.fail_threshold_s)})",
            "a stuck sensor or a frozen reading in the driver: power-cycle the probe, compare with a hand "
            "measurement", start))
    return out


def out_of_range(snap: Snapshot, p: C.OutOfRange) -> list[Finding]:
    """At least `share` of a series' values in `window_s` outside the QARTOD gross-range span (collector.qartod)."""
    bad_from = qartod.FAIL if p.level == "fail" else qartod.SUSPECT
    t0 = snap.t_ns - int(p.window_s * NS)
    out = []
    for s in snap.series:
        spec = p.quantities.get(s.key.quantity)
        if spec is None:
            continue
        w = s.since(t0)
        vals = w.value[np.isfinite(w.value)]
        if len(vals) < p.min_count:
            continue
        flags = qartod.gross_range(vals, spec.fail_span, spec.suspect_span)
        bad = int(np.count_nonzero((flags >= bad_from) & (flags != qartod.MISSING)))
        if bad / len(vals) < p.share:
            continue
        span = spec.fail_span if p.level == "fail" else (spec.suspect_span or spec.fail_span)
        out.append(Finding(
            "out_of_range", series_labels(s.key), p.severity, float(vals[-1]),
            f"{bad} of {len(vals)} {s.key.quantity} values of {s.key.probe} in the last "
            f"{fmt_duration(p.window_s)} outside [{span[0]:g}, {span[1]:g}]; last {_fmt(float(vals[-1]))}",
            "the probe's wiring and installation, its calibration (model and inputs), and the span "
            "in [alerts.rules.out_of_range.quantities]"))
    return out


def spectral_saturation(snap: Snapshot, p: C.SpectralSaturation) -> list[Finding]:
    """At least `share` of the spectra in `window_s` saturated (driver flag 'saturated', or a band at full scale)."""
    t0 = snap.t_ns - int(p.window_s * NS)
    out = []
    for s in snap.series:
        if s.key.quantity != p.quantity:
            continue
        w = s.since(t0)
        saturated = test_code("saturated")
        spectra = np.isfinite(w.spec_mean) | (w.test == saturated)
        n = int(spectra.sum())
        if n < p.min_count:
            continue
        sat = (w.test == saturated)
        if p.full_scale is not None:
            with np.errstate(invalid="ignore"):
                sat = sat | (w.spec_max >= p.full_scale)
        k = int((sat & spectra).sum())
        if k / n < p.share:
            continue
        out.append(Finding(
            "spectral_saturation", series_labels(s.key), p.severity, k / n,
            f"{k} of {n} spectra of {s.key.probe} in the last {fmt_duration(p.window_s)} saturated",
            "lower the probe's gain or integration time, and check the window for glare or a lamp change"))
    return out


def reference_drift(rule: str) -> Callable[[Snapshot, C.ReferenceDrift], list[Finding]]:
    """The white (or dark) reference's recent median level moved more than `max_change` from its baseline."""

    def check(snap: Snapshot, p: C.ReferenceDrift) -> list[Finding]:
        t_recent = snap.t_ns - int(p.recent_s * NS)
        t_base = t_recent - int(p.baseline_s * NS)
        out = []
        for s in snap.series:
            if s.key.quantity != p.quantity:
                continue
            w = s.since(t_base)
            ok = np.isfinite(w.spec_mean)
            recent = ok & (w.time_ns >= t_recent)
            base = ok & (w.time_ns < t_recent)
            if recent.sum() < p.min_count or base.sum() < p.min_count:
                continue
            b = median(w.spec_mean[base])
            r = median(w.spec_mean[recent])
            if b == 0:
                continue
            change = (r - b) / abs(b)
            if abs(change) <= p.max_change:
                continue
            what = "white" if "white" in p.quantity else "dark" if "dark" in p.quantity else p.quantity
            out.append(Finding(
                rule, series_labels(s.key), p.severity, change,
                f"{what} reference of {s.key.probe} moved {change:+.1%} (median {_fmt(r)} over the last "
                f"{fmt_duration(p.recent_s)} against {_fmt(b)} before)",
                "the lamp (ageing, a recent change), the white tile (dirt, moisture) and the detector "
                "temperature; recalibrate the spectrometer if the change is real"))
        return out

    return check


def calibration_domain(snap: Snapshot, p: C.CalibrationDomain) -> list[Finding]:
    """At least `share` of a calibrated series' values in `window_s` outside the model's calibration domain."""
    t0 = snap.t_ns - int(p.window_s * NS)
    out = []
    for s in snap.series:
        if s.key.source != "calibrated" or (p.quantities and s.key.quantity not in p.quantities):
            continue
        w = s.since(t0)
        rows = w.flag != 9
        n = int(rows.sum())
        if n < p.min_count:
            continue
        k = int((rows & _in(w.test, test_codes(p.tests))).sum())
        if k / n < p.share:
            continue
        out.append(Finding(
            "calibration_domain", series_labels(s.key), p.severity, k / n,
            f"{k} of {n} {s.key.quantity} estimates of {s.key.probe} in the last {fmt_duration(p.window_s)} "
            f"outside the calibration domain ({', '.join(p.tests)})",
            "whether this soil is represented in the calibration set: add local samples and refit "
            "(humus calibrate fit), or check the spectra for a dirty window"))
    return out


def neighbours(snap: Snapshot, p: C.Neighbours) -> list[Finding]:
    """A probe's median over `window_s` disagrees with the other probes at the same site and depth.

    The reference is the median of the others and the tolerance the larger of the
    quantity's fixed threshold and `spread_factor` times their robust spread
    (1.4826 MAD), so a field that is naturally patchy does not fire.
    """
    t0 = snap.t_ns - int(p.window_s * NS)
    groups: dict[tuple, list[tuple[SeriesView, float, float]]] = {}
    for s in snap.series:
        k = s.key
        if k.quantity not in p.quantities or k.depth_cm is None:
            continue
        w = s.since(t0)
        ok = w.valid & ((w.flag == 1) | (w.flag == 2)) & np.isfinite(w.value)
        if ok.sum() < p.min_count:
            continue
        vals = w.value[ok]
        groups.setdefault((k.site, k.depth_cm, k.quantity, k.source), []).append(
            (s, median(vals), float(vals[-1])))
    out = []
    for (site, depth, quantity, source), members in groups.items():
        if len({m[0].key.probe for m in members}) < p.min_probes:
            continue
        medians = np.array([m[1] for m in members])
        for i, (s, mine, last) in enumerate(members):
            others = np.delete(medians, i)
            ref = median(others)
            spread = 1.4826 * median(np.abs(others - ref))
            tol = max(p.quantities[quantity], p.spread_factor * spread)
            dev = mine - ref
            if abs(dev) <= tol:
                continue
            out.append(Finding(
                "neighbours", series_labels(s.key), p.severity, dev,
                f"{quantity} of {s.key.probe} at {depth:g} cm reads {_fmt(mine)} (median over "
                f"{fmt_duration(p.window_s)}), {dev:+.3g} from its {len(others)} neighbours' {_fmt(ref)}",
                "the probe's contact with the soil (air gaps after drying), drift against a hand "
                "measurement, and its calibration model"))
    return out


def years_to_detect(snap: Snapshot, p: C.YearsToDetect) -> list[Finding]:
    """Completeness or noise that pushes a site's years-to-detect-4-per-mille past `target_years`.

    Per probe over `window_s`: completeness c (valid values / expected from the
    median polling step) and measurement noise sigma (1.4826 MAD of successive
    differences / sqrt 2, blind to slow trends and seasons). The yearly site
    mean then has sd sqrt(floor_sd^2 + sigma^2 / (c N independent_per_year))
    with N probes, and calibration.trend.years_to_detect gives the years to
    detect a rise of target_per_mille of the baseline a year (alpha 0.05,
    power 0.8; Smith 2004, Global Change Biology 10, 1878-1883).
    """
    from calibration.trend import years_to_detect as ytd

    t0 = snap.t_ns - int(p.window_s * NS)
    sites: dict[str, list[tuple[float, float, float]]] = {}
    counts: dict[str, int] = {}
    for s in snap.series:
        if s.key.quantity != p.quantity:
            continue
        w = s.since(t0)
        if len(w) < 3:
            continue
        step = _median_step_s(w.time_ns)
        ok = w.valid & np.isfinite(w.value)
        vals = w.value[ok]
        if not step or len(vals) < 3:
            continue
        span_s = (snap.t_ns - max(int(w.time_ns[0]), t0)) / NS
        expected = max(1.0, span_s / step)
        c = min(1.0, len(vals) / expected)
        d = np.diff(vals)
        sigma = 1.4826 * median(np.abs(d - median(d))) / math.sqrt(2)
        sites.setdefault(s.key.site, []).append((c, sigma, median(vals)))
        counts[s.key.site] = counts.get(s.key.site, 0) + len(vals)
    out = []
    for site, probes in sites.items():
        if counts[site] < p.min_count:
            continue
        c = float(np.mean([x[0] for x in probes]))
        sigma = median(np.array([x[1] for x in probes]))
        baseline = median(np.array([x[2] for x in probes]))
        if baseline <= 0 or c <= 0:
            continue
        sd_year = math.sqrt(p.floor_sd ** 2 + sigma ** 2 / (c * len(probes) * p.independent_per_year))
        years = _years(ytd, p.target_per_mille / 1000.0 * baseline, sd_year)
        if years <= p.target_years:
            continue
        shown = "over 1000" if math.isinf(years) else f"{years:.0f}"
        out.append(Finding(
            "years_to_detect", _labels(site=site, quantity=p.quantity), p.severity,
            years if math.isfinite(years) else 1e9,
            f"detecting {p.target_per_mille:g} per mille a year of {p.quantity} at {site} would take {shown} years "
            f"(target {p.target_years:g}): completeness {c:.0%} over {len(probes)} probe(s), noise sd "
            f"{sigma:.3g} per reading, baseline {baseline:.3g}",
            "the probes at this site with gaps (no_data alerts) or noisy readings; more probes or a denser "
            "schedule shorten it"))
    return out


_YTD_CACHE: dict[float, float] = {}


def _years(ytd: Callable[..., float], rate: float, sd: float) -> float:
    """Years to detect depend on rate / sd only (se is proportional to sd): cached on that ratio, 3 digits."""
    if sd <= 0:
        return ytd(rate, 0.0, 1.0)
    ratio = float(f"{rate / sd:.3g}")
    years = _YTD_CACHE.get(ratio)
    if years is None:
        if len(_YTD_CACHE) > 10_000:
            _YTD_CACHE.clear()
        years = _YTD_CACHE[ratio] = ytd(ratio, 1.0, 1.0)
    return years


# -- gateway rules ------------------------------------------------------------------------------


def gateway_offline(snap: Snapshot, p: C.GatewayOffline) -> list[Finding]:
    """The gateway's last will said 'offline', or no status arrived for `heartbeat_timeout_s`."""
    out = []
    for (site, gw), v in snap.gateways.items():
        st = v.latest
        if st is None:
            continue
        age = (snap.t_ns - st.time_ns) / NS
        if st.online and age <= p.heartbeat_timeout_s:
            continue
        why = "its last will says offline" if not st.online else f"no status for {fmt_duration(age)}"
        out.append(Finding(
            "gateway_offline", _labels(site=site, gateway=gw), p.severity, age,
            f"gateway {site}/{gw} offline since {fmt_time(st.time_ns)} ({why}); its spool keeps the data",
            "the gateway's power and network (cellular signal, SIM credit), then 'systemctl status humus-collect' "
            "on it", st.time_ns))
    return out


def spool_backlog(snap: Snapshot, p: C.SpoolBacklog) -> list[Finding]:
    """The gateway's unsent observations grew over `window_s` and the oldest is older than `min_age_s`."""
    t0 = snap.t_ns - int(p.window_s * NS)
    out = []
    for (site, gw), v in snap.gateways.items():
        pts = [s for s in v.statuses if s.time_ns >= t0 and s.online and s.unsent is not None]
        if len(pts) < 2 or v.latest is None or not v.latest.online:
            continue
        first, last = pts[0], pts[-1]
        age = last.oldest_unsent_s or 0.0
        if last.unsent <= first.unsent or age < p.min_age_s:
            continue
        out.append(Finding(
            "spool_backlog", _labels(site=site, gateway=gw), p.severity, last.unsent,
            f"gateway {site}/{gw} has {last.unsent:.0f} unsent observations (+{last.unsent - first.unsent:.0f} in "
            f"{fmt_duration(p.window_s)}), the oldest {fmt_duration(age)} old",
            "the link to the broker (signal, broker reachable, credentials), and the ingest workers "
            "(no receipts come back while they are down)"))
    return out


def disk_low(snap: Snapshot, p: C.DiskLow) -> list[Finding]:
    """The gateway's data disk has less than `min_free_bytes` free."""
    out = []
    for (site, gw), v in snap.gateways.items():
        st = v.latest
        if st is None or not st.online or st.disk_free_bytes is None or st.disk_free_bytes >= p.min_free_bytes:
            continue
        out.append(Finding(
            "disk_low", _labels(site=site, gateway=gw), p.severity, st.disk_free_bytes,
            f"gateway {site}/{gw} has {st.disk_free_bytes / 1e6:.0f} MB free on its data disk "
            f"(threshold {p.min_free_bytes / 1e6:.0f} MB)",
            "the SD card: logs (journalctl --vacuum-size), the spool size against its quota, old files"))
    return out


def clock(snap: Snapshot, p: C.Clock) -> list[Finding]:
    """The gateway's clock is unsynchronised for `unsynced_for_s`, or stepped by `min_step_s` in `step_hold_s`."""
    out = []
    t_hold = snap.t_ns - int(p.step_hold_s * NS)
    for (site, gw), v in snap.gateways.items():
        st = v.latest
        if st is None or not st.online:
            continue
        reason = None
        value = 0.0
        if st.clock_synced is False:
            since = st.time_ns
            for s in reversed(v.statuses):
                if s.clock_synced is False:
                    since = s.time_ns
                elif s.clock_synced is True:
                    break
            if (snap.t_ns - since) / NS >= p.unsynced_for_s:
                reason = f"clock not synchronised since {fmt_time(since)}"
                value = (snap.t_ns - since) / NS
        stepped = [e for e in v.events if e.kind == "clock_step" and e.time_ns >= t_hold
                   and not _at_boot(v, e.time_ns, p.boot_grace_s)]
        recent = [s for s in v.statuses if s.time_ns >= t_hold and s.clock_steps is not None]
        older = [s for s in v.statuses if s.time_ns < t_hold and s.clock_steps is not None]
        counted = False
        if recent:
            before = older[-1].clock_steps if older else recent[0].clock_steps
            first = next((s for s in recent if s.clock_steps > before), None)
            # A step counted by a collector up for less than boot_grace_s is the board setting its clock.
            counted = first is not None and (first.uptime_s is None or first.uptime_s >= p.boot_grace_s)
        step_s = recent[-1].last_step_s if recent and recent[-1].last_step_s is not None else None
        if (stepped or counted) and (step_s is None or abs(step_s) >= p.min_step_s):
            when = stepped[-1].time_ns if stepped else recent[-1].time_ns
            size = f" by {step_s:+.1f} s" if step_s is not None else ""
            reason = (reason + "; " if reason else "") + f"clock stepped{size} at {fmt_time(when)}"
            value = step_s if step_s is not None else value
        if reason:
            out.append(Finding(
                "clock", _labels(site=site, gateway=gw), p.severity, value,
                f"gateway {site}/{gw}: {reason}; readings meanwhile are flagged suspect (clock_unsynced)",
                "NTP on the gateway (timedatectl, chronyc tracking), its network, and the RTC battery"))
    return out


def _at_boot(v: GatewayView, t_ns: int, grace_s: float) -> bool:
    """Whether `t_ns` falls within `grace_s` of the collector's start (uptime of the next status)."""
    later = [s for s in v.statuses if s.time_ns >= t_ns and s.uptime_s is not None]
    if not later:
        return False
    started = later[0].time_ns - int(later[0].uptime_s * NS)
    return t_ns - started < int(grace_s * NS)


def gateway_event(snap: Snapshot, p: C.GatewayEvent) -> list[Finding]:
    """An event on the gateway's alerts topic (spool_quota, disk_full, thread_restart, any new kind) in `hold_s`."""
    t0 = snap.t_ns - int(p.hold_s * NS)
    out = []
    for (site, gw), v in snap.gateways.items():
        latest: dict[tuple[str, str], Any] = {}
        count: Counter = Counter()
        for e in v.events:
            if e.time_ns >= t0 and e.kind not in p.ignore_kinds:
                latest[(e.kind, e.subject)] = e
                count[(e.kind, e.subject)] += 1
        for (kind, subject), e in latest.items():
            sev = "critical" if kind in p.critical_kinds else p.severity
            out.append(Finding(
                "gateway_event", _labels(site=site, gateway=gw, kind=kind, subject=subject), sev,
                float(count[(kind, subject)]),
                f"gateway {site}/{gw} reported {kind} for {subject} ({count[(kind, subject)]}x since "
                f"{fmt_time(t0)}): {e.message}",
                "the gateway log (journalctl -u humus-collect) around that time", e.time_ns))
    return out


# -- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str
    check: Callable[[Snapshot, Any], list[Finding]]
    doc: str


RULES: tuple[Rule, ...] = (
    Rule("no_data", no_data, "no valid value from a probe for N polling intervals"),
    Rule("gateway_offline", gateway_offline, "last will 'offline' or no heartbeat"),
    Rule("qartod_flags", qartod_flags, "share of values flagged suspect/fail by the gateway's QARTOD tests"),
    Rule("flat_line", flat_line, "stuck value (QARTOD flat line)"),
    Rule("out_of_range", out_of_range, "values outside the QARTOD gross range"),
    Rule("spectral_saturation", spectral_saturation, "saturated spectra"),
    Rule("white_reference_drift", reference_drift("white_reference_drift"), "white reference drift"),
    Rule("dark_reference_drift", reference_drift("dark_reference_drift"), "dark reference drift"),
    Rule("calibration_domain", calibration_domain, "share of estimates outside the calibration domain"),
    Rule("spool_backlog", spool_backlog, "spool backlog growing"),
    Rule("disk_low", disk_low, "gateway disk nearly full"),
    Rule("clock", clock, "clock unsynchronised or stepped"),
    Rule("neighbours", neighbours, "a probe disagreeing with its neighbours at the same site and depth"),
    Rule("years_to_detect", years_to_detect, "a site's years to detect 4 per mille past its target"),
    Rule("gateway_event", gateway_event, "events the gateway publishes (spool_quota, disk_full, thread_restart...)"),
)
RULE_NAMES = tuple(r.name for r in RULES)


def lookback_s(rules: C.RulesSettings, quantity: str | None) -> float:
    """How far back the rules look for `quantity` (None: gateway status and events)."""
    r = rules
    if quantity is None:
        return max(3600.0, r.spool_backlog.window_s, r.clock.step_hold_s, r.gateway_event.hold_s,
                   r.clock.unsynced_for_s)
    need = [r.qartod_flags.window_s, 3600.0]
    fl = r.flat_line.quantities.get(quantity)
    if fl is not None:
        need.append(fl.fail_threshold_s * 1.1 + 3600)
    if quantity in r.out_of_range.quantities:
        need.append(r.out_of_range.window_s)
    if quantity in r.neighbours.quantities:
        need.append(r.neighbours.window_s)
    if quantity == r.spectral_saturation.quantity:
        need.append(r.spectral_saturation.window_s)
    for d in (r.white_reference_drift, r.dark_reference_drift):
        if quantity == d.quantity:
            need.append(d.baseline_s + d.recent_s)
    if not r.calibration_domain.quantities or quantity in r.calibration_domain.quantities:
        need.append(r.calibration_domain.window_s)
    if quantity == r.years_to_detect.quantity:
        need.append(r.years_to_detect.window_s)
    return max(need)


def evaluate(snap: Snapshot, rules: C.RulesSettings,
             failed: Callable[[str, Exception], None] | None = None) -> dict[str, list[Finding]]:
    """Every enabled rule on one snapshot: rule name -> its findings (an empty list: all fine).

    A rule that raises is left out of this evaluation (its alerts keep their state) and
    reported to `failed`; without `failed` the exception propagates (tests, replays).
    """
    out = {}
    for r in RULES:
        params = getattr(rules, r.name)
        if not params.enabled:
            continue
        try:
            out[r.name] = r.check(snap, params)
        except Exception as e:
            if failed is None:
                raise
            failed(r.name, e)
    return out


def archive_plan(rules: C.RulesSettings) -> list[tuple[str | None, float]]:
    """What to read from the archive to fill the buffers: (quantity or None for all, seconds back).

    Most quantities need hours; a few (reference spectra, SOC for years_to_detect) need weeks,
    and are read on their own so that a start does not read weeks of everything.
    """
    r = rules
    named = {*r.flat_line.quantities, *r.out_of_range.quantities, *r.neighbours.quantities,
             r.spectral_saturation.quantity, r.white_reference_drift.quantity, r.dark_reference_drift.quantity,
             r.years_to_detect.quantity, *r.calibration_domain.quantities}
    general = lookback_s(r, "\x00any")
    plan: list[tuple[str | None, float]] = [(None, general)]
    for q in sorted(named):
        s = lookback_s(r, q)
        if s > general:
            plan.append((q, s))
    return plan
