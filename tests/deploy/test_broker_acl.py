"""The shipped Mosquitto configuration with users from `humus gateway`: who may publish and read what.

Each "cannot" is checked by an observer that may read the topic: the denied
publishes go first, an allowed one last on the same connection; when the
observer has the last one, anything allowed before it has arrived too.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from deploy_support import Client

pytestmark = pytest.mark.servers

A, B, C = "farm-1.gw-1", "farm-1.gw-2", "farm-2.gw-1"


@pytest.fixture
def clients(shipped_broker):
    made: list[Client] = []

    def make(user, **kw) -> Client:
        c = Client(shipped_broker, user, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_anonymous_and_wrong_password_connections_are_refused(clients):
    assert clients(None).connect() != 0                       # no user name at all
    assert clients(A, password="not-the-password").connect() != 0
    assert clients(None, port="local", tls=False).connect() != 0   # loopback listener: still no anonymous access
    assert clients(A).connect() == 0


def test_plaintext_is_refused_on_the_tls_listener_and_the_plain_one_is_loopback_only(shipped_broker, clients):
    with pytest.raises((OSError, TimeoutError)):
        rc = clients(A, tls=False).connect(timeout=3)    # MQTT CONNECT in clear text to the TLS port
        assert rc != 0
    with pytest.raises(ConnectionRefusedError):
        # The plaintext listener is bound to 127.0.0.1 only: another address of this host gets no answer.
        socket.create_connection(("127.0.0.2", shipped_broker.ports["local"]), timeout=3).close()


def test_certificate_listener_requires_a_client_certificate(clients):
    with pytest.raises((ssl.SSLError, OSError, TimeoutError)):
        rc = clients(A, port="cert").connect(timeout=3)   # gw-1 has no certificate
        assert rc != 0
    assert clients(B, port="cert", cert=True).connect() == 0


def test_a_gateway_publishes_only_under_its_own_subtree(clients):
    ingest = clients("ingest-1")
    assert ingest.connect() == 0
    ingest.subscribe("humus/v1/+/+/obs", "humus/v1/+/+/status", "humus/v1/+/+/alerts")
    gw = clients(A)
    assert gw.connect() == 0
    denied = ["humus/v1/farm-1/gw-2/obs", "humus/v1/farm-2/gw-1/obs", "humus/v1/farm-9/gw-1/obs",
              "humus/v1/farm-1/gw-2/status", "humus/v1/farm-1/gw-1x/obs", "humus/v1/_observatory/ingest-1/status",
              "humus/v1/farm-1/alerts"]
    for topic in denied:
        assert gw.publish(topic, "forged") == 135, topic          # MQTT 5 reason: not authorized
    assert gw.publish("humus/v1/farm-1/gw-1/status", "online", retain=True) == 0
    assert gw.publish("humus/v1/farm-1/gw-1/alerts", "a") == 0
    assert gw.publish("humus/v1/farm-1/gw-1/obs", "mine") == 0
    got = ingest.drain_until("humus/v1/farm-1/gw-1/obs")
    assert [t for t, _, _ in got] == ["humus/v1/farm-1/gw-1/status", "humus/v1/farm-1/gw-1/alerts",
                                      "humus/v1/farm-1/gw-1/obs"]


def test_a_gateway_reads_its_own_receipts_and_nothing_else(clients):
    a, b, ingest = clients(A), clients(B, port="cert", cert=True), clients("ingest-1")
    for c in (a, b, ingest):
        assert c.connect() == 0
    codes = a.subscribe("humus/v1/farm-1/gw-1/receipt", "humus/v1/#", "#", "$share/g/humus/v1/+/+/obs")
    assert codes[0] in (0, 1)
    assert b.publish("humus/v1/farm-1/gw-2/obs", "b-data") == 0
    assert b.publish("humus/v1/farm-1/gw-2/status", "b-status", retain=True) == 0
    assert ingest.publish("humus/v1/farm-1/gw-2/receipt", "for-b") == 0
    assert ingest.publish("humus/v1/farm-1/gw-1/receipt", "for-a") == 0
    got = a.drain_until("humus/v1/farm-1/gw-1/receipt")
    assert got == [("humus/v1/farm-1/gw-1/receipt", "for-a", False)]


def test_another_gateway_cannot_take_over_a_session_by_its_client_id(clients):
    ingest = clients("ingest-1")
    assert ingest.connect() == 0
    ingest.subscribe("humus/v1/+/+/obs")
    a = clients(A, client_id=A)
    assert a.connect() == 0
    thief = clients(C, client_id=A)       # the broker uses the user name as client id instead
    assert thief.connect() == 0
    assert a.publish("humus/v1/farm-1/gw-1/obs", "still-connected") == 0
    assert ingest.drain_until("humus/v1/farm-1/gw-1/obs")[-1][1] == "still-connected"


def test_ingest_reads_every_gateway_through_a_shared_subscription_and_cannot_publish_as_one(clients):
    ingest, alerts, a = clients("ingest-1"), clients("alerts-1"), clients(A)
    for c in (ingest, alerts, a):
        assert c.connect() == 0
    alerts.subscribe("humus/v1/+/+/obs", "humus/v1/+/+/status", "humus/v1/+/+/alerts", "humus/v1/_observatory/#")
    assert ingest.publish("humus/v1/farm-1/gw-1/obs", "forged-by-ingest") == 135
    assert ingest.publish("humus/v1/farm-1/gw-1/status", "forged-by-ingest") == 135
    assert ingest.publish("humus/v1/_observatory/alerts-1/status", "forged-by-ingest") == 135
    assert ingest.publish("humus/v1/_observatory/ingest-1/status", "ingest-online") == 0
    # Subscribed after the denials: a denied publish costs the client its connection (and a clean session).
    assert ingest.subscribe("$share/humus-ingest/humus/v1/+/+/obs") == [1]
    assert a.publish("humus/v1/farm-1/gw-1/obs", "real") == 0
    assert ingest.drain_until("humus/v1/farm-1/gw-1/obs") == [("humus/v1/farm-1/gw-1/obs", "real", False)]
    got = alerts.drain_until("humus/v1/farm-1/gw-1/obs")
    # Retained: earlier tests' statuses. QoS 1 is at least once: a re-sent status may come twice.
    assert list(dict.fromkeys(p for _, p, retained in got if not retained)) == ["ingest-online", "real"]


def test_alerts_reads_status_and_alerts_and_writes_only_its_own_status(clients):
    alerts, ingest, c = clients("alerts-1"), clients("ingest-1"), clients(C)
    for x in (alerts, ingest, c):
        assert x.connect() == 0
    ingest.subscribe("humus/v1/_observatory/+/status", "humus/v1/+/+/obs", "humus/v1/+/+/alerts")
    for topic in ("humus/v1/farm-2/gw-1/obs", "humus/v1/farm-2/gw-1/receipt", "humus/v1/farm-2/gw-1/alerts",
                  "humus/v1/_observatory/ingest-1/status"):
        assert alerts.publish(topic, "forged-by-alerts") == 135, topic
    assert alerts.publish("humus/v1/_observatory/alerts-1/status", "alerts-online") == 0
    assert alerts.publish("humus/v1/farm-2/alerts", "notification") in (0, 16)   # 16: accepted, no subscriber
    assert [p for _, p, _ in ingest.drain_until("humus/v1/_observatory/alerts-1/status")] == ["alerts-online"]
    alerts.subscribe("humus/v1/+/+/status", "humus/v1/+/+/alerts")
    assert c.publish("humus/v1/farm-2/gw-1/status", "c-online", retain=True) == 0
    assert c.publish("humus/v1/farm-2/gw-1/alerts", "c-alert") == 0
    got = alerts.drain_until("humus/v1/farm-2/gw-1/alerts")
    assert [(t, p) for t, p, retained in got if not retained] == [("humus/v1/farm-2/gw-1/status", "c-online"),
                                          ("humus/v1/farm-2/gw-1/alerts", "c-alert")]


def test_the_collector_publishes_end_to_end_through_the_shipped_broker(shipped_broker, clients, tmp_path):
    """A gateway configured with exactly the [mqtt] block `humus gateway add` wrote."""
    import json
    import threading

    from collector.config import load_gateway_config
    from collector.daemon import Collector
    from firmware_bridge.sim.ascii_temp import make_firmware
    from firmware_bridge.sim.faults import FaultSwitches
    from firmware_bridge.sim.pty import PtyProbe

    bundle = shipped_broker.out / "farm-2.gw-1"
    ingest = clients("ingest-1")
    assert ingest.connect() == 0
    ingest.subscribe("humus/v1/+/+/obs")
    block = (bundle / "mqtt.toml").read_text().replace("/etc/humus/", f"{bundle}/")   # as if copied to the Pi
    probe = PtyProbe(make_firmware("", 100, FaultSwitches()), tmp_path / "tty0").start()
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nsite = "farm-2"\nid = "gw-1"\ndata_dir = "{tmp_path / "data"}"\n'
                   f'clock_check = "epoch"\nheartbeat_s = 1\n\n{block}\n[publish]\nreconnect_min_s = 0.2\n'
                   f'reconnect_max_s = 1\n\n[[probes]]\nid = "p0"\ndriver = "ascii-temp"\nport = "{probe.link}"\n'
                   "interval_s = 1\n")
    c = Collector(load_gateway_config(cfg))
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    try:
        topic, payload, _ = ingest.drain_until("humus/v1/farm-2/gw-1/obs", timeout=30)[-1]
    finally:
        stop.set()
        t.join(20)
        probe.stop()
    batch = json.loads(payload)
    assert (batch["site"], batch["gateway"]) == ("farm-2", "gw-1") and batch["observations"][0]["probe"] == "p0"


def test_ingest_workers_tell_each_other_their_stored_seqs_and_no_one_else_can(clients):
    one, two, gw, alerts = clients("ingest-1"), clients("ingest-2"), clients(A), clients("alerts-1")
    for c in (one, two, gw, alerts):
        assert c.connect() == 0
    assert two.subscribe("humus/v1/_ingest/+/ledger") == [1]
    for c, topic in ((gw, "humus/v1/_ingest/ingest-1/ledger"), (gw, "humus/v1/_ingest/farm-1.gw-1/ledger"),
                     (alerts, "humus/v1/_ingest/alerts-1/ledger"), (alerts, "humus/v1/_ingest/ingest-1/ledger"),
                     (one, "humus/v1/_ingest/ingest-2/ledger")):
        assert c.publish(topic, "forged") == 135, topic
    # Subscribed after the denials (a denied publish costs a client its connection and clean session):
    # granted, but a gateway is never delivered a ledger.
    gw.subscribe("humus/v1/_ingest/+/ledger", "humus/v1/farm-1/gw-1/receipt")
    assert one.publish("humus/v1/_ingest/ingest-1/ledger", "news") == 0
    got = two.drain_until("humus/v1/_ingest/ingest-1/ledger")
    assert [(t, p) for t, p, _ in got] == [("humus/v1/_ingest/ingest-1/ledger", "news")]
    assert one.publish("humus/v1/farm-1/gw-1/receipt", "sentinel") == 0
    assert [t for t, _, _ in gw.drain_until("humus/v1/farm-1/gw-1/receipt")] == ["humus/v1/farm-1/gw-1/receipt"]
