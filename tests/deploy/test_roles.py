"""Installs by role: what each extra pulls in, and that each role's code runs without the others' packages."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from deploy_support import REPO

HEAVY = {"scipy", "scikit-learn", "pandas", "xarray", "shapely"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(extras: set[str]) -> set[str]:
    """Every distribution `pip install .[extras]` brings, from the installed metadata (no network)."""
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [("humus", extras)]
    while todo:
        name, want = todo.pop()
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (want or {""})):
                continue
            dep = _norm(req.name)
            if dep == "humus":
                todo.append(("humus", set(req.extras)))
                continue
            if dep not in seen:
                seen.add(dep)
                todo.append((dep, set(req.extras)))
    return seen


def test_the_gateway_never_pulls_scipy_scikit_learn_or_the_centre_packages():
    deps = closure({"gateway"})
    assert {"pyserial", "paho-mqtt", "numpy", "minimalmodbus"} <= deps
    assert not deps & (HEAVY | {"amqtt", "influxdb-client", "urllib3"}), deps
    assert "cryptography" in deps       # Ed25519 batch signatures (humus.signing)


def test_the_demo_gets_the_gateway_and_the_embedded_broker_but_no_analysis_stack():
    deps = closure({"demo"})
    assert {"pyserial", "minimalmodbus", "amqtt"} <= deps
    assert not deps & (HEAVY | {"influxdb-client"}), deps


def test_the_centre_gets_influxdb_and_cryptography_but_no_serial_or_broker():
    deps = closure({"centre"})
    assert {"influxdb-client", "urllib3", "cryptography", "paho-mqtt"} <= deps
    assert not deps & (HEAVY | {"pyserial", "minimalmodbus", "amqtt"}), deps


def test_the_test_extra_holds_every_role():
    assert closure({"gateway"}) | closure({"centre"}) | closure({"demo"}) <= closure({"test"})


BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {blocked!r}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not installed in this role")
    sys.meta_path.insert(0, Block())
""")


def _run_without(blocked: set[str], body: str) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=blocked) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_gateway_code_runs_without_centre_demo_or_test_packages():
    r = _run_without({"influxdb_client", "urllib3", "amqtt", "cryptography", "scipy", "sklearn", "pandas", "ioos_qc"}, """
        from humus.cli import main
        from collector.config import load_gateway_config
        from collector.daemon import build_probes
        assert main(["check-config", "deploy/gateway.example.toml"]) == 0
        assert len(build_probes(load_gateway_config("deploy/gateway.example.toml"))) == 2
        import firmware_bridge.drivers  # every driver
        try:
            main(["--help"])
        except SystemExit as e:
            assert e.code == 0
    """)
    assert r.returncode == 0, r.stderr[-2000:]


def test_centre_code_runs_without_serial_broker_or_test_packages():
    r = _run_without({"serial", "minimalmodbus", "amqtt", "scipy", "sklearn", "pandas", "ioos_qc"}, """
        import observatory.ingest, observatory.worker, observatory.stores.influx, observatory.influx_setup
        import observatory.archive_backup, humus.pki, humus.broker_users
        from humus.cli import main
        for argv in (["ingest", "--help"], ["archive", "--help"], ["gateway", "--help"], ["query", "--help"]):
            try:
                main(argv)
            except SystemExit as e:
                assert e.code == 0, argv
    """)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("target", ["demo"])
def test_make_demo_installs_only_the_demo_extra(target):
    r = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    lines = [line for line in r.stdout.splitlines() if "pip install" in line]
    assert lines and all(".[demo]" in line and "test" not in line for line in lines if "-e" in line), r.stdout
