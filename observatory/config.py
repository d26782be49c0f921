"""Ingest configuration (``humus ingest --config observatory.toml``).

Documented with an example in docs/ingest.md. Parsed once into frozen
dataclasses; a bad value is one `ConfigError` line naming file, key and
what was expected (exit status 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from humus.config import ConfigError, load_section, read_toml, setting
from humus.mqtt import MqttSettings
from humus.records import ID_PATTERN
from humus.wire import MAX_PAYLOAD_BYTES
from observatory.stores import INFLUX_SCHEMES

STORE_SCHEMES = ("sqlite", *INFLUX_SCHEMES)

# MQTT 5, section 4.8.2: a share name must not contain "/", "+" or "#".
_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Client ids: the spec guarantees 1-23 of [0-9a-zA-Z]; brokers accept more. We
# keep them topic-safe because the status topic contains the client id.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def _gateway_ref(v: str) -> bool:
    parts = v.split("/")
    return len(parts) == 2 and all(ID_PATTERN.match(p) for p in parts)


@dataclass(frozen=True)
class IngestSettings:
    store: str = setting(check=lambda v: v.split(":", 1)[0].lower() in STORE_SCHEMES,
                         expect="a store URL (sqlite:PATH, or an InfluxDB URL; see docs/stores.md)")
    group: str = setting("humus-ingest", check=lambda v: bool(_GROUP.match(v)),
                         expect="a shared-subscription group name without '/', '+' or '#'")
    client_id: str = setting("humus-ingest-1", check=lambda v: bool(_CLIENT_ID.match(v)),
                             expect="a stable client id per worker (letters, digits, '_', '.', '-')")
    subscription: Literal["shared", "plain"] = setting(
        "shared", doc="'shared' ($share/<group>/...) to split load between workers; 'plain' for brokers "
                      "without shared subscriptions (the demo's amqtt)")
    gateways: tuple[str, ...] | None = setting(
        None, check=lambda v: v is None or all(_gateway_ref(g) for g in v),
        expect="a list of 'site/gateway' ids", doc="registry of known gateways; none: accept all")
    max_future_s: float = setting(600.0, check=lambda v: v >= 0, expect="seconds >= 0")
    max_message_bytes: int = setting(MAX_PAYLOAD_BYTES, check=lambda v: 1024 <= v <= MAX_PAYLOAD_BYTES,
                                     expect=f"1024 to {MAX_PAYLOAD_BYTES} bytes")
    batch_messages: int = setting(200, check=lambda v: 1 <= v <= 10_000, expect="1 to 10000 messages",
                                  doc="most messages per store write; keep <= the broker's max_inflight_messages")
    batch_latency_s: float = setting(0.2, check=lambda v: 0 <= v <= 60, expect="0 to 60 seconds",
                                     doc="longest a message waits for its batch to fill")
    retry_min_s: float = setting(0.5, check=lambda v: 0.01 <= v <= 60, expect="0.01 to 60 seconds")
    retry_max_s: float = setting(30.0, check=lambda v: 0.1 <= v <= 3600, expect="0.1 to 3600 seconds")
    dead_letter_max_bytes: int = setting(65536, check=lambda v: 0 <= v <= MAX_PAYLOAD_BYTES,
                                         expect=f"0 to {MAX_PAYLOAD_BYTES} bytes",
                                         doc="raw bytes kept of a rejected message (its full length is kept too)")
    gap_grace_s: float = setting(300.0, check=lambda v: 0 <= v <= 86400 * 30, expect="0 to 2592000 seconds",
                                 doc="how long a hole in a gateway's seqs may stay open before it is a gap")
    metrics_interval_s: float = setting(60.0, check=lambda v: 0.1 <= v <= 3600, expect="0.1 to 3600 seconds")
    state_file: str = setting("", doc="SQLite file for dead letters and batch seqs (observatory.deadletter); "
                                         "empty: PATH.ingest.sqlite beside a sqlite:PATH store")


@dataclass(frozen=True)
class ObservatoryConfig:
    ingest: IngestSettings
    mqtt: MqttSettings = setting(factory=MqttSettings)

    @property
    def client_id(self) -> str:
        """The worker's stable client id: ``[mqtt] client_id`` if set, else ``[ingest] client_id``."""
        return self.mqtt.client_id or self.ingest.client_id


def load_observatory_config(path: str | Path) -> ObservatoryConfig:
    cfg = load_section(ObservatoryConfig, read_toml(path), file=path)
    check_observatory_config(cfg, path)
    return cfg


def check_observatory_config(cfg: ObservatoryConfig, path: str | Path = "(config)") -> None:
    """Rules that span keys; raises `ConfigError`."""
    ing = cfg.ingest
    if ing.retry_max_s < ing.retry_min_s:
        raise ConfigError(path, "ingest.retry_max_s", f"at least ingest.retry_min_s ({ing.retry_min_s:g})",
                          ing.retry_max_s)
    if cfg.mqtt.client_id and not _CLIENT_ID.match(cfg.mqtt.client_id):
        raise ConfigError(path, "mqtt.client_id", "letters, digits, '_', '.', '-' (it is part of the status topic)",
                          cfg.mqtt.client_id)
    if ing.store.startswith("sqlite:") and not ing.store[len("sqlite:"):]:
        raise ConfigError(path, "ingest.store", "sqlite:PATH with a file path", ing.store)
    if state_path(cfg) is None:
        raise ConfigError(path, "ingest.state_file",
                          "a SQLite file for dead letters and batch seqs (required with a non-sqlite store)")


def state_path(cfg: ObservatoryConfig) -> Path | None:
    """The ingest state file: ``[ingest] state_file``, else ``PATH.ingest.sqlite`` beside a sqlite:PATH store."""
    if cfg.ingest.state_file:
        return Path(cfg.ingest.state_file).expanduser()
    url = cfg.ingest.store
    if url.startswith("sqlite:"):
        p = url[len("sqlite:"):]
        if p.startswith("//"):
            p = p[2:]
        return Path(p + ".ingest.sqlite").expanduser() if p else None
    return None
