"""Fixtures for deploy tests: the shipped broker with `humus gateway` users, InfluxDB with auth on."""

from __future__ import annotations

import pytest

import servers
from deploy_support import Broker, _need, humus, shipped_mosquitto_conf


@pytest.fixture(scope="module")
def shipped_broker(tmp_path_factory):
    binary = _need("mosquitto")
    root = tmp_path_factory.mktemp("broker")
    bdir, out = root / "etc-mosquitto-humus", root / "out"
    ports = {"tls": servers.free_port(), "cert": servers.free_port(), "local": servers.free_port()}
    b = ["--broker-dir", str(bdir)]
    humus("gateway", *b, "init", "--host", "localhost", "--host", "127.0.0.1", "--port", str(ports["tls"]),
          "--cert-port", str(ports["cert"]), "--local-port", str(ports["local"]))
    humus("gateway", *b, "add", "farm-1", "gw-1", "--out", str(out / "farm-1.gw-1"))
    humus("gateway", *b, "add", "farm-1", "gw-2", "--cert", "--out", str(out / "farm-1.gw-2"))
    humus("gateway", *b, "add", "farm-2", "gw-1", "--out", str(out / "farm-2.gw-1"))
    humus("gateway", *b, "service", "ingest", "ingest-1", "--out", str(out / "services"))
    humus("gateway", *b, "service", "ingest", "ingest-2", "--out", str(out / "services"))
    humus("gateway", *b, "service", "alerts", "alerts-1", "--out", str(out / "services"))
    (root / "data").mkdir()
    conf = root / "mosquitto.conf"
    conf.write_text(shipped_mosquitto_conf(bdir, ports, root / "data"))
    srv = servers.Server("mosquitto", ports["local"], root, [binary, "-c", str(conf)], dict(ports))
    srv.start()
    for port in (ports["tls"], ports["cert"]):
        servers.wait_port(port, 10, srv.proc, "mosquitto")
    yield Broker(srv, bdir, out, ports)
    srv.stop()


@pytest.fixture(scope="module")
def influxdb_auth_server(start_server):
    """A fresh InfluxDB 1.x with authentication on and no users yet (servers.influxdb_auth)."""
    srv = start_server(servers.influxdb_auth, "influx-auth", "/ping")
    yield srv
    srv.stop()
