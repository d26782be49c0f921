"""The collector connects over TLS with a username and password file, as a field gateway does."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import threading
import time

import pytest

import servers
from collector_support import gateway_toml

pytestmark = pytest.mark.servers


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_broker(tmp_path_factory):
    if not shutil.which("openssl") or not shutil.which("mosquitto_passwd"):
        if os.environ.get("CI"):
            pytest.fail("openssl or mosquitto_passwd not installed; CI must run the TLS test", pytrace=False)
        pytest.skip("openssl or mosquitto_passwd not installed")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=humus-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt", cwd=d)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "gw-1", "s3cret"], check=True,
                   capture_output=True, timeout=30)
    srv = servers.mosquitto(d / "mq")
    conf = (d / "mq" / "mosquitto.conf").read_text().replace("allow_anonymous true", "allow_anonymous false")
    conf += f"password_file {d / 'passwd'}\ncafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
    (d / "mq" / "mosquitto.conf").write_text(conf)
    srv.start()
    yield srv, d
    srv.stop()


def test_collector_publishes_over_tls_with_username_and_password_file(tmp_path, tls_broker, sim_probes):
    import paho.mqtt.client as mqtt

    from collector.config import load_gateway_config
    from collector.daemon import Collector

    srv, d = tls_broker
    (probe,) = sim_probes(1)
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "pw").chmod(0o600)     # a password file open to others is refused
    cfg = tmp_path / "gw.toml"
    text = gateway_toml(tmp_path / "data", srv.port, [{"id": "p0", "driver": "ascii-temp", "port": str(probe.link),
                                                       "interval_s": 1}])
    text = text.replace('[mqtt]\n', f'[mqtt]\ntls = true\nca_file = "{d / "ca.crt"}"\nusername = "gw-1"\n'
                                    f'password_file = "{tmp_path / "pw"}"\n')
    cfg.write_text(text)
    got: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-sub")
    sub.username_pw_set("gw-1", "s3cret")
    sub.tls_set(ca_certs=str(d / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload)) if m.topic.endswith("/obs") else None
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("humus/v1/#", qos=1)
    sub.connect("127.0.0.1", srv.port)
    sub.loop_start()
    c = Collector(load_gateway_config(cfg))
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        t.join(20)
        sub.loop_stop()
    assert got and got[0]["observations"][0]["probe"] == "p0"


def test_a_wrong_password_is_logged_and_retried_without_losing_the_spool(tmp_path, tls_broker, sim_probes, caplog):
    from collector.config import load_gateway_config
    from collector.daemon import Collector

    srv, d = tls_broker
    (probe,) = sim_probes(1)
    (tmp_path / "pw").write_text("wrong\n")
    (tmp_path / "pw").chmod(0o600)     # a password file open to others is refused
    cfg = tmp_path / "gw.toml"
    text = gateway_toml(tmp_path / "data", srv.port, [{"id": "p0", "driver": "ascii-temp", "port": str(probe.link),
                                                       "interval_s": 1}])
    text = text.replace('[mqtt]\n', f'[mqtt]\ntls = true\nca_file = "{d / "ca.crt"}"\nusername = "gw-1"\n'
                                    f'password_file = "{tmp_path / "pw"}"\n')
    cfg.write_text(text)
    c = Collector(load_gateway_config(cfg))
    stop = threading.Event()
    t = threading.Thread(target=c.run, args=(stop,), daemon=True)
    t.start()
    try:
        assert c.ready.wait(10)
        time.sleep(3)
        assert c.spool.stats().depth >= 2
    finally:
        stop.set()
        t.join(20)
    assert any("refused the connection" in r.getMessage() for r in caplog.records)
