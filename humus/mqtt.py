"""MQTT connection settings shared by the collector and the ingest side.

Parsed from the ``[mqtt]`` table of either daemon's configuration; turned
into a configured paho-mqtt 2.x client by `make_client`.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from humus.config import setting


def _port(v: int) -> bool:
    return 0 < v < 65536


@dataclass(frozen=True)
class MqttSettings:
    host: str = setting("localhost", check=bool, expect="a host name", doc="broker host")
    port: int = setting(1883, check=_port, expect="a TCP port 1-65535", doc="1883, or 8883 with TLS")
    protocol: Literal["3.1.1", "5"] = setting("5", doc="MQTT protocol version")
    client_id: str = setting("", doc="stable client id; empty: derived from site and gateway")
    username: str = setting("", doc="user name, if the broker wants one")
    password_file: str = setting("", doc="file holding the password (never in this file)")
    tls: bool = setting(False, doc="connect with TLS")
    ca_file: str = setting("", doc="CA certificate (PEM) to verify the broker; empty: system CAs")
    cert_file: str = setting("", doc="client certificate (PEM) for mutual TLS")
    key_file: str = setting("", doc="client private key (PEM) for mutual TLS")
    keepalive_s: int = setting(60, check=lambda v: 5 <= v <= 3600, expect="5 to 3600 seconds")
    session_expiry_s: int = setting(7 * 86400, check=lambda v: v >= 0,
                                    expect="seconds >= 0", doc="how long the broker keeps our session (MQTT 5)")

    def password(self) -> str | None:
        if not self.password_file:
            return None
        return Path(self.password_file).read_text().strip()


def make_client(settings: MqttSettings, client_id: str):
    """A paho client with protocol, credentials and TLS set; not connected."""
    import paho.mqtt.client as mqtt

    proto = mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311
    kwargs = {}
    if proto == mqtt.MQTTv311:
        kwargs["clean_session"] = False
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kwargs)
    if settings.username:
        client.username_pw_set(settings.username, settings.password())
    if settings.tls:
        client.tls_set(
            ca_certs=settings.ca_file or None,
            certfile=settings.cert_file or None,
            keyfile=settings.key_file or None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
    return client
