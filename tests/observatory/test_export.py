"""Exports researchers' tools open as they are: Parquet, CF-1.8 NetCDF timeSeries with QARTOD flags, pandas, xarray."""

from __future__ import annotations

import math

import numpy as np
import pytest

from humus.cli import main
from humus.records import Observation, QualityFlag, Source
from observatory import export, query
from observatory.stores import open_store

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
Q = 15 * 60 * 10**9
WL = tuple(np.linspace(1350.0, 2550.0, 16).tolist())


@pytest.fixture
def archive(store_url) -> str:
    obs = []
    for i in range(40):
        t = T0 + i * Q
        flag = QualityFlag.SUSPECT if i % 7 == 3 else QualityFlag.PASS
        obs.append(Observation("north-field", "gw-1", "teros-1", "vwc", t, 0.25 + i / 1000, "m3/m3", depth_cm=10.0,
                               uncertainty=0.02, flag=flag, flag_test="spike" if flag == 3 else None,
                               source=Source.CALIBRATED, model_id="teros12-vwc-mineral", model_version="eq5"))
        obs.append(Observation("north-field", "gw-1", "teros-1", "soil_temp", t + (Q // 2 if i % 2 else 0),
                               12.0 + i / 10, "degC", depth_cm=10.0))
        if i % 10 == 0:
            obs.append(Observation("north-field", "gw-1", "nir-1", "spectrum", t, tuple(np.linspace(0.2, 0.4, 16)),
                                   "1", depth_cm=5.0, wavelengths_nm=WL))
    obs.append(Observation("north-field", "gw-1", "teros-1", "vwc", T0 + 41 * Q, math.nan, "m3/m3", depth_cm=10.0,
                           flag=QualityFlag.MISSING, flag_test="timeout", source=Source.CALIBRATED,
                           model_id="teros12-vwc-mineral", model_version="eq5"))
    s = open_store(store_url)
    s.write(obs)
    s.close()
    return store_url


def test_parquet_holds_the_same_rows_as_the_query(archive, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "obs.parquet"
    data = query.series(archive)
    assert export.write_parquet(iter(data), path) == sum(len(s) for s in data) == 40 + 40 + 4 + 1
    t = pq.read_table(path)
    assert t.schema.field("time").type.tz == "UTC" and str(t.schema.field("flag").type) == "uint8"
    vwc = t.filter(t.column("quantity").to_numpy(zero_copy_only=False) == "vwc")
    (ref,) = query.series(archive, quantity="vwc")
    assert vwc.column("time").cast("int64").to_pylist() == ref.time_ns.tolist()
    assert vwc.column("value").to_pylist()[:40] == ref.value[:40].tolist()
    assert vwc.column("value").to_pylist()[40] is None          # missing as null
    assert vwc.column("model_version").to_pylist()[0] == "eq5"
    spec = t.filter(t.column("quantity").to_numpy(zero_copy_only=False) == "spectrum")
    assert spec.column("spectrum").to_pylist()[0] == np.linspace(0.2, 0.4, 16).tolist()
    assert spec.column("wavelengths_nm").to_pylist()[0] == list(WL)


def test_netcdf_is_a_cf_timeseries_with_qartod_flag_variables(archive, tmp_path, capsys):
    import netCDF4

    sites = tmp_path / "sites.toml"
    sites.write_text('[sites.north-field]\nbaseline = 2026-01-01\nlatitude = 48.85\nlongitude = 2.35\n'
                     '[[sites.north-field.layers]]\ntop_cm = 0\nbottom_cm = 30\nprobes = ["teros-1"]\n'
                     'bulk_density = [{ date = 2026-01-01, value = 1.3 }]\n')
    path = tmp_path / "obs.nc"
    assert main(["query", "--store", archive, "--format", "netcdf", "--out", str(path), "--sites", str(sites)]) == 0
    assert "4 spectra left out" in capsys.readouterr().err
    with netCDF4.Dataset(path) as ds:
        # CF 1.8 chapter 9 (discrete sampling geometries): the global attributes, the instance variable, the
        # indexed ragged array's instance_dimension, and the coordinates every timeSeries needs.
        assert ds.Conventions == "CF-1.8" and ds.featureType == "timeSeries"
        roles = [v for v in ds.variables.values() if getattr(v, "cf_role", None) == "timeseries_id"]
        assert len(roles) == 1 and roles[0].dimensions == ("station",)
        assert ds["station_index"].instance_dimension == "station"
        assert ds["time"].standard_name == "time" and " since " in ds["time"].units and ds["time"].calendar
        for name, std in (("lat", "latitude"), ("lon", "longitude"), ("depth", "depth")):
            assert ds[name].standard_name == std and ds[name].units
        assert ds["depth"].positive == "down"
        data_vars = [v for v in ds.variables.values() if getattr(v, "ancillary_variables", None)]
        assert {v.name for v in data_vars} == {"vwc", "soil_temp"}
        for v in data_vars:
            assert v.units and set(v.coordinates.split()) <= set(ds.variables)
            for anc in v.ancillary_variables.split():
                assert anc in ds.variables
            qc = ds[f"{v.name}_qc"]
            meanings = qc.flag_meanings.split()
            assert list(qc.flag_values) == [1, 2, 3, 4, 9] and len(meanings) == len(qc.flag_values)
            assert meanings[0] == "pass" and meanings[-1] == "missing"
        assert ds["soil_temp"].standard_name == "soil_temperature"
        assert ds["vwc"].standard_name == "volume_fraction_of_condensed_water_in_soil"
        # the values: one station for teros-1, its times the union of both quantities' times
        ids = list(ds["station_id"][:])
        assert ids == ["north-field/gw-1/teros-1@10"] and float(ds["lat"][0]) == 48.85
        n = ds.dimensions["obs"].size
        assert n == 40 + 1 + 20     # vwc every 15 min and the missing one at 41; soil_temp on odd half-steps
        times = ds["time"][:].astype(np.int64) * 1000
        vwc, flags = ds["vwc"][:].filled(np.nan), ds["vwc_qc"][:]
        at = int(np.flatnonzero(times == T0 + 3 * Q)[0])
        assert vwc[at] == pytest.approx(0.253) and flags[at] == 3
        assert int(np.isfinite(vwc).sum()) == 40 and ds["vwc_model"][at] == "teros12-vwc-mineral@eq5"


def test_humus_query_refuses_a_binary_format_without_a_file(archive, capsys):
    assert main(["query", "--store", archive, "--format", "parquet"]) == 2
    assert "add --out FILE" in capsys.readouterr().err


def test_pandas_and_xarray_helpers(archive):
    data = query.series(archive, quantity="vwc")
    df = export.to_pandas(data)
    assert len(df) == 41 and str(df["time"].dt.tz) == "UTC" and df["flag"].tolist()[3] == 3
    ds = export.to_xarray(query.series(archive, probe="teros-1", every="1h"))
    assert ds["value"].dims == ("series", "time") and list(ds["quantity"].values) == ["soil_temp", "vwc"]
    assert ds.sizes["time"] == 11 and list(ds["flag"].attrs["flag_values"]) == [1, 2, 3, 4, 9]
