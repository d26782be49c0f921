"""The embedded SQLite archive (`sqlite:PATH`): the default store, no server needed.

Layout (schema version 1, kept in table `meta`):

- `series`: one row per series key (site, gateway, probe, depth, quantity,
  source), so observations carry a small integer instead of six strings.
- `observation`: primary key (series_id, time_ns), WITHOUT ROWID, so a
  series' time range is one index range scan and a rewrite of the same
  series and time replaces the row (INSERT OR REPLACE: last write wins).
  Missing values are NULL (SQLite stores NaN as NULL anyway).
- `label`: each distinct (unit, flag_test, model_id, model_version) once;
  observations carry its id, so a year of one probe does not repeat its
  unit and test names a million times, and queries read integers.
- `observation.signed`: 1 where the row was written from a batch whose
  Ed25519 signature ingest verified against the gateway's registered key
  (docs/wire.md, "Signed batches"), NULL otherwise; a later copy of the
  point replaces it with its own batch's status. Archives made before it
  get the column (ALTER TABLE ... ADD COLUMN, WITHOUT ROWID allows it) on
  the first writable open; a read-only open (`create=False`, queries) of
  such an archive changes nothing and reads the status as unknown (None).
- `axis`: each distinct wavelength axis once (float64 blob, keyed by its
  SHA-256); spectra are float64 blobs pointing at their axis, so they come
  back bit for bit.

Durability: WAL with synchronous=FULL, one transaction per `write()`, so
what `write()` returned survives a power cut, at one fsync per batch.
Several processes may write the same file: BEGIN IMMEDIATE, a busy timeout
and bounded retries (observatory.deadletter.run_write).

Errors of a write: the data's fault (a lone surrogate in a string, an
integer past 64 bits, a constraint) raises StoreRejected; a lock held too
long or a full disk, StoreUnavailable; the file's fault (read-only, not a
database), StoreError.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from humus.obsrows import groups
from humus.records import Observation, Source
from observatory.deadletter import BUSY_TIMEOUT_S, connect, run_write
from observatory.store import (Selection, SeriesData, StoreError, StoreRejected, observations_of,
                               series_sort_key)

SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY,
        site TEXT NOT NULL, gateway TEXT NOT NULL, probe TEXT NOT NULL,
        depth_key TEXT NOT NULL, depth_cm REAL,
        quantity TEXT NOT NULL, source TEXT NOT NULL,
        has_spectra INTEGER NOT NULL DEFAULT 0,
        UNIQUE (site, gateway, probe, depth_key, quantity, source))""",
    "CREATE INDEX IF NOT EXISTS series_probe ON series(probe, quantity)",
    "CREATE INDEX IF NOT EXISTS series_quantity ON series(quantity, source)",
    """CREATE TABLE IF NOT EXISTS label (
        id INTEGER PRIMARY KEY, unit TEXT NOT NULL, flag_test TEXT NOT NULL,
        model_id TEXT NOT NULL, model_version TEXT NOT NULL,
        UNIQUE (unit, flag_test, model_id, model_version))""",
    """CREATE TABLE IF NOT EXISTS axis (
        id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, wavelengths BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS observation (
        series_id INTEGER NOT NULL REFERENCES series(id),
        time_ns INTEGER NOT NULL,
        value REAL, uncertainty REAL, flag INTEGER NOT NULL,
        label_id INTEGER NOT NULL REFERENCES label(id),
        spectrum BLOB, axis_id INTEGER REFERENCES axis(id),
        signed INTEGER,
        PRIMARY KEY (series_id, time_ns)) WITHOUT ROWID""",
)

_COLUMNS = "time_ns, value, uncertainty, flag, label_id, spectrum, axis_id"
_INSERT = {signed: f"INSERT OR REPLACE INTO observation(series_id, {_COLUMNS}, signed) "
                   f"VALUES (?,?,?,?,?,?,?,?,{'1' if signed else 'NULL'})" for signed in (False, True)}
