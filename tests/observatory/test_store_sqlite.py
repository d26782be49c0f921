"""What the SQLite archive adds to the contract: files, schema, durability, several writers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from humus.records import Observation, QualityFlag
from observatory.store import Selection, StoreError
from observatory.stores import open_store
from observatory.stores.sqlite import SCHEMA_VERSION, SqliteStore

T0 = 1_767_225_600_000_000_000
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def obs(probe: str, i: int, value: float = 0.3) -> Observation:
    return Observation("site-a", "gw-1", probe, "vwc", T0 + i * 10**9, value, "m3/m3", depth_cm=20.0,
                       flag=QualityFlag.PASS)


def spectrum(i: int) -> Observation:
    return Observation("site-a", "gw-1", "nir", "reflectance", T0 + i, (0.1 * i, 0.2, 0.3), "1",
                       wavelengths_nm=(1400.0, 1900.0, 2200.0))


def test_archive_file_uses_wal_and_full_sync(tmp_path):
    path = tmp_path / "a.sqlite"
    store = SqliteStore(path)
    store.write([obs("p1", 0)])
    assert store._con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_a_wavelength_axis_is_stored_once_for_many_spectra(tmp_path):
    store = SqliteStore(tmp_path / "a.sqlite")
    store.write([spectrum(i) for i in range(1, 40)])
    store.write([spectrum(i) for i in range(40, 50)])
    assert store._con.execute("SELECT count(*) FROM axis").fetchone()[0] == 1
    got = list(store.query(Selection()))
    assert len(got) == 49 and got[0].wavelengths_nm == (1400.0, 1900.0, 2200.0) and got[3].value[0] == 0.1 * 4


def test_query_of_a_missing_archive_says_so_and_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match="no archive at"):
        open_store(f"sqlite:{tmp_path / 'nothing.sqlite'}", create=False)
    assert not (tmp_path / "nothing.sqlite").exists()


def test_a_file_that_is_not_an_archive_is_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="junk.sqlite"):
        open_store(f"sqlite:{junk}", create=False)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE x (y)")
    with pytest.raises(StoreError, match="not a Humus archive"):
        open_store(f"sqlite:{other}", create=False)


def test_an_archive_of_a_newer_schema_is_refused_not_rewritten(tmp_path):
    path = tmp_path / "a.sqlite"
    SqliteStore(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path)


def _writer(path: str, probe: str, batches: int) -> None:
    store = SqliteStore(path)
    for b in range(batches):
        store.write([obs(probe, b * 200 + i, value=float(i)) for i in range(200)])
    store.close()


def test_several_processes_writing_one_archive_lose_nothing(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    SqliteStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, f"p{k}", 15)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = SqliteStore(path)
    got = list(store.columns(Selection()))
    assert [s.probe for s in got] == ["p0", "p1", "p2"] and all(len(s) == 3000 for s in got)


def test_what_write_returned_survives_the_writer_being_killed(tmp_path):
    path = tmp_path / "a.sqlite"
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {REPO!r})
        from humus.records import Observation
        from observatory.stores.sqlite import SqliteStore
        s = SqliteStore({str(path)!r})
        for b in range(1000):
            s.write([Observation("s", "g", "p", "vwc", {T0} + b * 100 + i, 0.1, "m3/m3") for i in range(100)])
            print(b, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 20:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    (series,) = SqliteStore(path).columns(Selection())
    # Every batch whose write() returned is there, whole; at most the one in flight is extra.
    assert len(series) % 100 == 0 and len(series) >= (acknowledged + 1) * 100


def test_an_archive_locked_too_long_raises_store_unavailable_then_writes_when_free(tmp_path):
    from observatory.store import StoreUnavailable
    path = tmp_path / "a.sqlite"
    store = SqliteStore(path, busy_timeout_s=0.1)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    with pytest.raises(StoreUnavailable, match="locked"):
        store.write([obs("p1", 0)])
    other.execute("ROLLBACK")
    store.write([obs("p1", 0)])
    assert len(list(store.query(Selection()))) == 1

