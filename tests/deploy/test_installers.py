"""deploy/install-gateway.sh and deploy/install-server.sh: dry run, a real run into a root, and a re-run.

`--root DIR --no-system` lays out every file under DIR and skips packages,
users, the virtual environment and systemctl, so the file part of a real
install runs here; `--dry-run` lists those system steps too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deploy_support import REPO, humus

pytestmark = pytest.mark.skipif(not shutil.which("sh") or not shutil.which("awk"), reason="needs sh and awk")


def _run(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, HUMUS=f"{sys.executable} -m humus.cli", PYTHONPATH=str(REPO))
    r = subprocess.run(["sh", str(REPO / "deploy" / script), *args], capture_output=True, text=True, timeout=120,
                       env=env, cwd=REPO)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def bundle(tmp_path):
    b = tmp_path / "broker"
    humus("gateway", "--broker-dir", str(b), "init", "--host", "broker.example.org")
    humus("gateway", "--broker-dir", str(b), "add", "north", "gw-9", "--cert", "--out", str(tmp_path / "bundle"))
    return tmp_path / "bundle"


def test_gateway_dry_run_lists_every_step_and_touches_nothing(tmp_path, bundle):
    root = tmp_path / "root"
    r = _run("install-gateway.sh", "--dry-run", "--root", str(root), "--bundle", str(bundle))
    out = r.stdout
    import pwd

    try:
        pwd.getpwnam("humus")
    except KeyError:
        assert "would: create system user humus" in out
    for step in ("would: virtual environment /opt/humus/.venv with humus[gateway]",
                 "would: directory /etc/humus (750, root:humus)", "would: install /etc/humus/mqtt.password (640",
                 "would: install /etc/humus/client.key (640", "would: install /etc/humus/gateway.toml (640",
                 "would: install /etc/systemd/system/humus-collect.service", "would: systemctl enable humus-collect"):
        assert step in out, out
    assert out.strip().endswith("nothing was changed")
    assert not root.exists()
    assert "humus[centre]" not in out and "mosquitto" not in out


def test_gateway_install_lays_out_private_files_and_a_rerun_changes_nothing(tmp_path, bundle):
    root = tmp_path / "root"
    first = _run("install-gateway.sh", "--root", str(root), "--no-system", "--bundle", str(bundle))
    assert "change(s) made" in first.stdout
    etc = root / "etc" / "humus"
    assert oct(etc.stat().st_mode & 0o777) == "0o750"
    for name, mode in (("mqtt.password", 0o640), ("client.key", 0o640), ("gateway.toml", 0o640), ("ca.crt", 0o644)):
        assert (etc / name).stat().st_mode & 0o777 == mode, name
    cfg = tomllib.loads((etc / "gateway.toml").read_text())
    assert (cfg["gateway"]["site"], cfg["gateway"]["id"]) == ("north", "gw-9")
    assert cfg["mqtt"]["username"] == "north.gw-9" and cfg["mqtt"]["port"] == 8884
    assert (etc / "mqtt.password").read_text() == (bundle / "mqtt.password").read_text()
    before = _snapshot(root)
    again = _run("install-gateway.sh", "--root", str(root), "--no-system", "--bundle", str(bundle))
    assert again.stdout.strip().endswith("nothing to do: everything is already installed"), again.stdout
    assert "doing:" not in again.stdout
    assert _snapshot(root) == before


def test_gateway_install_keeps_an_edited_configuration(tmp_path, bundle):
    root = tmp_path / "root"
    _run("install-gateway.sh", "--root", str(root), "--no-system", "--bundle", str(bundle))
    cfg = root / "etc" / "humus" / "gateway.toml"
    cfg.write_text(cfg.read_text() + "\n# edited by the operator\n")
    r = _run("install-gateway.sh", "--root", str(root), "--no-system", "--bundle", str(bundle))
    assert "gateway.toml exists (left as it is)" in r.stdout
    assert cfg.read_text().endswith("# edited by the operator\n")


def test_installers_refuse_bad_options_with_one_line(tmp_path):
    r = _run("install-gateway.sh", "--bundle", str(tmp_path / "nope"), "--dry-run", check=False)
    assert r.returncode == 1 and "mqtt.toml not found" in r.stderr
    r = _run("install-server.sh", "--dry-run", check=False)
    assert r.returncode == 1 and "--host NAME is required" in r.stderr
    r = _run("install-server.sh", "--host", "h", "--workers", "two", "--dry-run", check=False)
    assert r.returncode == 1 and "--workers two" in r.stderr
    r = _run("install-server.sh", "--host", "h", "--root", str(tmp_path), check=False)
    assert r.returncode == 1 and "--root needs --no-system" in r.stderr


def test_server_dry_run_then_install_then_rerun(tmp_path):
    root = tmp_path / "root"
    dry = _run("install-server.sh", "--host", "broker.example.org", "--workers", "2", "--dry-run", "--root", str(root))
    for step in ("would: virtual environment /opt/humus/.venv with humus[centre]",
                 "would: install /etc/mosquitto/conf.d/humus.conf", "would: humus gateway init --host broker.example.org",
                 "would: broker user ingest-2 (ingest)", "would: broker user alerts-1 (alerts)",
                 "would: install /etc/humus/ingest-2.toml", "would: systemctl restart mosquitto",
                 "would: systemctl enable --now humus-ingest@2.service"):
        assert step in dry.stdout, dry.stdout
    assert not root.exists()
    _run("install-server.sh", "--host", "broker.example.org", "--workers", "2", "--root", str(root), "--no-system")
    assert (root / "etc/mosquitto/conf.d/humus.conf").read_text() == (REPO / "deploy/mosquitto/humus.conf").read_text()
    passwd = (root / "etc/mosquitto/humus/passwd").read_text()
    assert {line.split(":")[0] for line in passwd.splitlines()} == {"ingest-1", "ingest-2", "alerts-1"}
    ingest2 = root / "etc/humus/ingest-2.toml"
    doc = tomllib.loads(ingest2.read_text())
    assert doc["ingest"]["client_id"] == doc["mqtt"]["client_id"] == doc["mqtt"]["username"] == "ingest-2"
    assert doc["mqtt"]["host"] == "127.0.0.1" and doc["mqtt"]["tls"] is False
    # The written configuration is one `humus ingest` accepts (its state directory moved into the root).
    checked = tmp_path / "ingest-2.toml"
    checked.write_text(ingest2.read_text().replace("/var/lib/humus", str(root / "var/lib/humus"))
                       .replace("/etc/humus/gateways.toml", str(root / "etc/humus/gateways.toml")))
    assert doc["ingest"]["registry_file"] == "/etc/humus/gateways.toml"     # unknown gateways refused
    assert humus("check-config", str(checked), check=False).returncode == 0
    before = _snapshot(root)
    again = _run("install-server.sh", "--host", "broker.example.org", "--workers", "2", "--root", str(root),
                 "--no-system")
    assert again.stdout.strip().endswith("nothing to do: everything is already installed"), again.stdout
    assert _snapshot(root) == before


def test_server_with_influxdb_turns_authentication_on_once(tmp_path):
    root = tmp_path / "root"
    iconf = root / "etc/influxdb/influxdb.conf"
    iconf.parent.mkdir(parents=True)
    iconf.write_text('[http]\n  enabled = true\n  # auth-enabled = false\n  log-enabled = true\n')
    r = _run("install-server.sh", "--host", "h", "--influxdb", "--root", str(root), "--no-system")
    assert "turn InfluxDB authentication on" in r.stdout
    assert "  auth-enabled = true\n" in iconf.read_text()
    doc = tomllib.loads((root / "etc/humus/ingest-1.toml").read_text())
    assert doc["ingest"]["store"] == "influxdb://127.0.0.1:8086/humus?rp=humus&credentials=/etc/humus/influx-ingest.toml"
    assert doc["ingest"]["state_file"] == "/var/lib/humus/ingest-state.sqlite"
    again = _run("install-server.sh", "--host", "h", "--influxdb", "--root", str(root), "--no-system")
    assert "ok: InfluxDB authentication on" in again.stdout and "doing:" not in again.stdout
