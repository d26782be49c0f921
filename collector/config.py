"""Gateway configuration (``humus collect --config gateway.toml``).

Documented, with a complete example, in docs/collector.md; the example file
deploy/gateway.example.toml is loaded by the tests. Every table is a frozen
dataclass validated by `humus.config.load_section`; cross-field rules
(unique probe ids, one serial setting per shared port, QC spans that nest,
known calibration models) are checked in `load_gateway_config` with the key
that is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from humus.config import ConfigError, load_section, read_toml, setting
from humus.mqtt import MqttSettings
from humus.records import ID_PATTERN, QUANTITY_PATTERN


def _id(v: str) -> bool:
    return bool(ID_PATTERN.fullmatch(v))


def _positive(v: float) -> bool:
    return v > 0 and math.isfinite(v)


ID_EXPECT = "an id of 1-64 characters a-z, 0-9 and '-'"


@dataclass(frozen=True)
class GatewaySettings:
    site: str = setting(check=_id, expect=ID_EXPECT, doc="site id, part of every topic")
    id: str = setting(check=_id, expect=ID_EXPECT, doc="gateway id, unique within the site")
    data_dir: str = setting("/var/lib/humus", check=bool, expect="a directory path", doc="spool and state")
    spool_quota_mb: float = setting(512.0, check=_positive, expect="a size in MB > 0",
                                    doc="spool size limit; when reached the oldest unsent observations are dropped")
    heartbeat_s: float = setting(60.0, check=lambda v: 1 <= v <= 3600, expect="1 to 3600 seconds",
                                 doc="how often the retained status message is refreshed")
    signing_key: str = setting("", doc="Ed25519 private key (PEM, 0600) made by 'humus gateway add': every "
                                       "batch is signed (docs/wire.md, Signed batches); empty: unsigned")
    sane_epoch: str = setting("2025-01-01", check=bool, expect="a date YYYY-MM-DD",
                              doc="a clock before this date is not synchronised (no RTC, no NTP yet)")
    clock_check: Literal["kernel", "epoch"] = setting(
        "kernel", doc="kernel: adjtimex STA_UNSYNC and sane_epoch; epoch: only sane_epoch (containers)")
    clock_step_s: float = setting(2.0, check=_positive, expect="seconds > 0",
                                  doc="wall clock moving this far from the monotonic clock is a clock step")


@dataclass(frozen=True)
class PublishSettings:
    max_batch_observations: int = setting(500, check=lambda v: 1 <= v <= 50_000, expect="1 to 50000",
                                          doc="observations per MQTT message at most")
    max_batch_bytes: int = setting(256 * 1024, check=lambda v: 1024 <= v <= 4 * 1024 * 1024,
                                   expect="1024 to 4194304 bytes", doc="encoded message size at most")
    max_inflight_messages: int = setting(20, check=lambda v: 1 <= v <= 1000, expect="1 to 1000",
                                         doc="QoS 1 messages published and not yet acknowledged")
    backlog_messages_per_s: float = setting(10.0, check=_positive, expect="messages per second > 0",
                                            doc="replay rate of the backlog after an outage (live data goes first)")
    reconnect_min_s: float = setting(1.0, check=_positive, expect="seconds > 0")
    reconnect_max_s: float = setting(120.0, check=_positive, expect="seconds > 0")
    confirm: Literal["receipt", "puback"] = setting(
        "receipt", doc="receipt: keep a batch until the centre says it is stored; puback: delete on the "
                       "broker's PUBACK (only for a centre that sends no receipts)")
    receipt_timeout_s: float = setting(60.0, check=lambda v: 1 <= v <= 86400, expect="1 to 86400 seconds",
                                       doc="re-send a batch the centre has not confirmed after this long")
    receipt_timeout_max_s: float = setting(900.0, check=lambda v: 1 <= v <= 86400, expect="1 to 86400 seconds",
                                           doc="the wait doubles per re-send of the same batch up to this")
    max_unconfirmed_batches: int = setting(1000, check=lambda v: 1 <= v <= 100_000, expect="1 to 100000",
                                           doc="batches sent and awaiting a receipt at most")


@dataclass(frozen=True)
class GrossRangeQc:
    """QARTOD gross range: FAIL outside `fail_span`, SUSPECT outside `suspect_span`."""

    fail_span: tuple[float, float] = setting(doc="[min, max] the sensor can report")
    suspect_span: tuple[float, float] | None = setting(None, doc="[min, max] plausible at this site")


@dataclass(frozen=True)
class SpikeQc:
    suspect_threshold: float | None = setting(None, check=lambda v: v is None or v >= 0, expect="a value >= 0")
    fail_threshold: float | None = setting(None, check=lambda v: v is None or v >= 0, expect="a value >= 0")
    method: Literal["average", "differential"] = setting("average")


@dataclass(frozen=True)
class RateOfChangeQc:
    threshold: float = setting(check=lambda v: v >= 0, expect="units per second >= 0", doc="SUSPECT above")
    fail_threshold: float | None = setting(None, check=lambda v: v is None or v >= 0, expect="units per second >= 0")


@dataclass(frozen=True)
class FlatLineQc:
    suspect_threshold_s: float = setting(check=lambda v: v >= 1, expect="seconds >= 1")
    fail_threshold_s: float = setting(check=lambda v: v >= 1, expect="seconds >= 1")
    tolerance: float = setting(0.0, check=lambda v: v >= 0, expect="a value >= 0")


@dataclass(frozen=True)
class QcSettings:
    """``[probes.qc.<quantity>]``: which QARTOD tests run on that quantity, with their parameters."""

    gross_range: GrossRangeQc | None = setting(None)
    spike: SpikeQc | None = setting(None)
    rate_of_change: RateOfChangeQc | None = setting(None)
    flat_line: FlatLineQc | None = setting(None)


CALIBRATION_MODELS = ("teros12_vwc", "teros12_permittivity", "topp_vwc", "polynomial_vwc", "ec25", "spectral")


@dataclass(frozen=True)
class CalibrationSettings:
    """``[probes.calibration.<quantity>]``: how the calibrated `quantity` is made from raw values."""

    model: str = setting(check=lambda v: v in CALIBRATION_MODELS,
                         expect="one of " + ", ".join(CALIBRATION_MODELS))
    input: str = setting("", doc="raw quantity fed to the model (spectral: empty, the spectrum)")
    temperature_input: str = setting("", doc="ec25: raw temperature quantity (°C)")
    media: Literal["mineral", "soilless"] = setting("mineral", doc="teros12_vwc: TEROS 12 equation")
    coefficients: tuple[float, ...] = setting((), doc="polynomial_vwc: c0, c1, ...")
    polynomial_input: Literal["raw", "permittivity", "reading"] = setting(
        "raw", doc="polynomial_vwc: what x is (TEROS RAW counts, permittivity, or another sensor's reading)")
    uncertainty: float = setting(0.02, check=lambda v: 0 <= v < 1, expect="m³/m³ in [0, 1)",
                                 doc="polynomial_vwc: standard uncertainty")
    path: str = setting("", doc="spectral: model file (.npz) made by 'humus calibrate fit'")
    kind: Literal["", "counts", "reflectance", "absorbance"] = setting("", doc="spectral: what the probe sends")


def _interval(v: float) -> bool:
    return 1 <= v <= 86400


@dataclass(frozen=True)
class ProbeSettings:
    id: str = setting(check=_id, expect=ID_EXPECT)
    driver: str = setting(check=bool, expect="a driver name (see 'humus sim --list')")
    port: str = setting(check=bool, expect="a serial port path, /dev/serial/by-id/... or usb:VID:PID[:SERIAL]")
    address: str = setting("", doc="bus address (SDI-12 0-9a-zA-Z, Modbus 1-247)")
    interval_s: float = setting(900.0, check=_interval, expect="1 to 86400 seconds")
    depth_cm: float | None = setting(None, check=lambda v: v is None or 0 <= v <= 1000, expect="0 to 1000 cm")
    options: dict[str, Any] = setting(factory=dict, doc="driver options")
    calibration: dict[str, CalibrationSettings] = setting(factory=dict, doc="calibration per calibrated quantity")
    qc: dict[str, QcSettings] = setting(factory=dict, doc="quality-check parameters per quantity")
    enabled: bool = setting(True, doc="false: keep the probe in the file but do not poll it")


@dataclass(frozen=True)
class GatewayConfig:
    gateway: GatewaySettings
    mqtt: MqttSettings = setting(factory=MqttSettings)
    publish: PublishSettings = setting(factory=PublishSettings)
    probes: tuple[ProbeSettings, ...] = setting((), doc="[[probes]] tables")
    path: str = setting("", doc="(set by the loader) the file this came from")

    @property
    def spool_path(self) -> Path:
        return Path(self.gateway.data_dir) / "spool.sqlite"

    def client_id(self) -> str:
        return self.mqtt.client_id or f"humus-{self.gateway.site}-{self.gateway.id}"


FLAT_LINE_MAX_POLLS = 1990
"""A flat-line window longer than this many polls would not fit the kept QC window (2000 points)."""
MAX_PROBES = 1000
"""Probes one gateway configuration may hold (a gateway has 1-50; an SDI-12 bus at most 62)."""


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Read, validate and return the gateway configuration; ConfigError names the key at fault.

    This is the one validation of a gateway file (`humus check-config`,
    `humus collect` and its reload all call it): after the keys and the
    rules between them, it builds every probe the daemon would build
    (`collector.daemon.build_probes`: drivers with their options and
    addresses, calibrations with their model files, QC windows) without
    opening a serial port or a network connection.
    """
    data = read_toml(path)
    if isinstance(data, dict) and "path" in data:
        raise ConfigError(path, "path", "no such key at the top level (it is set by the loader)")
    if isinstance(data, dict) and isinstance(data.get("probes"), list) and len(data["probes"]) > MAX_PROBES:
        raise ConfigError(path, "probes", f"at most {MAX_PROBES} [[probes]] tables", found=f"{len(data['probes'])}")
    cfg = load_section(GatewayConfig, data, file=path)
    cfg = GatewayConfig(gateway=cfg.gateway, mqtt=cfg.mqtt, publish=cfg.publish, probes=cfg.probes, path=str(path))
    _check_gateway(path, cfg)
    seen: set[str] = set()
    for i, p in enumerate(cfg.probes):
        key = f"probes[{i}]"
        if p.id in seen:
            raise ConfigError(path, f"{key}.id", "an id not used by another probe", p.id)
        seen.add(p.id)
        _check_probe(path, key, p)
    from collector.daemon import close_probes, build_probes   # the daemon's own builder (it imports this module)

    close_probes(build_probes(cfg))
    return cfg


