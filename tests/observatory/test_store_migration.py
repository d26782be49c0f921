"""Point layout 2 on a real InfluxDB: what a rewrite replaces, and archives of layout 1 read and migrated."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from humus.records import Observation, QualityFlag, Source
from observatory.archive_migrate import migrate
from observatory.store import Selection
from observatory.stores import lineprotocol as lp
from observatory.stores import open_store

REPO = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600_000_000_000
MIN = 60 * 10**9


def scalar(t=T0, **kw) -> Observation:
    base = dict(site="north-field", gateway="gw-1", probe="p1", quantity="vwc", time_ns=t, value=0.25, unit="m3/m3",
                depth_cm=10.0, uncertainty=0.012, flag=QualityFlag.PASS, flag_test="gross_range")
    base.update(kw)
    return Observation(**base)


def spectrum(t=T0, **kw) -> Observation:
    rng = np.random.default_rng(t % 1000)
    base = dict(site="north-field", gateway="gw-1", probe="nir-1", quantity="reflectance", time_ns=t,
                value=tuple(float(x) for x in rng.random(40)), unit="1", depth_cm=12.5,
                wavelengths_nm=tuple(float(x) for x in np.linspace(1350.0, 2550.0, 40)))
    base.update(kw)
    return Observation(**base)


def measurements(store) -> set[str]:
    answer = b"".join(store.raw_query("SHOW MEASUREMENTS", "show", chunked=False))
    series = json.loads(answer)["results"][0].get("series") or [{"values": []}]
    return {v[0] for v in series[0]["values"]}


def test_a_spike_republish_replaces_flag_and_test_of_the_same_point(influx_v1_store_url):
    store = open_store(influx_v1_store_url)
    try:
        store.write([scalar(flag=QualityFlag.PASS, flag_test=None)])
        store.write([scalar(flag=QualityFlag.SUSPECT, flag_test="spike", revision=1)])
        (got,) = store.query(Selection())
        assert (got.flag, got.flag_test, got.value) == (QualityFlag.SUSPECT, "spike", 0.25)
        # A test name outside the code table travels as a string, and a later known one replaces it.
        store.write([scalar(flag=QualityFlag.FAIL, flag_test="lab check: drift")])
        assert [o.flag_test for o in store.query(Selection())] == ["lab check: drift"]
        store.write([scalar(flag=QualityFlag.PASS, flag_test=None)])
        assert [(o.flag, o.flag_test) for o in store.query(Selection())] == [(QualityFlag.PASS, None)]
    finally:
        store.close()


def test_a_rewrite_that_drops_uncertainty_or_value_leaves_no_stale_field(influx_v1_store_url):
    store = open_store(influx_v1_store_url)
    try:
        store.write([scalar(), spectrum(uncertainty=0.5)])
        store.write([scalar(value=math.nan, uncertainty=None, flag=QualityFlag.MISSING, flag_test="timeout"),
                     spectrum(uncertainty=None)])
        got = {o.quantity: o for o in store.query(Selection())}
        assert math.isnan(got["vwc"].value) and got["vwc"].uncertainty is None
        assert got["reflectance"].uncertainty is None and got["reflectance"].value == spectrum().value
        # Grafana reads the raw fields: no -1, no stale value.
        answer = b"".join(store.raw_query('SELECT value, uncertainty FROM "humus_obs"', "raw", chunked=False))
        assert json.loads(answer)["results"][0]["series"][0]["values"][0][1:] == [0.25, 0.012]  # kept by InfluxDB...
        assert len(list(store.query(Selection(quantity="vwc")))) == 1  # ...but not read back as this write's
    finally:
        store.close()


def test_a_depth_tag_is_what_the_configuration_writes(influx_v1_store_url):
    store = open_store(influx_v1_store_url)
    try:
        store.write([scalar(), scalar(probe="p2", depth_cm=12.5), scalar(probe="p3", depth_cm=None)])
        q = "SELECT count(value) FROM \"humus_obs\" WHERE depth_cm='10'"
        answer = json.loads(b"".join(store.raw_query(q, "count", chunked=False)))
        assert answer["results"][0]["series"][0]["values"][0][1] == 1
        assert sorted((o.probe, o.depth_cm) for o in store.query(Selection())) == \
            [("p1", 10.0), ("p2", 12.5), ("p3", None)]
    finally:
        store.close()


def layout1_archive(url: str) -> tuple[list[Observation], list[Observation]]:
    """An archive as Humus wrote it before schema 2, plus newer points written since in layout 2."""
    old = [scalar(t=T0 + i * MIN, value=0.2 + i / 100) for i in range(30)]
    old += [scalar(probe="p2", depth_cm=None, uncertainty=None, flag_test=None, t=T0 + i * MIN) for i in range(5)]
    old += [scalar(quantity="soc", unit="%", source=Source.CALIBRATED, model_id="pls", model_version="2026.1",
                   t=T0 + i * MIN, value=2.0 + i) for i in range(5)]
    old += [scalar(t=T0 + 30 * MIN, value=math.nan, uncertainty=None, flag=QualityFlag.MISSING, flag_test="timeout")]
    old += [spectrum(t=T0 + i * MIN) for i in range(3)]
    store = open_store(url)
    try:
        store.write_lines(lp.encode_legacy(old), "seed layout 1")
        newer = [scalar(t=T0 + 3 * MIN, value=0.99, flag=QualityFlag.SUSPECT, flag_test="spike", revision=1)]
        store.write(newer)
    finally:
        store.close()
    return old, newer


def expected(old: list[Observation], newer: list[Observation]) -> list[tuple]:
    by_key = {(o.probe, o.quantity, o.time_ns): o for o in old}
    for o in newer:
        by_key[(o.probe, o.quantity, o.time_ns)] = o
    return sorted(_comparable(o) for o in by_key.values())


def _comparable(o: Observation) -> tuple:
    return (o.probe, o.quantity, o.time_ns, repr(o.value), o.uncertainty, int(o.flag), o.flag_test, o.unit,
            o.model_id, o.model_version, o.depth_cm, o.wavelengths_nm)


def test_a_layout1_archive_is_read_then_migrated_and_answers_the_same(influx_v1_store_url):
    old, newer = layout1_archive(influx_v1_store_url)
    want = expected(old, newer)
    store = open_store(influx_v1_store_url)
    try:
        assert sorted(_comparable(o) for o in store.query(Selection())) == want  # both layouts, the newer winning
        report = migrate(influx_v1_store_url)
        assert report.read == {lp.LEGACY_SCALAR: len(old) - 3, lp.LEGACY_SPECTRUM: 3}
        assert report.kept_newer == 1 and report.written == len(old) - 1
        assert measurements(store) == {lp.SCALAR, lp.SPECTRUM, lp.AXIS}
        assert sorted(_comparable(o) for o in store.query(Selection())) == want
        again = migrate(influx_v1_store_url)
        assert again.read == {lp.LEGACY_SCALAR: 0, lp.LEGACY_SPECTRUM: 0} and again.dropped == []
    finally:
        store.close()


def test_humus_archive_migrate_command(influx_v1_store_url, tmp_path):
    layout1_archive(influx_v1_store_url)
    r = subprocess.run([sys.executable, "-m", "humus", "archive", "migrate", "--store", influx_v1_store_url],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "dropped measurement humus_observation" in r.stdout and "kept 1 newer" in r.stdout
    sqlite = subprocess.run([sys.executable, "-m", "humus", "archive", "migrate", "--store",
                             f"sqlite:{tmp_path / 'none.sqlite'}"], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert sqlite.returncode != 0 and "no archive at" in sqlite.stderr and len(sqlite.stderr.strip().splitlines()) == 1
