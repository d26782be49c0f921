"""`humus archive migrate --store URL`: bring an archive written by an earlier Humus to the current layout.

InfluxDB, point layout 1 -> 2 (observatory.stores.lineprotocol; docs/stores.md, "Migration"):
every point of `humus_observation` and `humus_spectrum` is read back (one
streamed, chunked query per measurement), written again in layout 2
(`humus_obs`, `humus_obs_spectrum`), counted, and only when every point is
accounted for are the two old measurements dropped. A point that ingest
has meanwhile written in layout 2 for the same series and time is newer
and is kept: the old copy is skipped. So it can run while ingest runs, and
run again after an interruption (what it wrote is written again, the same).
Queries read both layouts until then (layout 2 winning), so the archive
answers throughout.

SQLite archive: schema version 1 is current (its layout already keeps
texts once, in the `label` table); nothing to do.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable

from observatory.store import StoreError
from observatory.stores import lineprotocol as lp
from observatory.stores.influx import result_chunks

CHUNK_ROWS = 10_000


@dataclass
class MigrationReport:
    store: str
    read: dict[str, int] = field(default_factory=dict)
    written: int = 0
    kept_newer: int = 0
    dropped: list[str] = field(default_factory=list)
    note: str = ""

    def lines(self) -> list[str]:
        if self.note:
            return [f"{self.store}: {self.note}"]
        out = [f"{self.store}: read {n} points of {m} (layout 1)" for m, n in self.read.items()]
        out.append(f"{self.store}: wrote {self.written} points in layout 2; kept {self.kept_newer} newer points "
                   "already written in layout 2")
        out += [f"{self.store}: dropped measurement {m}" for m in self.dropped]
        return out


@dataclass(slots=True)
class _Row:
    """A layout-1 point as a row for the layout-2 encoder (humus.obsrows attribute names)."""

    probe: str
    depth_cm: float | None
    quantity: str
    source: str
    unit: str
    model_id: str | None
    model_version: str | None
    time_ns: int
    value: object
    uncertainty: float | None
    flag: int
    flag_test: str | None
    wavelengths_nm: tuple | None = None


def migrate(url: str, keep_old: bool = False, progress: Callable[[str], None] | None = None) -> MigrationReport:
    """Migrate the archive at `url` to the current layout; see the module docstring."""
    from observatory.stores import open_store

    store = open_store(url, create=False)
    try:
        if not hasattr(store, "raw_query"):
            return MigrationReport(url.split("?", 1)[0], note="SQLite archive, schema version 1 is current; "
                                                              "nothing to migrate")
        return _migrate_influx(store, url.split("?", 1)[0], keep_old, progress or (lambda s: None))
    finally:
        store.close()


def _migrate_influx(store, where: str, keep_old: bool, progress: Callable[[str], None]) -> MigrationReport:
    report = MigrationReport(where)
    axes: dict[str, tuple] = {}
    for old in (lp.LEGACY_SCALAR, lp.LEGACY_SPECTRUM):
        what = f"migrate {old} of {where}"
        read = 0
        q = f'SELECT * FROM "{old}" GROUP BY *'
        for chunk in result_chunks(store.raw_query(q, what, chunked=True), what):
            for s in chunk:
                n, written, kept = _migrate_chunk(store, old, s.get("tags") or {}, s["columns"],
                                                  s.get("values") or [], axes, what)
                read += n
                report.written += written
                report.kept_newer += kept
            progress(f"{old}: {read} points so far")
        report.read[old] = read
    migrated = sum(report.read.values())
    if migrated != report.written + report.kept_newer:
        raise StoreError(f"migrate {where}: read {migrated} points but wrote {report.written} and kept "
                         f"{report.kept_newer}; the old measurements are left in place, run it again")
    if not keep_old:
        for old in (lp.LEGACY_SCALAR, lp.LEGACY_SPECTRUM):
            if report.read.get(old):
                list(store.raw_query(f'DROP MEASUREMENT "{old}"', f"drop {old} of {where}", chunked=False))
                report.dropped.append(old)
    return report


def _quote(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _migrate_chunk(store, old: str, tags: dict, columns: list[str], values: list[list], axes: dict,
                   what: str) -> tuple[int, int, int]:
    """Write one chunk of one layout-1 series in layout 2; (read, written, kept because newer)."""
    if not values:
        return 0, 0, 0
    site, gateway = tags.get("site"), tags.get("gateway")
    if not site or not gateway or not tags.get("probe") or not tags.get("quantity"):
        raise StoreError(f"{what}: a series without Humus tags ({tags}); remove it or migrate by hand")
    depth = float(tags["depth_cm"]) if tags.get("depth_cm") else None
    spectral = old == lp.LEGACY_SPECTRUM
    times = [r[0] for r in values]
    newer = _layout2_times(store, tags, depth, spectral, min(times), max(times), what)
    rows = []
    for r in values:
        f = dict(zip(columns, r))
        if f["time"] in newer:
            continue
        unc = f.get("uncertainty")
        row = _Row(tags["probe"], depth, tags["quantity"], tags.get("source") or "raw", f.get("unit") or "",
                   f.get("model_id") or None, f.get("model_version") or None, f["time"], None,
                   None if unc is None or unc < 0 else float(unc), int(f.get("flag") or 2), f.get("flag_test") or None)
        if spectral:
            n_bands = f.get("n_bands")
            row.value = tuple(lp.unpack_floats(lp.join_chunks(f, "values", lp.chunks_for(n_bands)
                                                               if n_bands is not None else None)).tolist())
            row.wavelengths_nm = _axis(store, f.get("axis"), axes, what)
        else:
            row.value = math.nan if f.get("missing") is True or f.get("value") is None else float(f["value"])
        rows.append(row)
    if rows:
        lines: list[str] = []
        axis_lines: dict = {}
        lp._encode_rows(site, gateway, rows, lines, axis_lines)
        store.write_lines(lines, f"{what}: write {len(lines)} points")
    return len(values), len(rows), len(values) - len(rows)


def _layout2_times(store, tags: dict, depth: float | None, spectral: bool, lo: int, hi: int, what: str) -> set[int]:
    """Times in [lo, hi] at which layout 2 already holds a point of this series (any unit or model)."""
    measurement = lp.SPECTRUM if spectral else lp.SCALAR
    where = [f'"{k}"={_quote(tags[k])}' for k in ("site", "gateway", "probe", "quantity", "source") if tags.get(k)]
    where.append(f'"depth_cm"={_quote(lp.depth_tag(depth))}' if depth is not None else "\"depth_cm\"=''")
    q = f'SELECT "flag" FROM "{measurement}" WHERE {" AND ".join(where)} AND time >= {lo} AND time <= {hi}'
    found: set[int] = set()
    for line in store.raw_query(q, what, chunked=True):
        if line.strip():
            for result in json.loads(line).get("results", ()):
                for s in result.get("series", ()):
                    found.update(r[0] for r in s.get("values") or ())
    return found


def _axis(store, digest: str | None, axes: dict, what: str) -> tuple:
    if not digest:
        raise StoreError(f"{what}: a spectrum without its axis digest")
    if digest not in axes:
        q = f'SELECT * FROM "{lp.AXIS}" WHERE "axis"={_quote(digest)} ORDER BY time DESC LIMIT 1'
        for line in store.raw_query(q, what, chunked=False):
            for result in json.loads(line).get("results", ()):
                for s in result.get("series", ()):
                    row = dict(zip(s["columns"], s["values"][0]))
                    axes[digest] = tuple(lp.unpack_floats(lp.join_chunks(row, "wavelengths")).tolist())
        if digest not in axes:
            raise StoreError(f"{what}: wavelength axis {digest[:12]}... of stored spectra not found")
    return axes[digest]
