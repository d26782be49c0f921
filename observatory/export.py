"""Exports that researchers' tools open without glue: Parquet, CF-1.8 NetCDF, pandas, xarray.

All writers take an iterable of `SeriesData` (observatory.query.iter_series)
and write as it comes, so an export holds one series (or one window of the
archive) at a time, never the whole result. Files are written beside their
final name and renamed when complete: an interrupted export leaves no
half-file under the name asked for.

- Parquet (pyarrow, the `export` extra): one row per observation, the
  columns of `humus query --format csv` with proper types: time as
  timestamp[ns, UTC], missing numbers as nulls, spectra as list<double>.
- NetCDF (netCDF4, the `export` extra): CF-1.8 discrete sampling geometry
  `timeSeries`, indexed ragged array (CF 1.8 §9.3.4, H.2.5): one station per
  probe and depth, obs dimension unlimited (so it streams), each quantity a
  data variable with its `_qc` QARTOD flag variable (flag_values 1 2 3 4 9,
  flag_meanings pass not_evaluated suspect fail missing: the IOOS QARTOD
  convention) and `_uncertainty`, tied by `ancillary_variables`. Spectra
  are left out (a note says how many); export them as Parquet or CSV.
- `to_pandas`, `to_xarray`: in memory, for notebooks.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from humus.records import QualityFlag
from observatory.store import SeriesData

FLAG_VALUES = np.array([1, 2, 3, 4, 9], dtype=np.int8)
FLAG_MEANINGS = "pass not_evaluated suspect fail missing"
PARQUET_ROWS_PER_GROUP = 262_144
CF_STANDARD_NAMES = {"soil_temp": ("soil_temperature", {"degC", "K"}),
                     "vwc": ("volume_fraction_of_condensed_water_in_soil", {"m3/m3", "1"})}
"""Quantities with a CF standard name (CF standard name table), when stored in a unit convertible to its own."""


class ExportError(Exception):
    """An export that cannot be made (a missing optional package, a bad path): one line."""


def _need(module: str, extra: str = "export"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"this export needs the Python package {module.split('.')[0]}; install it with "
                          f"pip install 'humus[{extra}]'") from None


def _atomic(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path}: is a directory; expected a file name to write")
    if not path.parent.exists():
        raise ExportError(f"{path}: directory {path.parent} does not exist")
    return path, path.with_name(f".{path.name}.part")


def _texts(col, n: int):
    """A text column as an Arrow array; a column of one value is built without a Python list of n strings."""
    import pyarrow as pa

    col = np.asarray(col, dtype=object)
    if n and (col == col[0]).all():
        return pa.repeat(pa.scalar(col[0], pa.string()), n) if col[0] is not None else pa.nulls(n, pa.string())
    return pa.array(col, type=pa.string())


# -- Parquet ----------------------------------------------------------------------------------------

def parquet_schema():
    import pyarrow as pa

    return pa.schema([
        ("time", pa.timestamp("ns", tz="UTC")), ("site", pa.string()), ("gateway", pa.string()),
        ("probe", pa.string()), ("depth_cm", pa.float64()), ("quantity", pa.string()), ("source", pa.string()),
        ("value", pa.float64()), ("unit", pa.string()), ("uncertainty", pa.float64()), ("flag", pa.uint8()),
        ("flag_test", pa.string()), ("model_id", pa.string()), ("model_version", pa.string()),
        ("spectrum", pa.list_(pa.float64())), ("wavelengths_nm", pa.list_(pa.float64())),
    ])


def _parquet_table(s: SeriesData, schema):
    import pyarrow as pa

    n = len(s)

    def const(v):
        return pa.repeat(pa.scalar(v, pa.string()), n)

    def floats(a):
        a = np.asarray(a, dtype=np.float64)
        return pa.array(a, mask=np.isnan(a))

    if s.spectra is not None:
        spectrum = pa.array([None if x is None else np.asarray(x) for x in s.spectra], type=pa.list_(pa.float64()))
        wl = pa.array([None if x is None else np.asarray(x) for x in s.wavelengths], type=pa.list_(pa.float64()))
    else:
        spectrum = wl = pa.nulls(n, pa.list_(pa.float64()))
    depth = pa.nulls(n, pa.float64()) if s.depth_cm is None else pa.repeat(pa.scalar(float(s.depth_cm)), n)
    return pa.Table.from_arrays([
        pa.array(s.time_ns, type=pa.int64()).cast(pa.timestamp("ns", tz="UTC")), const(s.site), const(s.gateway),
        const(s.probe), depth, const(s.quantity), const(s.source.value), floats(s.value), _texts(s.unit, n),
        floats(s.uncertainty), pa.array(s.flag, type=pa.uint8()), _texts(s.flag_test, n), _texts(s.model_id, n),
        _texts(s.model_version, n), spectrum, wl], schema=schema)


def write_parquet(stream: Iterable[SeriesData], path: str | Path,
                  progress: Callable[[int, str], None] | None = None) -> int:
    """Write the series to one Parquet file (zstd), row groups of about PARQUET_ROWS_PER_GROUP; rows written."""
    _need("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, tmp = _atomic(path)
    schema = parquet_schema()
    rows = 0
    pending, pending_rows = [], 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for s in stream:
                if not len(s):
                    continue
                pending.append(_parquet_table(s, schema))
                pending_rows += len(s)
                if pending_rows >= PARQUET_ROWS_PER_GROUP:
                    writer.write_table(pa.concat_tables(pending), row_group_size=PARQUET_ROWS_PER_GROUP)
                    rows += pending_rows
                    pending, pending_rows = [], 0
                    if progress:
                        progress(rows, f"{rows} rows")
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=PARQUET_ROWS_PER_GROUP)
                rows += pending_rows
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return rows


# -- NetCDF (CF-1.8 timeSeries, indexed ragged array) -----------------------------------------------

TIME_UNITS = "microseconds since 1970-01-01 00:00:00"
"""Integer microseconds: exact to the microsecond, and read by cftime and xarray (which do not take nanoseconds)."""


class _NetcdfWriter:
    def __init__(self, path: Path, sites: Mapping | None, title: str, history: str) -> None:
        nc = _need("netCDF4")
        self.ds = nc.Dataset(path, "w", format="NETCDF4")
        self.sites = sites or {}
        ds = self.ds
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        ds.setncatts({
            "Conventions": "CF-1.8", "featureType": "timeSeries", "title": title,
            "institution": "see the data's site ids", "source": "Humus soil carbon monitoring (in situ probes)",
            "history": f"{now} {history}", "references": "QARTOD flags: U.S. IOOS, Manual for the Use of Real-Time "
            "Oceanographic Data Quality Control Flags (2020)", "date_created": now,
            "comment": "Indexed ragged array (CF 1.8 section 9.3.4): obs -> station through station_index.",
        })
        ds.createDimension("station", None)
        ds.createDimension("obs", None)
        v = ds.createVariable("station_id", str, ("station",))
        v.setncatts({"cf_role": "timeseries_id", "long_name": "site/gateway/probe@depth_cm"})
        for name in ("site", "gateway", "probe"):
            ds.createVariable(name, str, ("station",)).long_name = f"Humus {name} id"
        for name, std, units, extra in (("lat", "latitude", "degrees_north", {"axis": "Y"}),
                                        ("lon", "longitude", "degrees_east", {"axis": "X"}),
                                        ("depth", "depth", "cm", {"axis": "Z", "positive": "down"})):
            v = ds.createVariable(name, "f8", ("station",), fill_value=np.nan)
            v.setncatts({"standard_name": std, "long_name": std, "units": units, **extra})
        t = ds.createVariable("time", "i8", ("obs",))
        t.setncatts({"standard_name": "time", "long_name": "time of the observation (UTC)", "units": TIME_UNITS,
                     "calendar": "standard", "axis": "T"})
        i = ds.createVariable("station_index", "i4", ("obs",))
        i.setncatts({"long_name": "which station this observation is for", "instance_dimension": "station"})
        self.stations: dict[tuple, int] = {}
        self.variables: dict[tuple[str, str], str] = {}
        self.obs = 0
        self.spectra_skipped = 0

    def _station(self, s: SeriesData) -> int:
        key = (s.site, s.gateway, s.probe, s.depth_cm)
        idx = self.stations.get(key)
        if idx is None:
            idx = self.stations[key] = len(self.stations)
            ds = self.ds
            depth = "" if s.depth_cm is None else f"@{s.depth_cm:g}"
            ds["station_id"][idx] = f"{s.site}/{s.gateway}/{s.probe}{depth}"
            ds["site"][idx], ds["gateway"][idx], ds["probe"][idx] = s.site, s.gateway, s.probe
            site = self.sites.get(s.site)
            ds["lat"][idx] = np.nan if site is None or site.latitude is None else site.latitude
            ds["lon"][idx] = np.nan if site is None or site.longitude is None else site.longitude
            ds["depth"][idx] = np.nan if s.depth_cm is None else s.depth_cm
        return idx

    def _variable(self, s: SeriesData) -> str:
        key = (s.quantity, s.source.value)
        name = self.variables.get(key)
        if name is not None:
            return name
        name = s.quantity if s.quantity not in self.variables.values() else f"{s.quantity}_{s.source.value}"
        self.variables[key] = name
        ds = self.ds
        unit = next((u for u in s.unit if u), "")
        v = ds.createVariable(name, "f8", ("obs",), fill_value=np.nan)
        v.setncatts({"long_name": f"{s.quantity} ({s.source.value})", "units": unit or "1",
                     "coordinates": "time lat lon depth station_id",
                     "ancillary_variables": f"{name}_qc {name}_uncertainty"})
        std = CF_STANDARD_NAMES.get(s.quantity)
        if std and unit in std[1]:
            v.standard_name = std[0]
        q = ds.createVariable(f"{name}_qc", "i1", ("obs",), fill_value=np.int8(QualityFlag.MISSING))
        q.setncatts({"long_name": f"QARTOD primary flag of {name}", "flag_values": FLAG_VALUES,
                     "flag_meanings": FLAG_MEANINGS, "valid_range": np.array([1, 9], dtype=np.int8),
                     "references": "U.S. IOOS QARTOD flag scheme"})
        u = ds.createVariable(f"{name}_uncertainty", "f8", ("obs",), fill_value=np.nan)
        u.setncatts({"long_name": f"standard uncertainty of {name}", "units": unit or "1"})
        if s.source.value == "calibrated":
            m = ds.createVariable(f"{name}_model", str, ("obs",))
            m.long_name = f"calibration model of {name} as id@version"
            v.ancillary_variables += f" {name}_model"
        return name

    def block(self, block: list[SeriesData]) -> None:
        """One station's series (one probe and depth): one obs row per distinct time, each quantity a variable."""
        scalar = [s for s in block if s.spectra is None]
        self.spectra_skipped += sum(len(s) for s in block if s.spectra is not None)
        if not scalar:
            return
        idx = self._station(scalar[0])
        times = np.unique(np.concatenate([s.time_ns for s in scalar]))
        lo, hi = self.obs, self.obs + len(times)
        ds = self.ds
        ds["time"][lo:hi] = times // 1000
        ds["station_index"][lo:hi] = np.full(len(times), idx, dtype=np.int32)
        for s in scalar:
            name = self._variable(s)
            at = lo + np.searchsorted(times, s.time_ns)
            value = np.full(len(times), np.nan)
            unc = np.full(len(times), np.nan)
            flag = np.full(len(times), int(QualityFlag.MISSING), dtype=np.int8)
            rel = at - lo
            value[rel], unc[rel], flag[rel] = s.value, s.uncertainty, s.flag.astype(np.int8)
            ds[name][lo:hi] = value
            ds[f"{name}_uncertainty"][lo:hi] = unc
            ds[f"{name}_qc"][lo:hi] = flag
            if f"{name}_model" in ds.variables:
                labels = np.full(len(times), "", dtype=object)
                labels[rel] = [f"{m}@{v}" if m else "" for m, v in zip(s.model_id, s.model_version)]
                ds[f"{name}_model"][lo:hi] = labels
        self.obs = hi

    def close(self) -> None:
        if self.spectra_skipped:
            self.ds.comment += f" {self.spectra_skipped} spectra left out (export them as Parquet or CSV)."
        self.ds.close()


