"""Ingest configuration (``humus ingest --config observatory.toml``).

Documented with an example in docs/ingest.md. Parsed once into frozen
dataclasses; a bad value is one `ConfigError` line naming file, key and
what was expected (exit status 2).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

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
    return len(parts) == 2 and all(ID_PATTERN.fullmatch(p) for p in parts)


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
    registry_file: str = setting("", doc="gateway registry with public keys (humus gateway add); only those "
                                         "gateways are accepted, and those with a key must sign")
    max_seq_jump: int = setting(10_000_000, check=lambda v: 1 <= v <= 2**53, expect="1 to 2**53",
                                doc="a seq this far past the gateway's highest stored one is rejected")
    max_future_s: float = setting(600.0, check=lambda v: v >= 0, expect="seconds >= 0")
    max_message_bytes: int = setting(MAX_PAYLOAD_BYTES, check=lambda v: 1024 <= v <= MAX_PAYLOAD_BYTES,
                                     expect=f"1024 to {MAX_PAYLOAD_BYTES} bytes")
    batch_messages: int = setting(200, check=lambda v: 1 <= v <= 10_000, expect="1 to 10000 messages",
                                  doc="most messages per store write; keep <= the broker's max_inflight_messages")
    batch_observations: int = setting(20_000, check=lambda v: 1 <= v <= 10_000_000, expect="1 to 10000000",
                                      doc="most observations per store write (a live message waits for the "
                                          "write in hand)")
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
    receipts: bool = setting(True, doc="publish end-to-end receipts (stored batch seqs) to each gateway's "
                                       "humus/v1/<site>/<gateway>/receipt topic")
    resend_after_s: float = setting(30.0, check=lambda v: 1 <= v <= 86400 * 30, expect="1 to 2592000 seconds",
                                    doc="ask a gateway to re-send a hole in its batch seqs open this long")
    share_ledger: bool = setting(True, doc="tell the group's other workers the batch seqs stored, and merge what "
                                           "they tell (observatory.ledgershare): workers on several machines, each "
                                           "with its own state file, then judge gaps on every seq stored")
    state_file: str = setting("", doc="SQLite file for dead letters and batch seqs (observatory.deadletter); "
                                         "empty: PATH.ingest.sqlite beside a sqlite:PATH store")


@dataclass(frozen=True)
class ObservatoryConfig:
    ingest: IngestSettings
    mqtt: MqttSettings = setting(factory=MqttSettings)
    alerts: dict[str, Any] | None = setting(None, doc="[alerts]: read by `humus alerts` "
                                                      "(observatory/alerts/config.py)")

    @property
    def client_id(self) -> str:
        """The worker's stable client id: ``[mqtt] client_id`` if set, else ``[ingest] client_id``."""
        return self.mqtt.client_id or self.ingest.client_id


def load_observatory_config(path: str | Path) -> ObservatoryConfig:
    cfg = load_section(ObservatoryConfig, read_toml(path), file=path)
    check_observatory_config(cfg, path)
    return cfg


def check_observatory_config(cfg: ObservatoryConfig, path: str | Path = "(config)") -> None:
    """Rules that span keys, and everything `humus ingest` builds short of connecting; raises `ConfigError`.

    The one validation of an observatory file (`humus check-config` and
    `humus ingest` both come here): the MQTT files are read as the client
    will read them, the store URL is parsed into what the store would use
    (an InfluxDB URL with credentials in it, a bad port or parameter is
    refused), and SQLite files must be regular files in existing directories.
    """
    ing = cfg.ingest
    if ing.retry_max_s < ing.retry_min_s:
        raise ConfigError(path, "ingest.retry_max_s", f"at least ingest.retry_min_s ({ing.retry_min_s:g})",
                          ing.retry_max_s)
    if cfg.mqtt.client_id and not _CLIENT_ID.fullmatch(cfg.mqtt.client_id):
        raise ConfigError(path, "mqtt.client_id", "letters, digits, '_', '.', '-' (it is part of the status topic)",
                          cfg.mqtt.client_id)
    if ing.store.startswith("sqlite:") and not ing.store[len("sqlite:"):]:
        raise ConfigError(path, "ingest.store", "sqlite:PATH with a file path", ing.store)
    if state_path(cfg) is None:
        raise ConfigError(path, "ingest.state_file",
                          "a SQLite file for dead letters and batch seqs (required with a non-sqlite store)")
    cfg.mqtt.check_files(path)
    if ing.registry_file:
        from humus.signing import load_registry

        try:
            load_registry(ing.registry_file)
        except ValueError as e:
            raise ConfigError(path, "ingest.registry_file", "a gateway registry written by 'humus gateway add'",
                              found=str(e)) from None
    _check_store(cfg, path)


def _check_store(cfg: ObservatoryConfig, path: str | Path) -> None:
    from humus.file_checks import FileProblem, check_private, stat_regular
    from observatory.store import StoreError
    from observatory.stores import influx_target

    url = cfg.ingest.store
    if url.split(":", 1)[0].lower() == "sqlite":
        p = url[len("sqlite:"):]
        _check_sqlite_file(path, "ingest.store", Path(p[2:] if p.startswith("//") else p).expanduser())
    else:
        creds = [c for c in (_url_parameter(url, "credentials"), os.environ.get("HUMUS_INFLUX_CREDENTIALS")) if c]
        try:
            if creds:
                check_private(Path(creds[0]).expanduser(), stat_regular(Path(creds[0]).expanduser()))
            influx_target(url)     # what the store would be built from: parsed, no connection
        except FileProblem as e:
            raise ConfigError(path, "ingest.store", "a credentials file (?credentials=PATH) private to its owner",
                              found=f"{e}") from None
        except StoreError as e:
            raise ConfigError(path, "ingest.store", "an InfluxDB URL as in docs/stores.md", found=str(e)) from None
    state = state_path(cfg)
    if state is not None:
        _check_sqlite_file(path, "ingest.state_file" if cfg.ingest.state_file else "ingest.store", state)


def _check_sqlite_file(path: str | Path, key: str, file: Path) -> None:
    """A SQLite file that may not exist yet, but whose directory does; never a FIFO, device or directory."""
    from humus.file_checks import FileProblem, stat_regular

    if not file.parent.is_dir():
        raise ConfigError(path, key, "a SQLite file in an existing directory", str(file),
                          found=f"no directory {file.parent}")
    if os.path.lexists(file):
        try:
            stat_regular(file)
        except FileProblem as e:
            raise ConfigError(path, key, "a SQLite file", str(file), found=e.found) from None


def _url_parameter(url: str, name: str) -> str | None:
    try:
        values = parse_qs(urlsplit(url).query).get(name)
    except ValueError:
        return None
    return values[-1] if values else None


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
