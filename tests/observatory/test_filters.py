"""Researchers' filters (depth, model version, worst flag), newest version per time, and the same arrays everywhere."""

from __future__ import annotations

import numpy as np
import pytest

from humus.records import Observation, QualityFlag, Source
from observatory import query, versions
from observatory.stores import open_store

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
H = 3600 * 10**9


def _archive() -> list[Observation]:
    obs = []
    for i in range(48):
        t = T0 + i * H
        flag = [QualityFlag.PASS, QualityFlag.NOT_EVALUATED, QualityFlag.SUSPECT, QualityFlag.FAIL][i % 4]
        for depth in (5.0, 20.0, 40.0):
            obs.append(Observation("site-a", "gw-1", f"t-{int(depth)}", "vwc", t, 0.2 + depth / 1000 + i / 1e4,
                                   "m3/m3", depth_cm=depth, uncertainty=0.02, flag=flag, source=Source.CALIBRATED,
                                   model_id="teros", model_version="eq5"))
        # live SOC of model v1 every hour; a recalibration (v2) covers only the first day
        obs.append(Observation("site-a", "gw-1", "nir-1", "soc", t, 2.0 + i / 100, "%", depth_cm=10.0,
                               uncertainty=0.3, flag=QualityFlag.PASS, source=Source.CALIBRATED, model_id="pls",
                               model_version="1"))
        if i < 24:
            obs.append(Observation("site-a", "gw-1", "nir-1", versions.variant_quantity("soc", "pls", "2"), t,
                                   3.0 + i / 100, "%", depth_cm=10.0, uncertainty=0.2, flag=QualityFlag.SUSPECT,
                                   source=Source.CALIBRATED, model_id="pls", model_version="2"))
    obs.append(Observation("site-a", "gw-1", "nir-1", versions.CATALOGUE, versions.catalogue_time_ns("soc", "pls", "2"),
                           24.0, "soc", depth_cm=10.0, flag=QualityFlag.PASS, source=Source.CALIBRATED,
                           model_id="pls", model_version="2"))
    return obs


@pytest.fixture
def both(sqlite_store_url, influx_v1_store_url):
    for url in (sqlite_store_url, influx_v1_store_url):
        s = open_store(url)
        s.write(_archive())
        s.close()
    return sqlite_store_url, influx_v1_store_url


QUERIES = [
    dict(),
    dict(quantity="vwc", depth="0:30"),
    dict(quantity="vwc", depth=40),
    dict(quantity="vwc", min_flag="not_evaluated"),
    dict(quantity="soc"),
    dict(quantity="soc", model_version="1"),
    dict(quantity="soc", versions="all"),
    dict(probe="nir-1", min_flag="pass"),
    dict(quantity="vwc", every="6h", agg="mean"),
    dict(quantity="soc", every="1d", agg="max", min_flag="suspect"),
    dict(quantity="vwc", limit=30),
    dict(limit=5),
    dict(quantity="soc", since="2026-01-01T06:00", until="2026-01-02T06:00", window="3h"),
]


def _arrays(data):
    return [(s.key, s.time_ns.tolist(), np.round(s.value, 12).tolist(), np.round(s.uncertainty, 12).tolist(),
             s.flag.tolist(), list(s.model_id), list(s.model_version), list(s.unit)) for s in data]


@pytest.mark.parametrize("filters", QUERIES, ids=[repr(q) for q in QUERIES])
def test_every_backend_returns_the_same_arrays(both, filters):
    sqlite_url, influx_url = both
    a = query.series(sqlite_url, **filters)
    b = query.series(influx_url, **filters)
    assert a, filters
    assert _arrays(a) == _arrays(b)


def test_depth_filters_select_whole_series(sqlite_store_url):
    s = open_store(sqlite_store_url)
    s.write(_archive())
    s.close()
    layer = query.series(sqlite_store_url, quantity="vwc", depth="0:30")
    assert sorted(x.depth_cm for x in layer) == [5.0, 20.0]   # series order: by probe id, then depth
    assert [x.depth_cm for x in query.series(sqlite_store_url, quantity="vwc", depth=40)] == [40.0]
    with pytest.raises(query.StoreError, match="TOP:BOTTOM"):
        query.series(sqlite_store_url, depth="shallow")


def test_the_worst_flag_kept_drops_worse_rows(sqlite_store_url):
    s = open_store(sqlite_store_url)
    s.write(_archive())
    s.close()
    (ok,) = query.series(sqlite_store_url, probe="t-5", min_flag="not_evaluated")
    assert set(ok.flag.tolist()) == {1, 2} and len(ok) == 24
    (strict,) = query.series(sqlite_store_url, probe="t-5", min_flag=1)
    assert set(strict.flag.tolist()) == {1}
    with pytest.raises(query.StoreError, match="expected pass, not_evaluated"):
        query.series(sqlite_store_url, min_flag="great")


def test_newest_version_per_time_by_default_and_any_version_on_request(sqlite_store_url):
    s = open_store(sqlite_store_url)
    s.write(_archive())
    s.close()
    (soc,) = query.series(sqlite_store_url, quantity="soc")
    assert soc.quantity == "soc" and len(soc) == 48
    assert list(soc.model_version[:24]) == ["2"] * 24 and list(soc.model_version[24:]) == ["1"] * 24
    assert np.allclose(soc.value[:24], 3.0 + np.arange(24) / 100)
    (v1,) = query.series(sqlite_store_url, quantity="soc", model_version="1")
    assert len(v1) == 48 and np.allclose(v1.value, 2.0 + np.arange(48) / 100)
    both_versions = query.series(sqlite_store_url, quantity="soc", versions="all")
    assert sorted(len(x) for x in both_versions) == [24, 48]
    assert {x.quantity for x in both_versions} == {"soc"}
    # Asked without a quantity, the variant merges into its quantity and the catalogue stays out of sight.
    everything = query.series(sqlite_store_url, probe="nir-1")
    assert [(x.quantity, len(x)) for x in everything] == [("soc", 48)]


def test_windows_give_the_same_rows_as_one_read(sqlite_store_url):
    s = open_store(sqlite_store_url)
    s.write(_archive())
    s.close()
    whole = query.series(sqlite_store_url, quantity="vwc", since="2026-01-01")
    parts = query.series(sqlite_store_url, quantity="vwc", since="2026-01-01", window="5h")
    assert len(parts) > len(whole)
    joined = {}
    for p in parts:
        joined.setdefault(p.key, []).extend(p.time_ns.tolist())
    assert joined == {w.key: w.time_ns.tolist() for w in whole}
    no_start = query.series(sqlite_store_url, quantity="vwc", window="5h")   # the start is found by bisection
    assert sum(len(p) for p in no_start) == sum(len(w) for w in whole)