def write_netcdf(stream: Iterable[SeriesData], path: str | Path, sites: Mapping | None = None,
                 title: str = "Humus observations", history: str = "humus query --format netcdf",
                 progress: Callable[[int, str], None] | None = None) -> tuple[int, int]:
    """Write a CF-1.8 timeSeries file; (obs rows written, spectra left out). `sites`: id -> Site (lat/lon)."""
    path, tmp = _atomic(path)
    w = _NetcdfWriter(tmp, sites, title, history)
    try:
        block: list[SeriesData] = []
        for s in stream:
            if block and (s.site, s.gateway, s.probe, s.depth_cm) != (block[0].site, block[0].gateway,
                                                                      block[0].probe, block[0].depth_cm):
                w.block(block)
                block = []
                if progress:
                    progress(w.obs, f"{w.obs} rows")
            if len(s):
                block.append(s)
        if block:
            w.block(block)
        w.close()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if w.ds.isopen():
                w.ds.close()
            tmp.unlink()
    return w.obs, w.spectra_skipped


# -- pandas and xarray ------------------------------------------------------------------------------

def to_pandas(data: Iterable[SeriesData]):
    """One row per observation (the Parquet columns), time as datetime64[ns, UTC]; spectra as arrays."""
    pd = _need("pandas", "test")
    frames = []
    for s in data:
        n = len(s)
        if not n:
            continue
        cols = {"time": pd.to_datetime(s.time_ns, unit="ns", utc=True), "site": s.site, "gateway": s.gateway,
                "probe": s.probe, "depth_cm": np.nan if s.depth_cm is None else s.depth_cm, "quantity": s.quantity,
                "source": s.source.value, "value": s.value, "unit": list(s.unit), "uncertainty": s.uncertainty,
                "flag": s.flag, "flag_test": list(s.flag_test), "model_id": list(s.model_id),
                "model_version": list(s.model_version)}
        if s.spectra is not None:
            cols["spectrum"] = list(s.spectra)
            cols["wavelengths_nm"] = list(s.wavelengths)
        frames.append(pd.DataFrame(cols))
    if not frames:
        return pd.DataFrame(columns=[f.name for f in parquet_schema()][:14])
    return pd.concat(frames, ignore_index=True)