def sane_epoch_ns(cfg: GatewayConfig) -> int:
    from datetime import datetime, timezone

    d = datetime.strptime(cfg.gateway.sane_epoch, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return int(d.timestamp()) * 10**9


def _check_signing_key(path: str | Path, key_file: str) -> None:
    """The signing key is a private Ed25519 key readable by the collector and by no one else."""
    from humus.file_checks import FileProblem, check_private
    from humus.signing import signer_from_file

    try:
        check_private(key_file)
        signer_from_file(key_file)
    except FileProblem as e:
        raise ConfigError(path, "gateway.signing_key", "the gateway's Ed25519 key file (0600)", found=str(e)) from None
    except (ValueError, TypeError, OSError) as e:
        raise ConfigError(path, "gateway.signing_key", "an Ed25519 private key in PEM made by 'humus gateway add'",
                          found=f"{key_file}: {str(e)[:150]}") from None


def _check_gateway(path: str | Path, cfg: GatewayConfig) -> None:
    try:
        sane_epoch_ns(cfg)
    except ValueError:
        raise ConfigError(path, "gateway.sane_epoch", "a date YYYY-MM-DD", cfg.gateway.sane_epoch) from None
    pub = cfg.publish
    if pub.reconnect_max_s < pub.reconnect_min_s:
        raise ConfigError(path, "publish.reconnect_max_s", "a value >= publish.reconnect_min_s", pub.reconnect_max_s)
    if pub.receipt_timeout_max_s < pub.receipt_timeout_s:
        raise ConfigError(path, "publish.receipt_timeout_max_s", "a value >= publish.receipt_timeout_s",
                          pub.receipt_timeout_max_s)
    if cfg.gateway.signing_key:
        _check_signing_key(path, cfg.gateway.signing_key)
    data_dir = Path(cfg.gateway.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(path, "gateway.data_dir", "a directory (the spool lives there)", cfg.gateway.data_dir,
                          found="a file")
    cfg.mqtt.check_files(path)


def _check_probe(path: str | Path, key: str, p: ProbeSettings) -> None:
    for q, qc in p.qc.items():
        where = f"{key}.qc.{q}"
        if not QUANTITY_PATTERN.fullmatch(q):
            raise ConfigError(path, where, "a quantity name like 'soil_temp'", q)
        gr = qc.gross_range
        if gr is not None:
            for name, span in (("fail_span", gr.fail_span), ("suspect_span", gr.suspect_span)):
                if span is not None and not span[0] < span[1]:
                    raise ConfigError(path, f"{where}.gross_range.{name}", "[min, max] with min < max", list(span))
        if gr is not None and gr.suspect_span is not None:
            flo, fhi = gr.fail_span
            slo, shi = gr.suspect_span
            if slo < flo or shi > fhi:
                raise ConfigError(path, f"{where}.gross_range.suspect_span",
                                  f"a span inside fail_span [{flo:g}, {fhi:g}]", list(gr.suspect_span))
        sp = qc.spike
        if sp is not None:
            if sp.suspect_threshold is None and sp.fail_threshold is None:
                raise ConfigError(path, f"{where}.spike", "suspect_threshold, fail_threshold or both")
            if None not in (sp.suspect_threshold, sp.fail_threshold) and sp.fail_threshold < sp.suspect_threshold:
                raise ConfigError(path, f"{where}.spike.fail_threshold", "a value >= suspect_threshold",
                                  sp.fail_threshold)
        rc = qc.rate_of_change
        if rc is not None and rc.fail_threshold is not None and rc.fail_threshold < rc.threshold:
            raise ConfigError(path, f"{where}.rate_of_change.fail_threshold", "a value >= threshold",
                              rc.fail_threshold)
        fl = qc.flat_line
        if fl is not None and fl.fail_threshold_s < fl.suspect_threshold_s:
            raise ConfigError(path, f"{where}.flat_line.fail_threshold_s", "seconds >= suspect_threshold_s",
                              fl.fail_threshold_s)
        if fl is not None:
            # The window spans threshold / interval polls (collector.qartod.flat_line): fewer than 2
            # flags every value, more than the kept window (collector.quality.MAX_WINDOW) never flags.
            lo, hi = 2 * p.interval_s, FLAT_LINE_MAX_POLLS * p.interval_s
            for name in ("suspect_threshold_s", "fail_threshold_s"):
                if not lo <= getattr(fl, name) <= hi:
                    raise ConfigError(path, f"{where}.flat_line.{name}", f"{lo:g} to {hi:g} seconds (2 to "
                                      f"{FLAT_LINE_MAX_POLLS} polls of interval_s {p.interval_s:g})", getattr(fl, name))
    for q, cal in p.calibration.items():
        where = f"{key}.calibration.{q}"
        if not QUANTITY_PATTERN.fullmatch(q):
            raise ConfigError(path, where, "a quantity name like 'vwc'", q)
        if cal.model == "spectral":
            if not cal.path:
                raise ConfigError(path, f"{where}.path", "the model file of a spectral calibration")
        elif not cal.input:
            raise ConfigError(path, f"{where}.input", f"the raw quantity the {cal.model} model reads")
        if cal.model == "ec25" and not cal.temperature_input:
            raise ConfigError(path, f"{where}.temperature_input", "the raw temperature quantity for ec25")
        if cal.model == "polynomial_vwc" and not 1 <= len(cal.coefficients) <= 6:
            raise ConfigError(path, f"{where}.coefficients", "1 to 6 coefficients, c0 first", list(cal.coefficients))
