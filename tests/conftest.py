"""Shared fixtures: real servers on loopback, started per test session or test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

# Under CI the property tests run the same examples every time (derandomized: a run cannot fail on an
# example no earlier run tried, nor on a machine too loaded to generate examples fast); locally they
# explore new examples on every run and replay failures from .hypothesis/. No per-example deadline: the
# simulated probes run on real ptys and a busy machine is not a failure.
settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

import servers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _start(factory, tmp_path_factory, name: str, ready_path: str | None = None, **kwargs) -> servers.Server:
    try:
        srv = factory(tmp_path_factory.mktemp(name), **kwargs)
    except servers.ServerMissing as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e}; CI must run every server test", pytrace=False)
        pytest.skip(str(e))
    srv.start()
    if ready_path:
        servers.http_ready(srv.url + ready_path)
    return srv


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """`start(factory, name, ready_path=None, **kwargs)`: a started server of tests/servers.py; the caller stops it.

    For fixtures that want their own server (other settings, another scope):
    a missing server skips the test, or fails it in CI, as for the shared ones.
    """
    def start(factory, name: str, ready_path: str | None = None, **kwargs) -> servers.Server:
        return _start(factory, tmp_path_factory, name, ready_path, **kwargs)
    return start


@pytest.fixture
def mosquitto(tmp_path_factory):
    """A fresh Mosquitto for one test (stop()/start() it for an outage)."""
    srv = _start(servers.mosquitto, tmp_path_factory, "mosquitto")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def influxdb_server(tmp_path_factory):
    """One InfluxDB 1.x for the session; tests use their own database names."""
    srv = _start(servers.influxdb, tmp_path_factory, "influxdb", "/ping")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def victoria_metrics_server(tmp_path_factory):
    srv = _start(servers.victoria_metrics, tmp_path_factory, "vm", "/health")
    yield srv
    srv.stop()
