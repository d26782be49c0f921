"""Helpers for deploy tests: the SHIPPED Mosquitto configuration on loopback, MQTT clients, the CLI.

The broker fixture runs `humus gateway init/add/service` (the real commands)
into a throw-away broker directory and starts Mosquitto with
deploy/mosquitto/humus.conf, changed only where a test must: its paths, its
ports (free ones) and the TLS listeners bound to 127.0.0.1.
"""

from __future__ import annotations

import os
import queue
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import servers

REPO = Path(__file__).resolve().parents[2]
SHIPPED_MOSQUITTO = REPO / "deploy" / "mosquitto" / "humus.conf"


def humus(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "humus.cli", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"humus {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r


def _need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not path:
        if os.environ.get("CI"):
            pytest.fail(f"{binary} is not installed; CI must run the deploy tests", pytrace=False)
        pytest.skip(f"{binary} is not installed (make test installs it)")
    return path


def shipped_mosquitto_conf(broker_dir: Path, ports: dict[str, int], data_dir: Path) -> str:
    """deploy/mosquitto/humus.conf for a test: every substitution must hit, or the shipped file changed shape."""
    text = SHIPPED_MOSQUITTO.read_text()
    subs = {"/etc/mosquitto/humus/": f"{broker_dir}/",
            "\nlistener 8883\n": f"\nlistener {ports['tls']} 127.0.0.1\n",
            "\nlistener 8884\n": f"\nlistener {ports['cert']} 127.0.0.1\n",
            "\nlistener 1883 127.0.0.1\n": f"\nlistener {ports['local']} 127.0.0.1\n"}
    for old, new in subs.items():
        assert old in text, f"{SHIPPED_MOSQUITTO} no longer contains {old.strip()!r}; update this fixture"
        text = text.replace(old, new)
    # What Debian's /etc/mosquitto/mosquitto.conf sets before including conf.d/.
    head = f"persistence true\npersistence_location {data_dir}/\nlog_dest stderr\nlog_type error\nlog_type warning\n"
    if os.geteuid() == 0:
        head += "user root\n"       # as root Mosquitto would drop to 'mosquitto', which cannot read tmp files
    return head + text


@dataclass
class Broker:
    server: servers.Server
    dir: Path                 # the broker directory (CA, certs, passwd, acl)
    out: Path                 # where `humus gateway add/service` wrote the clients' files
    ports: dict[str, int]

    def password(self, who: str) -> str:
        """who: 'farm-1.gw-1' (a gateway bundle) or a service name."""
        p = self.out / who / "mqtt.password"
        if not p.exists():
            p = self.out / "services" / f"{who}.mqtt.password"
        return p.read_text().strip()


class Client:
    """A paho MQTT 5 client that records what it gets; every wait is a poll with a deadline."""

    def __init__(self, broker: Broker, user: str | None, *, port: str = "tls", tls: bool = True,
                 cert: bool = False, client_id: str | None = None, password: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.broker, self.port = broker, broker.ports[port]
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{user}-{time.monotonic_ns()}",
                             protocol=mqtt.MQTTv5)
        if user is not None:
            self.c.username_pw_set(user, password if password is not None else broker.password(user))
        if tls:
            kw = {}
            if cert:
                kw = {"certfile": str(broker.out / user / "client.crt"), "keyfile": str(broker.out / user / "client.key")}
            self.c.tls_set(ca_certs=str(broker.dir / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED, **kw)
        # Mosquitto 2.0 drops the connection of a client whose publish the ACL denies (after PUBACK 135);
        # paho then reconnects: quickly here, so a test of several denials stays short.
        self.c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        self.connack: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.acks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.c.on_connect = lambda c, u, f, rc, p: self.connack.put(rc.value)
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload.decode(), m.retain))
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.__setitem__(mid, [r.value for r in rcs])

    def connect(self, timeout: float = 10) -> int:
        """The CONNACK reason code (0 accepted); raises OSError/ssl.SSLError when the transport fails."""
        self.c.connect("127.0.0.1", self.port, keepalive=30)
        self.c.loop_start()
        try:
            return self.connack.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no CONNACK from 127.0.0.1:{self.port} within {timeout} s") from None

    def subscribe(self, *topics: str) -> list[int]:
        _, mid = self.c.subscribe([(t, 1) for t in topics])
        return _poll(lambda: self.subacks.get(mid), f"SUBACK for {topics}")

    def publish(self, topic: str, payload: str, retain: bool = False) -> int:
        """The PUBACK reason code (0 success, 135 not authorized)."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        return _poll(lambda: self.acks.get(info.mid), f"PUBACK for {topic}")

    def drain_until(self, sentinel_topic: str, timeout: float = 10) -> list[tuple[str, str, bool]]:
        """Messages received up to and including one on `sentinel_topic`."""
        got: list[tuple[str, str, bool]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                m = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            got.append(m)
            if m[0] == sentinel_topic:
                return got
        raise AssertionError(f"no message on {sentinel_topic} within {timeout} s; got {got}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _poll(get, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = get()
        if v is not None:
            return v
        time.sleep(0.01)
    raise AssertionError(f"no {what} within {timeout} s")