"""Per signed status of a group of rows: the status is in the statement, not bound once per row."""

_DATA_ERRORS = (UnicodeError, OverflowError, TypeError, ValueError, sqlite3.IntegrityError, sqlite3.DataError,
                sqlite3.InterfaceError, sqlite3.ProgrammingError)
"""Errors that this data causes and would cause again (a lone surrogate, an integer past 64 bits, a type
SQLite cannot bind, a constraint): the write is refused (StoreRejected), not retried as an outage.
sqlite3.ProgrammingError counts only for "Error binding parameter" (it also means a closed connection)."""
_SCALAR_COLUMNS = "time_ns, value, uncertainty, flag, label_id"


_SOURCE_TEXT = {"raw": "raw", "calibrated": "calibrated"}  # Source members hash and compare as their value


def _depth_key(depth: float | None) -> str:
    return "" if depth is None else repr(float(depth))


def _axis_hash(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


class SqliteStore:
    """Store backend on one SQLite file; see the module docstring for the layout."""

    def __init__(self, path: str | Path, create: bool = True, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"no archive at {self.path} (expected a SQLite file written by 'humus ingest' or 'humus demo')")
        self._con = connect(self.path, busy_timeout_s)
        self._series: dict[tuple[str, str], dict[tuple, int]] = {}  # per site/gateway
        self._axes: dict[str, int] = {}
        self._labels: dict[tuple, int] = {}
        self._spectral: set[int] = set()
        self._axis_values: dict[int, np.ndarray] = {}
        self._signed_column = True
        """observation.signed exists (False: an older archive not yet written by this humus)."""
        try:
            version = self._schema_version()
        except sqlite3.DatabaseError as e:
            self._con.close()
            raise StoreError(f"{self.path}: not a Humus archive ({e})") from None
        if version is None:
            if not create:
                self._con.close()
                raise StoreError(f"{self.path}: not a Humus archive (no meta table)")
            run_write(self._con, f"{self.path}: create schema", self._create)
        elif version != SCHEMA_VERSION:
            self._con.close()
            raise StoreError(f"{self.path}: archive schema version {version}, this humus reads version {SCHEMA_VERSION}")
        else:
            self._signed_column = self._has_signed_column(self._con)
            if not self._signed_column and create:
                try:
                    self._add_signed_column()
                except StoreError:
                    pass  # a read-only file or a long lock: read as unknown; a write tries again

    @staticmethod
    def _has_signed_column(con: sqlite3.Connection) -> bool:
        return any(row[1] == "signed" for row in con.execute("PRAGMA table_info(observation)"))

    def _add_signed_column(self) -> None:
        """Give an archive from before `observation.signed` the column (its rows read as not signed)."""
        def add(con: sqlite3.Connection) -> None:
            if not self._has_signed_column(con):  # another process may have added it meanwhile
                con.execute("ALTER TABLE observation ADD COLUMN signed INTEGER")
        run_write(self._con, f"{self.path}: add column observation.signed", add)
        self._signed_column = True

    def _schema_version(self) -> int | None:
        row = self._con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if row is None:
            return None
        row = self._con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None

    @staticmethod
    def _create(con: sqlite3.Connection) -> None:
        for stmt in _SCHEMA:
            con.execute(stmt)
        con.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    # -- writing -----------------------------------------------------------

    def write(self, observations: Sequence[Observation]) -> None:
        if not observations:
            return
        what = f"{self.path}: write {len(observations)} observations"
        if not self._signed_column:
            self._add_signed_column()
        try:
            run_write(self._con, what, self._write, observations)
        except BaseException as e:
            # Ids cached during a transaction that rolled back would point nowhere.
            self._forget_ids()
            if isinstance(e, _DATA_ERRORS) and not (isinstance(e, sqlite3.ProgrammingError)
                                                     and "binding" not in str(e)):
                raise StoreRejected(f"{what}: SQLite cannot store this data ({type(e).__name__}: "
                                    f"{str(e)[:200]}); expected UTF-8 text and 64-bit integers") from None
            raise

    def _forget_ids(self) -> None:
        self._series.clear()
        self._axes.clear()
        self._labels.clear()
        self._spectral.clear()

    def _series_id(self, con: sqlite3.Connection, site: str, gateway: str, r, cache: dict, key: tuple) -> int:
        source = _SOURCE_TEXT[r.source]
        row = (site, gateway, r.probe, _depth_key(r.depth_cm), r.depth_cm, r.quantity, source)
        con.execute("INSERT OR IGNORE INTO series(site, gateway, probe, depth_key, depth_cm, quantity, source) "
                    "VALUES (?,?,?,?,?,?,?)", row)
        sid = con.execute("SELECT id FROM series WHERE site=? AND gateway=? AND probe=? AND depth_key=? "
                          "AND quantity=? AND source=?", row[:4] + row[5:]).fetchone()[0]
        cache[key] = sid
        return sid

    def _label_id(self, con: sqlite3.Connection, key: tuple) -> int:
        row = (key[0], key[1] or "", key[2] or "", key[3] or "")
        con.execute("INSERT OR IGNORE INTO label(unit, flag_test, model_id, model_version) VALUES (?,?,?,?)", row)
        lid = con.execute("SELECT id FROM label WHERE unit=? AND flag_test=? AND model_id=? AND model_version=?",
                          row).fetchone()[0]
        self._labels[key] = lid
        return lid

    def _axis_id(self, con: sqlite3.Connection, wavelengths: Sequence[float]) -> int:
        blob = np.asarray(wavelengths, dtype="<f8").tobytes()
        digest = _axis_hash(blob)
        aid = self._axes.get(digest)
        if aid is None:
            con.execute("INSERT OR IGNORE INTO axis(sha256, wavelengths) VALUES (?, ?)", (digest, blob))
            aid = con.execute("SELECT id FROM axis WHERE sha256=?", (digest,)).fetchone()[0]
            self._axes[digest] = aid
        return aid

    def _write(self, con: sqlite3.Connection, observations: Sequence[Observation]) -> None:
        # Rows as decoded (humus.obsrows) or Observations: the same attribute names.
        rows: list[tuple] = []
        add = rows.append
        status = False
        labels = self._labels
        for site, gateway, items, signed in groups(observations):
            if signed is not status:  # rows go in order: those before, under their own status
                if rows:
                    con.executemany(_INSERT[status], rows)
                    rows = []
                    add = rows.append
                status = signed
            series = self._series.get((site, gateway))
            if series is None:
                series = self._series[(site, gateway)] = {}
            for r in items:
                key = (r.probe, r.depth_cm, r.quantity, r.source)
                sid = series.get(key) or self._series_id(con, site, gateway, r, series, key)
                lkey = (r.unit, r.flag_test, r.model_id, r.model_version)
                lid = labels.get(lkey) or self._label_id(con, lkey)
                v = r.value
                spectrum = axis = None
                if v.__class__ is float:
                    value = v if v == v else None  # NaN: missing
                elif v is None:
                    value = None
                elif isinstance(v, (tuple, list)):
                    value, spectrum = None, np.asarray(v, dtype="<f8").tobytes()
                    axis = self._axis_id(con, r.wavelengths_nm)
                    if sid not in self._spectral:
                        con.execute("UPDATE series SET has_spectra=1 WHERE id=?", (sid,))
                        self._spectral.add(sid)
                else:
                    value = float(v)
                    value = None if math.isnan(value) else value
                add((sid, r.time_ns, value, r.uncertainty, int(r.flag), lid, spectrum, axis))
        con.executemany(_INSERT[status], rows)

    # -- reading -----------------------------------------------------------

    def _matching_series(self, sel: Selection) -> list[tuple]:
        where, args = [], []
        for name in ("site", "gateway", "probe", "quantity"):
            v = getattr(sel, name)
            if v is not None:
                where.append(f"{name}=?")
                args.append(v)
        if sel.source is not None:
            where.append("source=?")
            args.append(Source(sel.source).value)
        sql = "SELECT id, site, gateway, probe, depth_cm, quantity, source, has_spectra FROM series"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._con.execute(sql, args).fetchall()
        return sorted(rows, key=lambda r: series_sort_key(r[1:7]))

    def _axis(self, aid: int) -> np.ndarray:
        arr = self._axis_values.get(aid)
        if arr is None:
            blob = self._con.execute("SELECT wavelengths FROM axis WHERE id=?", (aid,)).fetchone()[0]
            arr = self._axis_values[aid] = np.frombuffer(blob, dtype="<f8")
        return arr

    def columns(self, selection: Selection) -> Iterator[SeriesData]:
        remaining = selection.limit
        labels = self._label_columns()
        for sid, site, gateway, probe, depth, quantity, source, spectral in self._matching_series(selection):
            if remaining is not None and remaining <= 0:
                return
            sql = (f"SELECT {_COLUMNS if spectral else _SCALAR_COLUMNS}{', signed' if self._signed_column else ''} "
                   "FROM observation WHERE series_id=?")
            args = [sid]
            if selection.since_ns is not None:
                sql += " AND time_ns>=?"
                args.append(selection.since_ns)
            if selection.until_ns is not None:
                sql += " AND time_ns<?"
                args.append(selection.until_ns)
            sql += " ORDER BY time_ns"
            if remaining is not None:
                sql += " LIMIT ?"
                args.append(remaining)
            rows = self._con.execute(sql, args).fetchall()
            if not rows:
                continue
            if remaining is not None:
                remaining -= len(rows)
            yield self._to_series((site, gateway, probe, depth, quantity, Source(source)), rows, labels)

    def _label_columns(self) -> list[np.ndarray]:
        """unit, flag_test, model_id, model_version as object arrays indexed by label id ("" -> None)."""
        rows = self._con.execute("SELECT id, unit, flag_test, model_id, model_version FROM label").fetchall()
        size = max((r[0] for r in rows), default=0) + 1
        cols = [np.full(size, None, dtype=object) for _ in range(4)]
        for lid, *values in rows:
            for c, v in zip(cols, values):
                c[lid] = v if v else None
        cols[0][[r[0] for r in rows]] = [r[1] for r in rows]  # a unit may be "" and stays ""
        return cols

    def _to_series(self, key: tuple, rows: list[tuple], labels: list[np.ndarray]) -> SeriesData:
        columns = list(zip(*rows))
        signed = np.array(columns.pop(), dtype=np.float64) == 1 if self._signed_column else None  # NULL: nan
        t, v, u, f, lab = columns[:5]
        spectra = wavelengths = None
        if len(columns) > 5 and any(s is not None for s in columns[5]):
            spectra = [None if s is None else np.frombuffer(s, dtype="<f8") for s in columns[5]]
            wavelengths = [None if a is None else self._axis(a) for a in columns[6]]
        lab = np.array(lab, dtype=np.intp)
        unit, flag_test, model_id, model_version = (c[lab] for c in labels)
        return SeriesData(*key, time_ns=np.array(t, dtype=np.int64), value=np.array(v, dtype=np.float64),
                          uncertainty=np.array(u, dtype=np.float64), flag=np.array(f, dtype=np.uint8),
                          unit=unit, flag_test=flag_test, model_id=model_id, model_version=model_version,
                          spectra=spectra, wavelengths=wavelengths, signed=signed)

    def query(self, selection: Selection) -> Iterable[Observation]:
        for data in self.columns(selection):
            yield from observations_of(data)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "SqliteStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
