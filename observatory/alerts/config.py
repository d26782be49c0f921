"""The ``[alerts]`` table of observatory.toml, parsed once into frozen dataclasses.

The alerts service shares observatory.toml with ``humus ingest`` (the same
``[mqtt]`` broker, the same ``[ingest] store`` by default) but owns its own
table; every rule has its parameters under ``[alerts.rules.<rule>]``
(docs/alerts.md lists them with their meaning). A bad value is one
`ConfigError` line naming the file, the key and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

from humus.config import ConfigError, load_section, read_toml, setting
from humus.mqtt import MqttSettings

Severity = Literal["info", "warning", "critical"]

_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")
_DAY = 86400.0


def _pos(v: float) -> bool:
    return v > 0


def _nonneg(v: float) -> bool:
    return v >= 0


def _share(v: float) -> bool:
    return 0 < v <= 1


def _frozen(d: dict) -> Mapping:
    return MappingProxyType(d)


# -- rule parameters ------------------------------------------------------------------------
# Every rule has enabled / for_s / keep_firing_for_s / severity (Prometheus' `for` and
# `keep_firing_for`); the rest is its own. Defaults were chosen to stay quiet on a clean
# multi-week series with diurnal temperature cycles and rain events
# (tests/observatory/alerts/test_rules_clean.py) and to fire on the faults in test_rules_faults.py.


@dataclass(frozen=True)
class NoData:
    enabled: bool = setting(True)
    for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    intervals: float = setting(3.0, check=lambda v: v >= 1, expect="a number of polling intervals >= 1",
                               doc="fire when a probe sent no valid value for this many of its intervals")
    min_gap_s: float = setting(60.0, check=_nonneg, expect="seconds >= 0", doc="but never for a gap shorter than this")


@dataclass(frozen=True)
class GatewayOffline:
    enabled: bool = setting(True)
    for_s: float = setting(120.0, check=_nonneg, expect="seconds >= 0",
                           doc="a gateway restarting says 'offline' then 'online' within seconds")
    keep_firing_for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("critical")
    heartbeat_timeout_s: float = setting(900.0, check=_pos, expect="seconds > 0",
                                         doc="offline when no status arrived for this long (the collector's "
                                             "heartbeat_s defaults to 60)")


@dataclass(frozen=True)
class QartodFlags:
    enabled: bool = setting(True)
    for_s: float = setting(1800.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(3600.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    window_s: float = setting(21600.0, check=_pos, expect="seconds > 0")
    share: float = setting(0.25, check=_share, expect="a share in (0, 1]",
                           doc="fire when at least this share of a series' values in the window is flagged")
    min_count: int = setting(6, check=lambda v: v >= 1, expect="a whole number >= 1")
    flags: tuple[int, ...] = setting((3, 4), check=lambda v: bool(v) and set(v) <= {3, 4},
                                     expect="a list of QARTOD flags among 3 (suspect) and 4 (fail)")
    tests: tuple[str, ...] = setting((), doc="only flags set by these tests (empty: any test not ignored)")
    ignore_tests: tuple[str, ...] = setting(
        ("clock_unsynced", "applicability_domain", "calibration_range", "saturated", "stuck", "reflectance_range"),
        doc="flags other rules own (clock, calibration domain, saturation, flat line)")


@dataclass(frozen=True)
class FlatLineSpec:
    suspect_threshold_s: float = setting(86400.0, check=_pos, expect="seconds > 0")
    fail_threshold_s: float = setting(172800.0, check=_pos, expect="seconds > 0",
                                      doc="two days: deep, slowly changing soil at the sensor's resolution can "
                                          "repeat a value for a day")
    tolerance: float = setting(1e-4, check=_nonneg, expect="a value >= 0 in the quantity's unit")


@dataclass(frozen=True)
class FlatLine:
    enabled: bool = setting(True)
    for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(3600.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    level: Literal["suspect", "fail"] = setting("fail", doc="the QARTOD flat-line flag that fires")
    quantities: dict[str, FlatLineSpec] = setting(factory=lambda: _frozen({
        "vwc": FlatLineSpec(tolerance=1e-4), "soil_temp": FlatLineSpec(tolerance=0.005),
        "raw_counts": FlatLineSpec(tolerance=0.5)}), doc="QARTOD flat-line thresholds per quantity")


@dataclass(frozen=True)
class RangeSpec:
    fail_span: tuple[float, float] = setting(check=lambda v: v[0] < v[1], expect="[low, high] with low < high")
    suspect_span: tuple[float, float] | None = setting(None, check=lambda v: v is None or v[0] < v[1],
                                                       expect="[low, high] with low < high")


@dataclass(frozen=True)
class OutOfRange:
    enabled: bool = setting(True)
    for_s: float = setting(900.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(3600.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    level: Literal["suspect", "fail"] = setting("fail", doc="the QARTOD gross-range flag that counts")
    window_s: float = setting(3600.0, check=_pos, expect="seconds > 0")
    share: float = setting(0.5, check=_share, expect="a share in (0, 1]")
    min_count: int = setting(2, check=lambda v: v >= 1, expect="a whole number >= 1")
    quantities: dict[str, RangeSpec] = setting(factory=lambda: _frozen({
        "vwc": RangeSpec((0.0, 0.7), (0.01, 0.6)), "soil_temp": RangeSpec((-40.0, 60.0), (-20.0, 50.0))}),
        doc="QARTOD gross-range spans per quantity")


@dataclass(frozen=True)
class SpectralSaturation:
    enabled: bool = setting(True)
    for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(21600.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    window_s: float = setting(86400.0, check=_pos, expect="seconds > 0")
    share: float = setting(0.5, check=_share, expect="a share in (0, 1]")
    min_count: int = setting(2, check=lambda v: v >= 1, expect="a whole number >= 1")
    quantity: str = setting("spectrum")
    full_scale: float | None = setting(None, doc="counts at which a channel saturates; none: trust the driver's "
                                                 "'saturated' flag")


@dataclass(frozen=True)
class ReferenceDrift:
    enabled: bool = setting(True)
    for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(86400.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    quantity: str = setting("spectrum_white")
    baseline_s: float = setting(7 * _DAY, check=_pos, expect="seconds > 0",
                                doc="the reference level is the median over this span before the recent one")
    recent_s: float = setting(_DAY, check=_pos, expect="seconds > 0")
    max_change: float = setting(0.10, check=_pos, expect="a relative change > 0 (0.1 = 10 %)")
    min_count: int = setting(3, check=lambda v: v >= 1, expect="a whole number >= 1")


@dataclass(frozen=True)
class CalibrationDomain:
    enabled: bool = setting(True)
    for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(86400.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    window_s: float = setting(3 * _DAY, check=_pos, expect="seconds > 0")
    share: float = setting(0.3, check=_share, expect="a share in (0, 1]")
    min_count: int = setting(5, check=lambda v: v >= 1, expect="a whole number >= 1")
    tests: tuple[str, ...] = setting(("applicability_domain", "calibration_range"),
                                     doc="the flag tests that say 'outside the domain' (calibration/model.py)")
    quantities: tuple[str, ...] = setting(("soc",), doc="calibrated quantities from spectral models (empty: all)")


@dataclass(frozen=True)
class SpoolBacklog:
    enabled: bool = setting(True)
    for_s: float = setting(900.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    window_s: float = setting(3600.0, check=_pos, expect="seconds > 0")
    min_age_s: float = setting(1800.0, check=_nonneg, expect="seconds >= 0",
                               doc="the oldest unsent observation must be at least this old")


@dataclass(frozen=True)
class DiskLow:
    enabled: bool = setting(True)
    for_s: float = setting(300.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("critical")
    min_free_bytes: int = setting(200_000_000, check=lambda v: v >= 0, expect="bytes >= 0")


@dataclass(frozen=True)
class Clock:
    enabled: bool = setting(True)
    for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    unsynced_for_s: float = setting(900.0, check=_nonneg, expect="seconds >= 0",
                                    doc="fire when the gateway reports an unsynchronised clock this long")
    min_step_s: float = setting(2.0, check=_nonneg, expect="seconds >= 0")
    step_hold_s: float = setting(3600.0, check=_pos, expect="seconds > 0",
                                 doc="a clock step keeps the alert firing this long")
    boot_grace_s: float = setting(900.0, check=_nonneg, expect="seconds >= 0",
                                  doc="steps this soon after the collector started are a board without RTC "
                                      "setting its clock, not a fault")


@dataclass(frozen=True)
class Neighbours:
    enabled: bool = setting(True)
    for_s: float = setting(21600.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(21600.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    window_s: float = setting(_DAY, check=_pos, expect="seconds > 0")
    min_probes: int = setting(3, check=lambda v: v >= 3, expect="3 or more (two probes cannot tell which is wrong)")
    min_count: int = setting(6, check=lambda v: v >= 1, expect="a whole number >= 1")
    spread_factor: float = setting(4.0, check=_pos, expect="a factor > 0 of the neighbours' robust spread")
    quantities: dict[str, float] = setting(factory=lambda: _frozen({"vwc": 0.08, "soil_temp": 2.5}),
                                           doc="smallest disagreement that counts, per quantity, in its unit")


@dataclass(frozen=True)
class YearsToDetect:
    enabled: bool = setting(True)
    for_s: float = setting(_DAY, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(_DAY, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("info")
    quantity: str = setting("soc")
    window_s: float = setting(30 * _DAY, check=_pos, expect="seconds > 0")
    target_years: float = setting(10.0, check=_pos, expect="years > 0",
                                  doc="fire when detecting 4 per mille a year would take longer than this")
    target_per_mille: float = setting(4.0, check=_pos, expect="per mille a year > 0")
    independent_per_year: float = setting(365.0, check=_pos, expect="a number > 0",
                                          doc="independent estimates a complete probe gives per year")
    floor_sd: float = setting(0.0, check=_nonneg, expect="a standard deviation >= 0 in the quantity's unit",
                              doc="error no averaging removes (calibration, spatial sampling) of a yearly mean")
    min_count: int = setting(24, check=lambda v: v >= 3, expect="a whole number >= 3")


@dataclass(frozen=True)
class GatewayEvent:
    enabled: bool = setting(True)
    for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    keep_firing_for_s: float = setting(0.0, check=_nonneg, expect="seconds >= 0")
    severity: Severity = setting("warning")
    hold_s: float = setting(3600.0, check=_pos, expect="seconds > 0",
                            doc="an event keeps its alert firing this long after the last one")
    ignore_kinds: tuple[str, ...] = setting(("probe_state", "clock_step"),
                                            doc="kinds other rules own (no_data, clock)")
    critical_kinds: tuple[str, ...] = setting(("spool_quota", "disk_full"))


@dataclass(frozen=True)
class RulesSettings:
    no_data: NoData = setting(factory=NoData)
    gateway_offline: GatewayOffline = setting(factory=GatewayOffline)
    qartod_flags: QartodFlags = setting(factory=QartodFlags)
    flat_line: FlatLine = setting(factory=FlatLine)
    out_of_range: OutOfRange = setting(factory=OutOfRange)
    spectral_saturation: SpectralSaturation = setting(factory=SpectralSaturation)
    white_reference_drift: ReferenceDrift = setting(factory=ReferenceDrift)
    dark_reference_drift: ReferenceDrift = setting(factory=lambda: ReferenceDrift(quantity="spectrum_dark",
                                                                                  max_change=0.25))
    calibration_domain: CalibrationDomain = setting(factory=CalibrationDomain)
    spool_backlog: SpoolBacklog = setting(factory=SpoolBacklog)
    disk_low: DiskLow = setting(factory=DiskLow)
    clock: Clock = setting(factory=Clock)
    neighbours: Neighbours = setting(factory=Neighbours)
    years_to_detect: YearsToDetect = setting(factory=YearsToDetect)
    gateway_event: GatewayEvent = setting(factory=GatewayEvent)


# -- delivery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertmanagerSettings:
    url: str = setting("", check=lambda v: v == "" or v.startswith(("http://", "https://")),
                       expect="an http(s):// URL of Alertmanager (its v2 API is under /api/v2)")
    resend_s: float = setting(60.0, check=lambda v: 1 <= v <= 3600, expect="1 to 3600 seconds",
                              doc="firing alerts are sent again this often (Alertmanager forgets them otherwise)")
    timeout_s: float = setting(10.0, check=lambda v: 0.1 <= v <= 120, expect="0.1 to 120 seconds")
    ca_file: str = setting("", doc="CA bundle for an https URL")


@dataclass(frozen=True)
class EmailSettings:
    host: str = setting("", doc="SMTP server; empty: no e-mail")
    port: int = setting(587, check=lambda v: 0 < v < 65536, expect="a TCP port 1-65535")
    security: Literal["starttls", "tls", "none"] = setting(
        "starttls", doc="'starttls' (port 587, required), 'tls' (implicit, port 465), 'none' (a local relay)")
    username: str = setting("")
    password_file: str = setting("", doc="file holding the SMTP password (never in this file)")
    sender: str = setting("humus-alerts@localhost", check=lambda v: "@" in v, expect="an e-mail address")
    to: tuple[str, ...] = setting((), check=lambda v: all("@" in a for a in v), expect="a list of e-mail addresses")
    ca_file: str = setting("", doc="CA bundle to verify the server; empty: system CAs")
    timeout_s: float = setting(20.0, check=lambda v: 0.1 <= v <= 300, expect="0.1 to 300 seconds")


@dataclass(frozen=True)
class NotifySettings:
    group_by: tuple[str, ...] = setting(("site",), check=lambda v: all(_LABEL.match(x) for x in v),
                                        expect="a list of label names (site, gateway, probe, rule, severity)")
    group_wait_s: float = setting(30.0, check=_nonneg, expect="seconds >= 0",
                                  doc="a new group waits this long to gather its first alerts")
    group_interval_s: float = setting(300.0, check=_nonneg, expect="seconds >= 0",
                                      doc="changes to a notified group wait this long after its last notification")
    repeat_interval_s: float = setting(14400.0, check=_pos, expect="seconds > 0",
                                       doc="an unchanged firing group is sent again after this long")
    send_resolved: bool = setting(True)
    log: bool = setting(True, doc="write each notification to the service log")
    mqtt: bool = setting(True, doc="publish each notification on mqtt_topic")
    mqtt_topic: str = setting("humus/v1/{site}/alerts", check=lambda v: "#" not in v and "+" not in v,
                              expect="a topic without wildcards ({site} is replaced)")
    webhook_urls: tuple[str, ...] = setting((), check=lambda v: all(u.startswith(("http://", "https://")) for u in v),
                                            expect="a list of http(s):// URLs")
    webhook_attempts: int = setting(5, check=lambda v: 1 <= v <= 20, expect="1 to 20 attempts")
    webhook_timeout_s: float = setting(10.0, check=lambda v: 0.1 <= v <= 120, expect="0.1 to 120 seconds")
    apprise_urls: tuple[str, ...] = setting((), doc="Apprise URLs (tgram://, matrix://, ntfy://...); needs "
                                                    "pip install 'humus[alerts]'")
    email: EmailSettings = setting(factory=EmailSettings)


@dataclass(frozen=True)
class AlertsSettings:
    store: str = setting("", doc="the archive to read at start and to keep alert history in; empty: [ingest] store")
    state_file: str = setting("", doc="SQLite file for alert state; empty: the sqlite:PATH archive itself")
    client_id: str = setting("humus-alerts-1", check=lambda v: bool(_CLIENT_ID.match(v)),
                             expect="a stable client id (letters, digits, '_', '.', '-')")
    obs_subscription: Literal["plain", "shared"] = setting(
        "plain", doc="'plain': this service gets every batch; 'shared': $share/<group>/... between alerts workers")
    group: str = setting("humus-alerts", check=lambda v: bool(_GROUP.match(v)),
                         expect="a shared-subscription group name without '/', '+' or '#' (never the ingest group)")
    eval_interval_s: float = setting(60.0, check=lambda v: 0.1 <= v <= 3600, expect="0.1 to 3600 seconds")
    history_days: float = setting(400.0, check=_pos, expect="days > 0",
                                  doc="alert history and gateway status history are kept this long")
    resolved_retention_s: float = setting(900.0, check=_nonneg, expect="seconds >= 0",
                                          doc="a resolved alert is still sent (as resolved) this long")
    alertmanager: AlertmanagerSettings = setting(factory=AlertmanagerSettings)
    notify: NotifySettings = setting(factory=NotifySettings)
    rules: RulesSettings = setting(factory=RulesSettings)


@dataclass(frozen=True)
class AlertsConfig:
    """What `humus alerts` needs from observatory.toml: its own table, the broker, the archive."""

    alerts: AlertsSettings
    mqtt: MqttSettings
    file: str

    @property
    def store(self) -> str:
        return self.alerts.store

    @property
    def state_file(self) -> Path:
        s = self.alerts.state_file
        if s:
            return Path(s).expanduser()
        return Path(sqlite_path(self.alerts.store))  # checked in load_alerts_config


def sqlite_path(url: str) -> str | None:
    if not url.lower().startswith("sqlite:"):
        return None
    p = url.split(":", 1)[1]
    return p[2:] if p.startswith("//") else p


def load_alerts_config(path: str | Path) -> AlertsConfig:
    """Parse ``[alerts]`` (and ``[mqtt]``, ``[ingest] store``) from observatory.toml; ConfigError on a bad value."""
    data = read_toml(path)
    raw = data.get("alerts", {})
    alerts = load_section(AlertsSettings, raw, file=path, key="alerts")
    mqtt = load_section(MqttSettings, data.get("mqtt", {}), file=path, key="mqtt")
    if not alerts.store:
        ingest = data.get("ingest")
        store = ingest.get("store") if isinstance(ingest, dict) else None
        if not isinstance(store, str) or not store:
            raise ConfigError(path, "alerts.store", "a store URL (or an [ingest] table with store = ...)")
        alerts = _replace(alerts, store=store)
    if not alerts.state_file and not sqlite_path(alerts.store):
        raise ConfigError(path, "alerts.state_file", "a SQLite file for alert state (required with a non-sqlite store)")
    if sqlite_path(alerts.store) == "":
        raise ConfigError(path, "alerts.store", "sqlite:PATH with a file path", alerts.store)
    if alerts.obs_subscription == "shared" and isinstance(data.get("ingest"), dict) \
            and data["ingest"].get("group", "humus-ingest") == alerts.group:
        raise ConfigError(path, "alerts.group", "a group of its own, not the ingest group", alerts.group)
    if alerts.resolved_retention_s < alerts.notify.group_interval_s and not alerts.alertmanager.url:
        raise ConfigError(path, "alerts.resolved_retention_s",
                          f"at least alerts.notify.group_interval_s ({alerts.notify.group_interval_s:g}), or a "
                          "resolved alert may be forgotten before it is announced", alerts.resolved_retention_s)
    check_rules(alerts.rules, path, "alerts.rules")
    mqtt.check_files(path)
    return AlertsConfig(alerts, mqtt, str(path))


def check_rules(rules: RulesSettings, path: str | Path, key: str) -> None:
    """Rules that span keys: QARTOD's own constraints, checked before a rule ever runs."""
    for q, spec in rules.out_of_range.quantities.items():
        if spec.suspect_span is not None and not (spec.fail_span[0] <= spec.suspect_span[0]
                                                  and spec.suspect_span[1] <= spec.fail_span[1]):
            raise ConfigError(path, f"{key}.out_of_range.quantities.{q}.suspect_span",
                              "a span within fail_span (QARTOD gross range)", list(spec.suspect_span))
    for q, fl in rules.flat_line.quantities.items():
        if fl.suspect_threshold_s > fl.fail_threshold_s:
            raise ConfigError(path, f"{key}.flat_line.quantities.{q}.suspect_threshold_s",
                              f"at most fail_threshold_s ({fl.fail_threshold_s:g})", fl.suspect_threshold_s)


def load_rules_file(path: str | Path) -> RulesSettings:
    """Rules for `humus alerts replay --rules FILE`: an observatory.toml, or a file of ``[rules.<rule>]`` tables."""
    data = read_toml(path)
    if isinstance(data.get("alerts"), dict):
        table, key = data["alerts"].get("rules", {}), "alerts.rules"
    else:
        table, key = data.get("rules", {}), "rules"
    rules = load_section(RulesSettings, table, file=path, key=key)
    check_rules(rules, path, key)
    return rules


def _replace(obj: Any, **changes: Any) -> Any:
    import dataclasses
    return dataclasses.replace(obj, **changes)
