"""Each rule fires on its synthetic fault, and no rule fires on a clean three-week season.

The seasons (alerts_support.py) go through a real SQLite archive and the
recorded gateway history, and `humus alerts replay`'s code evaluates them
every 30 minutes with the default rules.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import alerts_support as S
from collector import qartod
from observatory.alerts.buffers import NS, Buffers, SeriesKey
from observatory.alerts.config import FlatLine, FlatLineSpec, OutOfRange, RangeSpec, RulesSettings, YearsToDetect
from observatory.alerts.engine import Engine
from observatory.alerts.replay import replay
from observatory.alerts.rules import RULE_NAMES, flat_line, out_of_range, years_to_detect
from observatory.alerts.state import AlertStore
from observatory.stores import open_store

STEP_S = 1800.0


def _replay_season(tmp_path_factory, season: S.Season):
    path = tmp_path_factory.mktemp("season") / "archive.sqlite"
    store = open_store(f"sqlite:{path}")
    store.write(season.observations)
    with AlertStore(path) as st:
        st.record_gateway(S.kept_statuses(season), season.events)
    try:
        return replay(store, season.start_ns, season.end_ns, RulesSettings(), step_s=STEP_S, state_path=path)
    finally:
        store.close()


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _replay_season(tmp_path_factory, S.clean_season())


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    return _replay_season(tmp_path_factory, S.faulty_season())


def test_a_clean_season_with_diurnal_cycles_and_rain_raises_nothing(clean):
    assert clean.evaluations == 21 * 48 + 1
    assert clean.rows > 30_000
    assert [(e.rule, e.subject) for e in clean.timeline] == []


@pytest.mark.parametrize("fault", S.FAULTS, ids=lambda f: f.rule)
def test_each_rule_fires_on_its_fault_within_it(faulty, fault):
    episodes = [e for e in faulty.timeline if e.rule == fault.rule]
    assert [e.subject for e in episodes] == [fault.subject], faulty.timeline
    e = episodes[0]
    assert fault.start_ns <= e.start_ns <= fault.end_ns + int(STEP_S * NS)


def test_the_faulty_season_raises_only_the_injected_faults(faulty):
    assert sorted({e.rule for e in faulty.timeline}) == sorted({f.rule for f in S.FAULTS})
    assert set(RULE_NAMES) - {f.rule for f in S.FAULTS} == {"years_to_detect"}


def test_resolved_alerts_end_after_their_fault(faulty):
    by_rule = {f.rule: f for f in S.FAULTS}
    for e in faulty.timeline:
        if e.end_ns is not None:
            assert e.end_ns >= by_rule[e.rule].end_ns - int(STEP_S * NS), e


# -- where a rule mirrors QARTOD, its verdict is QARTOD's --------------------------------------


def _series_buffer(values, step_s=900):
    b = Buffers(lambda q: 10 * 86400 * NS)
    key = SeriesKey("s", "g", "p", 10.0, "vwc", "calibrated")
    t = S.T0 + np.arange(len(values), dtype=np.int64) * step_s * NS
    b._series(key).add(t, np.asarray(values, float), np.ones(len(values), np.uint8),
                       np.zeros(len(values), np.int32), np.full(len(values), np.nan), np.full(len(values), np.nan))
    return b, t


def test_flat_line_fires_exactly_where_qartod_flat_line_fails():
    rng = np.random.default_rng(3)
    x = np.round(0.25 + rng.normal(0, 0.002, 600), 3)
    x[150:320] = x[150]                 # stuck for 42 h
    x[400:430] = x[400]                 # stuck 7.5 h: suspect at most
    x[500:505] = np.nan                 # a gap inside a later stretch
    spec = FlatLineSpec(suspect_threshold_s=6 * 3600, fail_threshold_s=24 * 3600, tolerance=1e-4)
    params = FlatLine(quantities={"vwc": spec})
    b, t = _series_buffer(x)
    expected = qartod.flat_line(x, t, spec.suspect_threshold_s, spec.fail_threshold_s, spec.tolerance)
    for i in range(3, len(x)):
        if not math.isfinite(x[i]):
            continue
        fired = bool(flat_line(b.snapshot(int(t[i])), params))
        assert fired == (expected[i] == qartod.FAIL), i
    assert (expected == qartod.FAIL).sum() > 50


def test_out_of_range_counts_exactly_the_values_qartod_gross_range_fails():
    x = np.r_[np.full(20, 0.3), np.full(3, 0.75), np.full(5, 0.3), np.full(4, -0.1)]
    spec = RangeSpec((0.0, 0.7), (0.01, 0.6))
    b, t = _series_buffer(x)
    window = 4 * 900
    params = OutOfRange(window_s=window - 1, share=0.5, min_count=1, quantities={"vwc": spec})
    flags = qartod.gross_range(x, spec.fail_span, spec.suspect_span)
    for i in range(len(x)):
        lo = max(0, i - 3)
        share = float(np.mean(flags[lo:i + 1] == qartod.FAIL))
        assert bool(out_of_range(b.snapshot(int(t[i])), params)) == (share >= 0.5), i


# -- years to detect ----------------------------------------------------------------------------


def _soc(noise: float, completeness: float, days: int = 30, seed: int = 1):
    rng = np.random.default_rng(seed)
    n = days * 24
    t = S.T0 + np.arange(n, dtype=np.int64) * 3600 * NS
    v = 2.4 + rng.normal(0, noise, n)
    v[rng.random(n) > completeness] = np.nan
    b = Buffers(lambda q: 40 * 86400 * NS)
    flags = np.where(np.isfinite(v), 1, 9).astype(np.uint8)
    b._series(SeriesKey("farm-a", "gw-1", "nir-1", 5.0, "soc", "calibrated")).add(
        t, v, flags, np.zeros(n, np.int32), np.full(n, np.nan), np.full(n, np.nan))
    return b.snapshot(int(t[-1]))


def test_years_to_detect_quiet_on_a_good_probe_and_fires_on_noise_or_gaps():
    p = YearsToDetect()
    assert years_to_detect(_soc(0.1, 0.98), p) == []
    noisy = years_to_detect(_soc(1.0, 0.98), p)
    gappy = years_to_detect(_soc(0.3, 0.05), p)
    assert [f.subject for f in noisy] == ["farm-a soc"]
    assert noisy[0].value > p.target_years and "completeness" in noisy[0].summary
    assert [f.subject for f in gappy] == ["farm-a soc"]


def test_years_to_detect_uses_the_calibration_power_analysis():
    from calibration.trend import years_to_detect as ytd

    f = years_to_detect(_soc(1.0, 1.0), YearsToDetect(target_years=1))
    sigma = float(f[0].summary.split("noise sd ")[1].split()[0])
    assert f[0].value == pytest.approx(ytd(0.004 * 2.4, sigma / math.sqrt(365), 1.0), rel=0.15)


def test_rules_table_has_parameters_for_every_rule():
    rules = RulesSettings()
    for name in RULE_NAMES:
        p = getattr(rules, name)
        assert p.enabled and p.for_s >= 0 and p.severity in ("info", "warning", "critical")
    assert Engine(rules).step(S.T0) == []


def test_a_probe_gone_from_data_and_status_is_forgotten_and_its_no_data_alert_resolves():
    from humus.records import Observation
    from observatory.alerts.buffers import ProbeStatus, StatusPoint

    def vwc(probe: str, t: int) -> Observation:
        return Observation(site="s", gateway="g", probe=probe, quantity="vwc", time_ns=t,
                           value=0.2 + 0.001 * (t // S.STEP % 3), unit="m3/m3")

    e = Engine(RulesSettings())
    both = {p: ProbeStatus("ok", "", 900.0, None) for p in ("teros-1", "teros-2")}
    one = {"teros-1": both["teros-1"]}
    for k in range(8):
        t = S.T0 + k * S.STEP
        e.take_observations([vwc(p, t) for p in (both if k < 4 else one)])
        e.take_status("s", "g", StatusPoint(t, True, probes=both if k < 4 else one))
        e.step(t)
    assert [a.subject for a in e.lifecycle.firing()] == ["s/g/teros-2"]    # removed from the gateway's config
    t = S.T0 + 8 * S.STEP
    while t < S.T0 + 3 * S.DAY:                                           # past every look-back of vwc
        e.take_observations([vwc("teros-1", t)])
        e.take_status("s", "g", StatusPoint(t, True, probes=one))
        e.step(t)
        t += S.STEP
    assert e.lifecycle.firing() == []
    assert {k.probe for k in e.buffers.series} == {"teros-1"}


def test_a_clock_step_right_after_boot_is_not_a_fault_but_one_later_is():
    from observatory.alerts.buffers import GatewayEventRecord, StatusPoint
    from observatory.alerts.config import Clock
    from observatory.alerts.rules import clock

    def run(uptime_at_step_s: float) -> list:
        b = Buffers(lambda q: 86400 * NS)
        for k in range(10):
            t = S.T0 + k * 60 * NS
            steps = 0 if k < 5 else 1
            b.add_status("s", "g", StatusPoint(t, True, clock_synced=True, clock_steps=steps, last_step_s=3600.0,
                                               uptime_s=uptime_at_step_s + (k - 5) * 60))
        b.add_event("s", "g", GatewayEventRecord(S.T0 + 4 * 60 * NS + 30 * NS, "clock_step", "g",
                                                 "clock stepped by +3600.000 s"))
        return clock(b.snapshot(S.T0 + 9 * 60 * NS), Clock())

    assert run(uptime_at_step_s=20) == []             # NTP set the clock of a board without RTC at boot
    (f,) = run(uptime_at_step_s=86400)                # a running gateway's clock jumped an hour
    assert f.subject == "s/g" and "stepped by +3600.0 s" in f.summary
