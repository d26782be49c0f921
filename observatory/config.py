"""Ingest configuration (``humus ingest --config observatory.toml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from humus.config import load_section, read_toml, setting
from humus.mqtt import MqttSettings


@dataclass(frozen=True)
class IngestSettings:
    store: str = setting(check=lambda v: v.split(":", 1)[0] in ("sqlite", "influxdb", "influxdb2", "http", "https"),
                         expect="a store URL (sqlite:PATH, or an InfluxDB URL; see docs/stores.md)")
    group: str = setting("humus-ingest", check=bool, expect="a shared-subscription group name")
    client_id: str = setting("humus-ingest-1", check=bool, expect="a stable client id per worker")
    gateways: tuple[str, ...] | None = setting(None, doc="registry of known gateways as 'site/gateway'; none: accept all")
    max_future_s: float = setting(600.0, check=lambda v: v >= 0, expect="seconds >= 0")


@dataclass(frozen=True)
class ObservatoryConfig:
    ingest: IngestSettings
    mqtt: MqttSettings = setting(factory=MqttSettings)


def load_observatory_config(path: str | Path) -> ObservatoryConfig:
    return load_section(ObservatoryConfig, read_toml(path), file=path)
