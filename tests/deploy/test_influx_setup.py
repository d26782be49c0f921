"""`humus archive influx-setup` against a real InfluxDB 1.x with authentication on."""

from __future__ import annotations

import json
import stat
import tomllib
import urllib.error
import urllib.parse
import urllib.request

import pytest

from deploy_support import humus
from humus.records import Observation, QualityFlag, Source
from observatory.store import Selection
from observatory.stores import open_store

pytestmark = pytest.mark.servers


def _influx(url: str, path: str, auth: tuple[str, str] | None, data: bytes) -> tuple[int, str]:
    req = urllib.request.Request(url + path, data=data, method="POST")
    if auth:
        import base64

        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _creds(path) -> tuple[str, str]:
    doc = tomllib.loads(path.read_text())
    return doc["user"], doc["password"]


@pytest.fixture(scope="module")
def set_up(influxdb_auth_server, tmp_path_factory):
    conf = tmp_path_factory.mktemp("etc-humus")
    url = f"influxdb://127.0.0.1:{influxdb_auth_server.port}/humus"
    first = humus("archive", "influx-setup", url, "--config-dir", str(conf), "--retention", "520w")
    return influxdb_auth_server, conf, url, first


def test_setup_creates_admin_database_policy_and_two_users_then_changes_nothing(set_up):
    srv, conf, url, first = set_up
    for what in ("created admin user humus-admin", "created database humus", "created retention policy humus",
                 "created user humus-ingest", "created user humus-reader", "granted humus-ingest WRITE",
                 "granted humus-reader READ"):
        assert what in first.stdout, first.stdout
    for name in ("influx-admin.toml", "influx-ingest.toml", "influx-reader.toml"):
        assert stat.S_IMODE((conf / name).stat().st_mode) == 0o600
    files = {p.name: p.read_text() for p in conf.iterdir()}
    second = humus("archive", "influx-setup", url, "--config-dir", str(conf), "--retention", "520w")
    assert "nothing changed" in second.stdout, second.stdout
    assert {p.name: p.read_text() for p in conf.iterdir()} == files
    status, body = _influx(srv.url, "/query", _creds(conf / "influx-admin.toml"),
                           urllib.parse.urlencode({"q": 'SHOW RETENTION POLICIES ON "humus"'}).encode())
    rows = json.loads(body)["results"][0]["series"][0]["values"]
    assert ["humus", "87360h0m0s", "720h0m0s", 1, True] in rows      # 520 weeks, 30-day shards, the default


def test_anonymous_requests_are_refused(set_up):
    srv, *_ = set_up
    assert _influx(srv.url, "/query", None, b"q=SHOW+DATABASES")[0] == 401
    assert _influx(srv.url, "/write?db=humus", None, b"m v=1 1")[0] == 401


def test_ingest_writes_through_the_store_with_the_write_only_user_who_cannot_read(set_up):
    srv, conf, url, _ = set_up
    obs = Observation(site="farm-1", gateway="gw-1", probe="p1", quantity="vwc", time_ns=1_790_000_000_000_000_000,
                      value=0.25, unit="m3/m3", flag=QualityFlag.PASS, source=Source.RAW, depth_cm=10.0)
    store = open_store(f"{url}?rp=humus&credentials={conf / 'influx-ingest.toml'}")
    try:
        store.write([obs])
    finally:
        store.close()
    q = urllib.parse.urlencode({"db": "humus", "q": "SELECT value FROM humus_obs"}).encode()
    status, body = _influx(srv.url, "/query", _creds(conf / "influx-ingest.toml"), q)
    assert "not authorized" in body or status == 403, (status, body)
    reader = open_store(f"{url}?rp=humus&credentials={conf / 'influx-reader.toml'}", create=False)
    try:
        got = list(reader.query(Selection(probe="p1")))
    finally:
        reader.close()
    assert [(o.quantity, o.value) for o in got] == [("vwc", 0.25)]


def test_the_read_only_user_cannot_write(set_up):
    srv, conf, _, _ = set_up
    status, body = _influx(srv.url, "/write?db=humus&rp=humus", _creds(conf / "influx-reader.toml"), b"m v=1 1")
    assert status == 403 and "not authorized" in body, (status, body)


def test_setup_refuses_a_server_with_authentication_off(influxdb_server, tmp_path):
    url = f"influxdb://127.0.0.1:{influxdb_server.port}/humus_authoff"
    r = humus("archive", "influx-setup", url, "--config-dir", str(tmp_path), check=False)
    assert r.returncode == 1 and "authentication is off" in r.stderr and "auth-enabled = true" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_documented_influxd_backup_portable_restores_into_a_new_database(set_up, tmp_path):
    """docs/deploy.md: `influxd backup -portable` over the RPC port, `influxd restore -portable -newdb`."""
    import subprocess
    import time

    srv, conf, _, _ = set_up
    admin = _creds(conf / "influx-admin.toml")
    now = time.time_ns()            # inside the 520-week policy
    body = f"backup_check v=1 {now}\nbackup_check v=2 {now + 1}".encode()
    assert _influx(srv.url, "/write?db=humus&rp=humus", admin, body)[0] == 204
    rpc = f"127.0.0.1:{srv.extra_ports['rpc']}"
    for argv in (["influxd", "backup", "-portable", "-database", "humus", "-host", rpc, str(tmp_path / "bk")],
                 ["influxd", "restore", "-portable", "-db", "humus", "-newdb", "humus_restored", "-host", rpc,
                  str(tmp_path / "bk")]):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-1000:]
    q = urllib.parse.urlencode({"db": "humus_restored", "q": "SELECT count(v) FROM humus.backup_check"}).encode()
    deadline = time.monotonic() + 20
    while True:          # the restored shards open asynchronously ("shard is disabled", "engine is closed")
        doc = json.loads(_influx(srv.url, "/query", admin, q)[1])["results"][0]
        if "series" in doc or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert doc["series"][0]["values"][0][1] == 2, doc
