"""`humus gateway`: the files it writes, their modes, and what it refuses."""

from __future__ import annotations

import shutil
import stat
import subprocess
import tomllib

import pytest

from collector.config import load_gateway_config
from deploy_support import REPO, humus
from humus.broker_users import check_password, hash_password


def _mode(p) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def broker_dir(tmp_path):
    d = tmp_path / "broker"
    r = humus("gateway", "--broker-dir", str(d), "init", "--host", "broker.example.org")
    assert "created the CA" in r.stdout
    return d


def test_our_password_hash_is_the_one_mosquitto_passwd_makes(tmp_path):
    if not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd not installed")
    f = tmp_path / "pw"
    f.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(f), "alice", "correct horse"], check=True, timeout=30)
    entry = f.read_text().strip().split(":", 1)[1]
    assert entry.startswith("$7$101$")
    assert check_password("correct horse", entry) and not check_password("correct horsf", entry)
    salt = __import__("base64").b64decode(entry.split("$")[3])
    assert hash_password("correct horse", salt) == entry


def test_init_is_idempotent_and_keeps_the_ca_private(broker_dir):
    before = {p.name: p.read_bytes() for p in broker_dir.iterdir() if p.is_file()}
    r = humus("gateway", "--broker-dir", str(broker_dir), "init", "--host", "broker.example.org")
    assert "nothing changed" in r.stdout
    assert {p.name: p.read_bytes() for p in broker_dir.iterdir() if p.is_file()} == before
    assert _mode(broker_dir / "ca.key") == 0o600
    assert _mode(broker_dir / "server.key") == 0o640 and _mode(broker_dir / "passwd") == 0o640


def test_init_after_an_upgrade_gives_the_same_users_this_versions_topics(broker_dir, tmp_path):
    d = ["--broker-dir", str(broker_dir)]
    humus("gateway", *d, "service", "ingest", "ingest-1", "--out", str(tmp_path / "svc"))
    acl = broker_dir / "acl"
    current = acl.read_text()
    assert "topic read humus/v1/_ingest/+/ledger" in current
    # An ACL written by an earlier version: no ledger topics for the ingest user.
    acl.write_text("\n".join(line for line in current.splitlines() if "_ingest" not in line) + "\n")
    passwd = (broker_dir / "passwd").read_bytes()
    r = humus("gateway", *d, "init", "--host", "broker.example.org")
    assert "rewrote" in r.stdout and "reload mosquitto" in r.stdout
    assert acl.read_text() == current and (broker_dir / "passwd").read_bytes() == passwd
    assert "nothing changed" in humus("gateway", *d, "init", "--host", "broker.example.org").stdout


def test_add_writes_a_bundle_whose_mqtt_block_the_collector_loads(broker_dir, tmp_path):
    out = tmp_path / "bundle"
    r = humus("gateway", "--broker-dir", str(broker_dir), "add", "farm-1", "gw-7", "--cert", "--out", str(out))
    password = (out / "mqtt.password").read_text().strip()
    assert len(password) >= 32 and password not in r.stdout + r.stderr
    assert _mode(out / "mqtt.password") == 0o600 and _mode(out / "client.key") == 0o600
    block = (out / "mqtt.toml").read_text()
    mqtt = tomllib.loads(block)["mqtt"]
    assert mqtt["username"] == mqtt["client_id"] == "farm-1.gw-7"
    assert mqtt["port"] == 8884 and mqtt["tls"] is True and mqtt["cert_file"] == "/etc/humus/client.crt"
    example = (REPO / "deploy" / "gateway.example.toml").read_text()
    head, rest = example.split("[mqtt]", 1)
    gw = tmp_path / "gateway.toml"
    # As if copied to the gateway's /etc/humus/ (the configuration checks that the files are there).
    gw.write_text(head + block.replace("/etc/humus/", f"{out}/") + "\n[publish]" + rest.split("[publish]", 1)[1])
    cfg = load_gateway_config(gw)
    assert cfg.mqtt.username == "farm-1.gw-7" and cfg.mqtt.host == "broker.example.org"
    entry = dict(line.split(":", 1) for line in (broker_dir / "passwd").read_text().splitlines())["farm-1.gw-7"]
    assert check_password(password, entry)
    acl = (broker_dir / "acl").read_text()
    assert "user farm-1.gw-7\ntopic write humus/v1/farm-1/gw-7/#\ntopic read humus/v1/farm-1/gw-7/receipt\n" in acl


