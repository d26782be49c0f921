"""The Store contract, run against every backend (SQLite archive, InfluxDB 1.x over v1 /write)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from humus.records import Observation, QualityFlag, Source
from observatory.store import Selection, Store, StoreError, StoreUnavailable
from observatory.stores import open_store

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MIN = 60 * 10**9


def scalar(probe="p1", quantity="vwc", t=T0, value=0.25, **kw) -> Observation:
    base = dict(site="north-field", gateway="gw-1", probe=probe, quantity=quantity, time_ns=t, value=value,
                unit="m3/m3", depth_cm=10.0, uncertainty=0.012, flag=QualityFlag.PASS, flag_test="gross_range")
    base.update(kw)
    return Observation(**base)


def spectrum(t=T0, bands=64, seed=1, **kw) -> Observation:
    rng = np.random.default_rng(seed)
    values = tuple(float(x) for x in rng.random(bands))
    wl = tuple(float(x) for x in np.linspace(1350.0, 2550.0, bands) + 0.1234567)
    base = dict(site="north-field", gateway="gw-1", probe="nir-1", quantity="reflectance", time_ns=t, value=values,
                unit="1", depth_cm=5.0, flag=QualityFlag.NOT_EVALUATED, wavelengths_nm=wl)
    base.update(kw)
    return Observation(**base)


def calibrated(t=T0, value=2.31, **kw) -> Observation:
    base = dict(site="north-field", gateway="gw-1", probe="nir-1", quantity="soc", time_ns=t, value=value, unit="%",
                depth_cm=5.0, uncertainty=0.4, flag=QualityFlag.SUSPECT, flag_test="applicability_domain",
                source=Source.CALIBRATED, model_id="pls-nirsoil", model_version="2026.1")
    base.update(kw)
    return Observation(**base)


def same(a: Observation, b: Observation) -> bool:
    """Equality that treats NaN as equal to NaN."""
    if isinstance(a.value, float) and isinstance(b.value, float) and math.isnan(a.value) and math.isnan(b.value):
        return a == Observation(**{**_fields(b), "value": a.value})
    return a == b


def _fields(o: Observation) -> dict:
    return {f: getattr(o, f) for f in o.__dataclass_fields__}


def test_store_backends_implement_the_protocol(store):
    assert isinstance(store, Store)


def test_scalar_spectral_and_calibrated_observations_come_back_with_every_field(store):
    written = [scalar(), spectrum(), calibrated(), scalar(probe="p2", depth_cm=None, uncertainty=None, flag_test=None,
                                                         unit='kPa "gauge", raw', quantity="matric_potential")]
    store.write(written)
    got = list(store.query(Selection()))
    assert sorted(got, key=repr) == sorted(written, key=repr)
    spec = next(o for o in got if o.is_spectrum)
    assert spec.value == written[1].value and spec.wavelengths_nm == written[1].wavelengths_nm


def test_a_long_spectrum_comes_back_bit_for_bit(store):
    rng = np.random.default_rng(7)
    values = tuple(float(x) for x in rng.normal(size=9000) * 1e-3)  # past one 64 KB string field in InfluxDB
    wl = tuple(float(x) for x in np.linspace(350.0, 2500.0, 9000))
    o = spectrum(bands=3)
    o = Observation(**{**_fields(o), "value": values, "wavelengths_nm": wl})
    store.write([o])
    (got,) = store.query(Selection(quantity="reflectance"))
    assert np.array_equal(np.array(got.value), np.array(values))
    assert got.wavelengths_nm == wl


def test_the_same_points_written_twice_are_stored_once(store):
    batch = [scalar(t=T0 + i * MIN) for i in range(50)] + [spectrum(t=T0 + i * MIN) for i in range(5)]
    store.write(batch)
    store.write(batch)
    store.write(batch[:10])
    got = list(store.query(Selection()))
    assert len(got) == 55
    assert sorted(got, key=repr) == sorted(batch, key=repr)


def test_a_rewrite_of_the_same_series_and_time_replaces_every_field(store):
    store.write([calibrated(), scalar()])
    newer = calibrated(value=2.05, uncertainty=None, flag=QualityFlag.PASS, flag_test=None, model_version="2026.2")
    missing = scalar(value=float("nan"), uncertainty=None, flag=QualityFlag.MISSING, flag_test="no_answer")
    store.write([newer, missing])
    got = {o.quantity: o for o in store.query(Selection())}
    assert got["soc"] == newer
    assert same(got["vwc"], missing)
    back = scalar(value=0.31)
    store.write([back])
    assert list(store.query(Selection(quantity="vwc"))) == [back]


def test_selection_filters_by_site_gateway_probe_quantity_source_and_time(store):
    obs = []
    for i in range(10):
        t = T0 + i * MIN
        obs += [scalar(t=t), scalar(probe="p2", t=t), scalar(quantity="soil_temp", unit="degC", t=t, value=12.5),
                scalar(site="south-field", gateway="gw-2", t=t), calibrated(t=t)]
    store.write(obs)

    def count(**kw) -> int:
        return len(list(store.query(Selection(**kw))))

    assert count() == 50
    assert count(site="south-field") == 10
    assert count(gateway="gw-2") == 10
    assert count(probe="p2") == 10
    assert count(quantity="soil_temp") == 10
    assert count(source=Source.CALIBRATED) == 10
    assert count(source=Source.RAW, probe="p1", site="north-field") == 20
    assert count(since_ns=T0 + 3 * MIN) == 35
    assert count(until_ns=T0 + 3 * MIN) == 15
    assert count(since_ns=T0 + 3 * MIN, until_ns=T0 + 5 * MIN, probe="p1", quantity="vwc") == 4
    assert count(probe="nobody") == 0
    got = list(store.query(Selection(probe="p1", since_ns=T0 + 2 * MIN, until_ns=T0 + 4 * MIN)))
    assert {o.time_ns for o in got} == {T0 + 2 * MIN, T0 + 3 * MIN}


def test_results_are_ordered_by_series_then_time_and_limited_in_total(store):
    obs = [scalar(probe=p, t=T0 + i * MIN, value=float(i)) for p in ("p3", "p1", "p2") for i in range(10)]
    random.Random(3).shuffle(obs)
    store.write(obs)
    got = list(store.query(Selection()))
    assert [(o.probe, o.time_ns) for o in got] == sorted((o.probe, o.time_ns) for o in obs)
    limited = list(store.query(Selection(limit=15)))
    assert [(o.probe, o.time_ns) for o in limited] == [(o.probe, o.time_ns) for o in got[:15]]


def test_timestamps_keep_their_nanoseconds(store):
    obs = [scalar(t=T0 + 123_456_789 + i, value=float(i)) for i in range(3)]
    store.write(obs)
    got = list(store.query(Selection()))
    assert [o.time_ns for o in got] == [T0 + 123_456_789, T0 + 123_456_790, T0 + 123_456_791]
    assert [o.value for o in got] == [0.0, 1.0, 2.0]


def test_a_missing_value_is_nan_with_flag_9(store):
    store.write([scalar(value=float("nan"), flag=QualityFlag.MISSING, flag_test="timeout", uncertainty=None),
                 scalar(t=T0 + MIN, value=0.0)])
    first, second = store.query(Selection())
    assert math.isnan(first.value) and first.flag is QualityFlag.MISSING and first.flag_test == "timeout"
    assert second.value == 0.0 and second.flag is QualityFlag.PASS


def test_ten_thousand_observations_in_one_batch_are_all_stored(store):
    obs = [scalar(probe=f"p{i % 20}", t=T0 + (i // 20) * MIN, value=i / 7) for i in range(10_000)]
    store.write(obs)
    got = list(store.query(Selection()))
    assert len(got) == 10_000
    assert sorted(o.value for o in got) == sorted(o.value for o in obs)


def test_columns_give_numpy_arrays_per_series(store):
    store.write([scalar(t=T0 + i * MIN, value=i / 4) for i in range(8)]
                + [scalar(t=T0 + 8 * MIN, value=float("nan"), flag=QualityFlag.MISSING, uncertainty=None)])
    (s,) = store.columns(Selection())
    assert s.time_ns.dtype == np.int64 and list(s.time_ns) == [T0 + i * MIN for i in range(9)]
    assert np.array_equal(s.value[:8], np.arange(8) / 4) and np.isnan(s.value[8])
    assert list(s.flag) == [1] * 8 + [9]
    assert np.isnan(s.uncertainty[8]) and s.uncertainty[0] == 0.012


# -- backend-specific failure behaviour ------------------------------------------


def test_influxdb_down_raises_store_unavailable_and_loses_nothing_after_restart(store_influxdb_own_server,
                                                                               store_new_influx_db):
    srv = store_influxdb_own_server
    url = store_new_influx_db(srv) + "?retries=2"
    store = open_store(url)
    first = [scalar(t=T0 + i * MIN) for i in range(100)]
    store.write(first)
    srv.stop()
    second = [scalar(t=T0 + (100 + i) * MIN) for i in range(100)]
    with pytest.raises(StoreUnavailable, match="unreachable"):
        store.write(second)
    with pytest.raises(StoreUnavailable):
        list(store.query(Selection()))
    srv.start()
    import servers
    servers.http_ready(srv.url + "/ping")
    store.write(second)  # what the ingest worker does: the same batch again
    got = list(store.query(Selection()))
    assert [o.time_ns for o in got] == [o.time_ns for o in first + second]
    store.close()


def test_influxdb_refusing_the_data_raises_store_error_with_its_message(influxdb_server, store_new_influx_db):
    missing_db = open_store(f"influxdb://127.0.0.1:{influxdb_server.port}/no_such_database")
    with pytest.raises(StoreError, match="database not found") as e:
        missing_db.write([scalar()])
    assert not isinstance(e.value, StoreUnavailable)
    # A field of another type in the same measurement: the server's 400 reaches the caller.
    url = store_new_influx_db(influxdb_server)
    store = open_store(url)
    store.http.request("POST", "/write", "seed", fields={"db": url.rsplit("/", 1)[1]},
                       body=b'humus_obs,gateway=b,probe=c,quantity=vwc,site=a,source=raw value="text" %d\n' % T0)
    with pytest.raises(StoreError, match="field type conflict") as e:
        store.write([scalar()])
    assert not isinstance(e.value, StoreUnavailable)
