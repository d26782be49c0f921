"""MQTT connection settings shared by the collector and the ingest side.

Parsed from the ``[mqtt]`` table of either daemon's configuration; turned
into a configured paho-mqtt 2.x client by `make_client`, which
`connect_persistent` connects to its persistent session. `check_files`
reads every file the settings name the way the client will (password
file, CA bundle, certificate and key through Python's ssl module), so a
configuration that passes it gives a client that can be built.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from humus.config import ConfigError, setting
from humus.file_checks import FileProblem, check_private, read_regular, stat_regular

MAX_PASSWORD_FILE_BYTES = 4096


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
        """The first line of `password_file` (None without one); FileProblem if it cannot be read."""
        if not self.password_file:
            return None
        raw = read_regular(self.password_file, MAX_PASSWORD_FILE_BYTES)
        try:
            lines = raw.decode("utf-8").strip().splitlines()
        except UnicodeDecodeError:
            raise FileProblem(self.password_file, "is not UTF-8 text") from None
        return lines[0].strip() if lines else ""

    def check_files(self, file: str | Path) -> None:
        """ConfigError (naming ``mqtt.<key>`` in `file`) unless every file named here is usable and private."""
        def bad(key: str, expected: str, e: FileProblem | str) -> ConfigError:
            return ConfigError(file, f"mqtt.{key}", expected, found=e.found if isinstance(e, FileProblem) else e)

        if self.password_file:
            if not self.username:
                raise ConfigError(file, "mqtt.username", "a user name to go with mqtt.password_file")
            try:
                check_private(self.password_file)
                password = self.password()
            except FileProblem as e:
                raise bad("password_file", "a file holding the password, private to its owner (and group)", e) from None
            if not password:
                raise bad("password_file", "the password on the first line", "an empty file")
        names = [k for k in ("ca_file", "cert_file", "key_file") if getattr(self, k)]
        if names and not self.tls:
            raise ConfigError(file, "mqtt.tls", f"true when mqtt.{names[0]} is set (it is only used with TLS)",
                              self.tls)
        if self.key_file and not self.cert_file:
            raise ConfigError(file, "mqtt.cert_file", "the client certificate that goes with mqtt.key_file")
        for key in names:
            try:
                st = stat_regular(getattr(self, key))
                if key == "key_file" or (key == "cert_file" and not self.key_file):
                    check_private(getattr(self, key), st)   # a certificate file without key_file holds the key
                read_regular(getattr(self, key), 1 << 20)
            except FileProblem as e:
                private = ", private to its owner (and group)" if key == "key_file" else ""
                raise bad(key, "a readable PEM file" + private, e) from None
        if not (self.ca_file or self.cert_file):
            return
        # A bare context: loading the system's CA store (about 50 ms and some memory) checks nothing here.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.ca_file:
            try:
                ctx.load_verify_locations(cafile=self.ca_file)
            except (ssl.SSLError, OSError, ValueError) as e:
                raise bad("ca_file", "PEM CA certificates", f"none that OpenSSL can load ({_ssl_reason(e)})") from None
        if self.cert_file:
            try:
                # A passphrase callback that gives none: an encrypted key fails here instead of prompting.
                ctx.load_cert_chain(self.cert_file, self.key_file or None, password=lambda: b"")
            except (ssl.SSLError, OSError, ValueError) as e:
                raise bad("cert_file", "a PEM certificate and its unencrypted private key (mqtt.key_file)",
                          f"a pair OpenSSL cannot load ({_ssl_reason(e)})") from None


def _ssl_reason(e: Exception) -> str:
    return str(getattr(e, "reason", None) or getattr(e, "strerror", None) or e)[:120]


def make_client(settings: MqttSettings, client_id: str):
    """A paho client with protocol, credentials and TLS set; not connected.

    The files are checked again (they may have changed since the configuration
    was loaded): ConfigError, never an ssl or OS traceback.
    """
    import paho.mqtt.client as mqtt

    settings.check_files("[mqtt] settings")

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


def connect_persistent(client, settings: MqttSettings, *, reconnect_max_s: int) -> None:
    """Have paho's network loop connect `client` to resume its persistent session, reconnecting with back-off.

    Clean start off on every connect (MQTT 5, with `session_expiry_s`; 3.1.1
    has clean session off from `make_client`): the broker keeps the session
    under our client id, with the messages it assigned to us while we were
    away. Nothing happens until the caller starts the loop (``loop_start``).
    """
    client.reconnect_delay_set(1, reconnect_max_s)
    if settings.protocol == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = settings.session_expiry_s
        client.connect_async(settings.host, settings.port, settings.keepalive_s, clean_start=False,
                             properties=props)
    else:
        client.connect_async(settings.host, settings.port, settings.keepalive_s)
