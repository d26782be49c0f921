"""Gateway configuration (``humus collect --config gateway.toml``).

Documented with an example in docs/configuration.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from humus.config import ConfigError, load_section, read_toml, setting
from humus.mqtt import MqttSettings
from humus.records import ID_PATTERN


def _id(v: str) -> bool:
    return bool(ID_PATTERN.match(v))


ID_EXPECT = "an id of 1-64 characters a-z, 0-9 and '-'"


@dataclass(frozen=True)
class GatewaySettings:
    site: str = setting(check=_id, expect=ID_EXPECT, doc="site id, part of every topic")
    id: str = setting(check=_id, expect=ID_EXPECT, doc="gateway id, unique within the site")
    data_dir: str = setting("/var/lib/humus", check=bool, expect="a directory path", doc="spool and state")
    spool_quota_mb: float = setting(512.0, check=lambda v: v > 0, expect="a size in MB > 0")


@dataclass(frozen=True)
class ProbeSettings:
    id: str = setting(check=_id, expect=ID_EXPECT)
    driver: str = setting(check=bool, expect="a driver name (see 'humus sim --list')")
    port: str = setting(check=bool, expect="a serial port path, /dev/serial/by-id/... or usb:VID:PID[:SERIAL]")
    address: str = setting("", doc="bus address (SDI-12 0-9a-zA-Z, Modbus 1-247)")
    interval_s: float = setting(900.0, check=lambda v: 1 <= v <= 86400, expect="1 to 86400 seconds")
    depth_cm: float | None = setting(None, check=lambda v: v is None or 0 <= v <= 1000, expect="0 to 1000 cm")
    options: dict[str, Any] = setting(factory=dict, doc="driver options")
    calibration: dict[str, Any] = setting(factory=dict, doc="calibration per quantity")
    qc: dict[str, Any] = setting(factory=dict, doc="quality-check parameters per quantity")


@dataclass(frozen=True)
class GatewayConfig:
    gateway: GatewaySettings
    mqtt: MqttSettings = setting(factory=MqttSettings)
    probes: tuple[ProbeSettings, ...] = setting((), doc="[[probes]] tables")


def load_gateway_config(path: str | Path) -> GatewayConfig:
    data = read_toml(path)
    cfg = load_section(GatewayConfig, data, file=path)
    seen: set[str] = set()
    for i, p in enumerate(cfg.probes):
        if p.id in seen:
            raise ConfigError(path, f"probes[{i}].id", "an id not used by another probe", p.id)
        seen.add(p.id)
    return cfg
