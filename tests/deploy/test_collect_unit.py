"""deploy/humus-collect.service and deploy/gateway.example.toml are valid, not just plausible."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from collector.config import load_gateway_config

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "humus-collect.service"
EXAMPLE = REPO / "deploy" / "gateway.example.toml"


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_is_a_notify_service_with_a_watchdog_and_no_restart_on_bad_config():
    s = _unit()["Service"]
    assert s["Type"] == "notify"
    assert int(s["WatchdogSec"]) > 0
    assert "humus collect --config" in s["ExecStart"]
    assert s["ExecReload"].endswith("-HUP $MAINPID")
    assert "2" in s["RestartPreventExitStatus"].split()
    assert s["Restart"] == "always"


def test_unit_passes_systemd_analyze_verify_except_for_the_install_path(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    unit = tmp_path / "humus-collect.service"
    unit.write_text(UNIT.read_text().replace("/opt/humus/.venv/bin/humus", "/bin/true"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if "humus-collect.service" in line and "Documentation" not in line]
    assert not problems, problems


def test_example_gateway_configuration_loads_and_builds_its_probes():
    cfg = load_gateway_config(EXAMPLE)
    assert cfg.gateway.site == "farm-1" and len(cfg.probes) == 3
    from collector.daemon import build_probes

    by_port = build_probes(cfg)
    # two SDI-12 probes share one bus; the ASCII probe has its own port
    assert sorted(len(v) for v in by_port.values()) == [1, 2]
    teros = next(p for ps in by_port.values() for p in ps if p.settings.id == "teros-a")
    assert {c.quantity for c in teros.pipeline.calibrators} == {"vwc", "ec25"}


def test_check_config_accepts_the_example():
    import sys

    r = subprocess.run([sys.executable, "-m", "humus.cli", "check-config", str(EXAMPLE)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
