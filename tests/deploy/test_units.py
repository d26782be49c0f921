"""deploy/systemd/*.service are valid, sandboxed and agree with the daemons they run."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collector.config import load_gateway_config

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
EXAMPLE = REPO / "deploy" / "gateway.example.toml"
NAMES = ["humus-collect.service", "humus-ingest@.service", "humus-alerts.service"]


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string((UNITS / name).read_text())
    return cp


def _multi(name: str, key: str) -> list[str]:
    """Every value of a key that may repeat (configparser keeps only the last)."""
    return [line.split("=", 1)[1] for line in (UNITS / name).read_text().splitlines() if line.startswith(key + "=")]


def test_collect_is_a_notify_service_with_a_watchdog_and_no_restart_on_bad_config():
    s = _unit("humus-collect.service")["Service"]
    assert s["Type"] == "notify" and int(s["WatchdogSec"]) > 0
    assert "humus collect --config" in s["ExecStart"]
    assert s["ExecReload"].endswith("-HUP $MAINPID")
    assert "2" in s["RestartPreventExitStatus"].split() and s["Restart"] == "always"


@pytest.mark.parametrize("name", NAMES)
def test_every_unit_runs_sandboxed_as_humus_with_private_files_and_restart_limits(name):
    u = _unit(name)
    s = u["Service"]
    assert s["User"] == s["Group"] == "humus"
    assert s["UMask"] == "0027"                      # files 0640, directories 0750
    assert s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict" and s["PrivateTmp"] == "yes"
    assert s["ReadWritePaths"] == "/var/lib/humus" and s["ProtectHome"] == "yes"
    assert s["CapabilityBoundingSet"] == ""
    assert s["Restart"] == "always" and "2" in s["RestartPreventExitStatus"].split()
    assert int(u["Unit"]["StartLimitBurst"]) > 0 and u["Unit"]["StartLimitIntervalSec"]
    assert s["ExecStartPre"].split()[1] == "check-config"


def test_only_the_collector_may_open_serial_ports():
    assert _multi("humus-collect.service", "SupplementaryGroups") == ["dialout"]
    assert {d.split()[0] for d in _multi("humus-collect.service", "DeviceAllow")} == {
        "char-ttyUSB", "char-ttyACM", "char-ttyAMA", "char-ttyS"}
    for name in ("humus-ingest@.service", "humus-alerts.service"):
        s = _unit(name)["Service"]
        assert "SupplementaryGroups" not in s and s["PrivateDevices"] == "yes"


def test_ingest_template_gives_each_instance_its_own_configuration_and_so_its_own_client_id():
    s = _unit("humus-ingest@.service")["Service"]
    assert s["ExecStart"].endswith("humus ingest --config /etc/humus/ingest-%i.toml")
    assert s["ExecStartPre"].endswith("check-config /etc/humus/ingest-%i.toml")


def _verify(tmp_path: Path, name: str) -> list[str]:
    text = (UNITS / name).read_text().replace("/opt/humus/.venv/bin/humus", "/bin/true")
    target = tmp_path / name.replace("@.", "@1.")      # a template is verified through an instance
    target.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60)
    return [line for line in (r.stdout + r.stderr).splitlines()
            if target.name in line and "Documentation" not in line]


@pytest.mark.parametrize("name", NAMES)
def test_unit_passes_systemd_analyze_verify(tmp_path, name):
    if not shutil.which("systemd-analyze"):
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is not installed; deploy/install-test-servers.sh installs it", pytrace=False)
        pytest.skip("systemd-analyze not installed")
    assert _verify(tmp_path, name) == []


def test_verify_would_catch_a_misspelt_key(tmp_path):
    """The check above is not vacuous: systemd-analyze names unknown keys."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    bad = UNITS / "humus-alerts.service"
    target = tmp_path / "humus-alerts.service"
    target.write_text(bad.read_text().replace("UMask=", "UMaks=").replace("/opt/humus/.venv/bin/humus", "/bin/true"))
    r = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True, timeout=60)
    assert "UMaks" in r.stdout + r.stderr


def test_example_gateway_configuration_loads_and_builds_its_probes():
    cfg = load_gateway_config(EXAMPLE)
    assert cfg.gateway.site == "farm-1" and len(cfg.probes) == 3
    from collector.daemon import build_probes

    by_port = build_probes(cfg)
    # two SDI-12 probes share one bus; the ASCII probe has its own port
    assert sorted(len(v) for v in by_port.values()) == [1, 2]
    teros = next(p for ps in by_port.values() for p in ps if p.settings.id == "teros-a")
    assert {c.quantity for c in teros.pipeline.calibrators} == {"vwc"}


def test_check_config_accepts_the_example():
    r = subprocess.run([sys.executable, "-m", "humus.cli", "check-config", str(EXAMPLE)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_collector_daemon_creates_its_spool_0640_even_when_started_with_umask_000(tmp_path):
    """The code-side umask, for a daemon started outside systemd (the unit sets UMask=0027 too)."""
    import signal
    import stat
    import time

    example = EXAMPLE.read_text()
    head = example.split("[[probes]]", 1)[0]
    head = head.replace('data_dir = "/var/lib/humus"', f'data_dir = "{tmp_path / "data"}"')
    head = head.replace('host = "broker.example.org"', 'host = "127.0.0.1"').replace("port = 8883", "port = 9")
    head = head.replace('username = "gw-1"', 'username = ""').replace("tls = true", "tls = false")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(head + '[[probes]]\nid = "t"\ndriver = "ascii-temp"\nport = "/dev/null"\ninterval_s = 60\n')
    spool = load_gateway_config(cfg).spool_path
    proc = subprocess.Popen([sys.executable, "-m", "humus.cli", "collect", "--config", str(cfg)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.umask(0))
    try:
        deadline = time.monotonic() + 30
        while not spool.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spool.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no spool in 30 s"
        assert stat.S_IMODE(spool.stat().st_mode) & 0o027 == 0, oct(spool.stat().st_mode)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_ingest_is_a_notify_service_with_a_watchdog():
    """The daemon sends READY=1 and WATCHDOG=1 (tests/observatory/test_receipts_ingest.py checks it does)."""
    s = _unit("humus-ingest@.service")["Service"]
    assert s["Type"] == "notify" and int(s["WatchdogSec"]) > 0 and s["NotifyAccess"] == "main"