def test_add_refuses_a_registered_gateway_unless_rotating_and_remove_revokes_it(broker_dir, tmp_path):
    b = ["gateway", "--broker-dir", str(broker_dir)]
    humus(*b, "add", "farm-1", "gw-1", "--out", str(tmp_path / "one"))
    again = humus(*b, "add", "farm-1", "gw-1", "--out", str(tmp_path / "two"), check=False)
    assert again.returncode == 1 and "already registered" in again.stderr and "--rotate" in again.stderr
    old = (tmp_path / "one" / "mqtt.password").read_text().strip()
    humus(*b, "add", "farm-1", "gw-1", "--rotate", "--out", str(tmp_path / "three"))
    entry = dict(line.split(":", 1) for line in (broker_dir / "passwd").read_text().splitlines())["farm-1.gw-1"]
    assert not check_password(old, entry)
    assert check_password((tmp_path / "three" / "mqtt.password").read_text().strip(), entry)
    assert "farm-1/gw-1" in humus(*b, "list").stdout
    humus(*b, "remove", "farm-1/gw-1")
    assert "farm-1.gw-1" not in (broker_dir / "passwd").read_text() + (broker_dir / "acl").read_text()
    gone = humus(*b, "remove", "farm-1/gw-1", check=False)
    assert gone.returncode == 1 and "no such gateway" in gone.stderr


@pytest.mark.parametrize("site,gateway", [("Farm-1", "gw-1"), ("farm.1", "gw-1"), ("farm-1", "gw/1"), ("f" * 65, "g")])
def test_add_refuses_ids_outside_the_wire_alphabet(broker_dir, tmp_path, site, gateway):
    r = humus("gateway", "--broker-dir", str(broker_dir), "add", site, gateway, "--out", str(tmp_path / "x"),
              check=False)
    assert r.returncode == 2 and "expected 1 to 64 of a-z, 0-9 and '-'" in r.stderr
    assert "Traceback" not in r.stderr


def test_add_before_init_says_what_to_run(tmp_path):
    r = humus("gateway", "--broker-dir", str(tmp_path / "none"), "add", "farm-1", "gw-1", check=False)
    assert r.returncode == 1 and "humus gateway init" in r.stderr and "Traceback" not in r.stderr


def test_service_block_for_ingest_names_its_client_id_and_uses_the_loopback_listener(broker_dir, tmp_path):
    humus("gateway", "--broker-dir", str(broker_dir), "service", "ingest", "ingest-2", "--out", str(tmp_path))
    doc = tomllib.loads((tmp_path / "ingest-2.mqtt.toml").read_text())
    assert doc["ingest"]["client_id"] == "ingest-2"
    assert doc["mqtt"]["host"] == "127.0.0.1" and doc["mqtt"]["tls"] is False and doc["mqtt"]["port"] == 1883
    assert doc["mqtt"]["password_file"] == str(tmp_path / "ingest-2.mqtt.password")
    assert _mode(tmp_path / "ingest-2.mqtt.password") == 0o640


def test_openssl_verifies_the_server_and_client_certificates_against_the_ca(broker_dir, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    humus("gateway", "--broker-dir", str(broker_dir), "add", "farm-1", "gw-3", "--cert", "--out", str(tmp_path / "b"))
    ca = str(broker_dir / "ca.crt")
    for cert, purpose in ((broker_dir / "server.crt", "sslserver"), (tmp_path / "b" / "client.crt", "sslclient")):
        r = subprocess.run(["openssl", "verify", "-CAfile", ca, "-purpose", purpose, str(cert)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and ": OK" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(broker_dir / "server.crt")],
                       capture_output=True, text=True, timeout=30)
    assert "DNS:broker.example.org" in r.stdout


def test_an_unwritable_bundle_directory_is_one_line_and_registers_nothing(broker_dir):
    r = humus("gateway", "--broker-dir", str(broker_dir), "add", "farm-1", "gw-4", "--out", "/proc/humus-bundle",
              check=False)
    assert r.returncode == 1 and "/proc/humus-bundle" in r.stderr and "Traceback" not in r.stderr
    assert "farm-1.gw-4" not in (broker_dir / "passwd").read_text()
