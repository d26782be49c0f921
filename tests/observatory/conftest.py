"""Store fixtures for tests/observatory (names start with `store_` or end with `_url`).

The servers themselves come from tests/conftest.py; here each test gets its
own database or file, so tests never see each other's points.
"""

from __future__ import annotations

import itertools
import os

import pytest

import servers
from observatory.stores import open_store

_db_numbers = itertools.count(1)


def new_influx_v1_url(server) -> str:
    """A fresh, created database on `server` as an influxdb:// store URL."""
    url = f"influxdb://127.0.0.1:{server.port}/t{os.getpid()}_{next(_db_numbers)}"
    store = open_store(url)
    try:
        store.create_database()
    finally:
        store.close()
    return url


@pytest.fixture
def sqlite_store_url(tmp_path) -> str:
    return f"sqlite:{tmp_path / 'archive.sqlite'}"


@pytest.fixture
def influx_v1_store_url(influxdb_server) -> str:
    return new_influx_v1_url(influxdb_server)


@pytest.fixture(params=["sqlite", "influxdb"])
def store_url(request) -> str:
    """Each contract test runs once per backend: the SQLite archive and InfluxDB 1.x (v1 write)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_store_url")
    return request.getfixturevalue("influx_v1_store_url")


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def store_influxdb_own_server(start_server):
    """An InfluxDB for one test alone, to stop and start (outage tests)."""
    srv = start_server(servers.influxdb, "influx-own", "/ping")
    yield srv
    srv.stop()


@pytest.fixture
def store_vm_v2_url(victoria_metrics_server) -> str:
    """influxdb2:// URL of the session VictoriaMetrics (serves the v2 write API, not InfluxQL)."""
    return f"influxdb2://127.0.0.1:{victoria_metrics_server.port}/b{next(_db_numbers)}?org=humus&retries=1"


@pytest.fixture
def store_new_influx_db():
    """`make(server) -> influxdb:// URL` of a fresh database (for tests with their own server)."""
    return new_influx_v1_url
