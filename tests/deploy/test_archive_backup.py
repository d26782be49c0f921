"""`humus archive backup`: a consistent copy of a live WAL archive while another process writes."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap

from deploy_support import REPO, humus
from humus.records import Observation, QualityFlag, Source
from observatory.store import Selection
from observatory.stores.sqlite import SqliteStore

T0 = 1_790_000_000_000_000_000


def _obs(i: int) -> Observation:
    return Observation(site="farm-1", gateway="gw-1", probe="p1", quantity="vwc", time_ns=T0 + i * 1_000_000_000,
                       value=i / 1000, unit="m3/m3", flag=QualityFlag.PASS, source=Source.RAW, depth_cm=10.0)


WRITER = textwrap.dedent("""
    import sys
    from humus.records import Observation, QualityFlag, Source
    from observatory.stores.sqlite import SqliteStore
    store = SqliteStore({path!r})
    i = 1000
    print("writing", flush=True)
    while sys.stdin.readline().strip() != "stop":    # one batch per line asked for
        store.write([Observation(site="farm-1", gateway="gw-1", probe="p1", quantity="vwc",
                                 time_ns={t0} + (i + k) * 1_000_000_000, value=(i + k) / 1000, unit="m3/m3",
                                 flag=QualityFlag.PASS, source=Source.RAW, depth_cm=10.0) for k in range(100)])
        i += 100
        print(i, flush=True)
    store.close()
""")



def test_backup_of_a_live_archive_is_consistent_self_contained_and_private(tmp_path):
    path = tmp_path / "archive.sqlite"
    store = SqliteStore(path)
    store.write([_obs(i) for i in range(1000)])
    store.close()
    (tmp_path / "backups").mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(t0=T0, path=str(path))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert writer.stdout.readline().strip() == "writing"
        for _ in range(5):                    # the writer has committed batches still in the WAL
            writer.stdin.write("go\n")
            writer.stdin.flush()
            writer.stdout.readline()
        r = humus("archive", "backup", f"sqlite:{path}", str(tmp_path / "backups"))
        writer.stdin.write("go\n")            # and keeps writing after it
        writer.stdin.flush()
        writer.stdout.readline()
    finally:
        writer.stdin.write("stop\n")
        writer.stdin.flush()
        writer.wait(30)
    copy = tmp_path / "backups" / "archive.sqlite"
    assert "backed up" in r.stdout
    assert stat.S_IMODE(copy.stat().st_mode) == 0o640
    assert not (tmp_path / "backups" / "archive.sqlite-wal").exists()
    con = sqlite3.connect(copy)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    got = list(SqliteStore(copy, create=False).query(Selection(probe="p1")))
    assert len(got) == 1000 + 5 * 100   # a snapshot: every batch committed before it (WAL included), none after


def test_a_naive_copy_of_the_main_file_misses_what_is_still_in_the_wal(tmp_path):
    """Why the command exists: `cp archive.sqlite` while ingest has the file open loses committed data."""
    path = tmp_path / "archive.sqlite"
    store = SqliteStore(path)
    store.write([_obs(i) for i in range(500)])
    try:
        (tmp_path / "naive.sqlite").write_bytes(path.read_bytes())
        humus("archive", "backup", str(path), str(tmp_path / "proper.sqlite"))
    finally:
        store.close()
    naive = sqlite3.connect(tmp_path / "naive.sqlite")
    try:
        n_naive = naive.execute("SELECT count(*) FROM observation").fetchone()[0]
    except sqlite3.DatabaseError:
        n_naive = 0
    naive.close()
    assert n_naive < 500
    assert len(list(SqliteStore(tmp_path / "proper.sqlite", create=False).query(Selection()))) == 500


def test_backup_refuses_to_overwrite_its_source_and_names_a_missing_one(tmp_path):
    path = tmp_path / "a.sqlite"
    SqliteStore(path).close()
    r = humus("archive", "backup", str(path), str(path), check=False)
    assert r.returncode == 1 and "must not overwrite its source" in r.stderr
    r = humus("archive", "backup", str(tmp_path / "nope.sqlite"), str(tmp_path / "b.sqlite"), check=False)
    assert r.returncode == 1 and "no such SQLite file" in r.stderr and "Traceback" not in r.stderr
    r = humus("archive", "backup", str(path), str(tmp_path / "no-dir" / "b.sqlite"), check=False)
    assert r.returncode == 1 and "check the destination directory" in r.stderr and "Traceback" not in r.stderr