def to_xarray(data: Iterable[SeriesData]):
    """Scalar series on one time axis: value, uncertainty and flag as (series, time) arrays, NaN/9 where a
    series has no value at a time; the series key as coordinates along `series`. Spectra are left out."""
    xr = _need("xarray", "test")
    series = [s for s in data if len(s) and s.spectra is None]
    times = np.unique(np.concatenate([s.time_ns for s in series])) if series else np.empty(0, dtype=np.int64)
    shape = (len(series), len(times))
    value, unc = np.full(shape, np.nan), np.full(shape, np.nan)
    flag = np.full(shape, int(QualityFlag.MISSING), dtype=np.uint8)
    for i, s in enumerate(series):
        at = np.searchsorted(times, s.time_ns)
        value[i, at], unc[i, at], flag[i, at] = s.value, s.uncertainty, s.flag
    coords = {"time": times.astype("datetime64[ns]"),
              **{name: ("series", [getattr(s, name) for s in series]) for name in ("site", "gateway", "probe",
                                                                                    "quantity")},
              "depth_cm": ("series", [math.nan if s.depth_cm is None else s.depth_cm for s in series]),
              "source": ("series", [s.source.value for s in series]),
              "unit": ("series", [next((u for u in s.unit if u), "") for s in series])}
    ds = xr.Dataset({"value": (("series", "time"), value), "uncertainty": (("series", "time"), unc),
                     "flag": (("series", "time"), flag)}, coords=coords)
    ds["flag"].attrs.update(flag_values=FLAG_VALUES, flag_meanings=FLAG_MEANINGS)
    return ds
