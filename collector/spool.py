"""The durable on-disk spool between acquisition and the broker (SQLite in WAL mode).

Life of an observation, each step one SQLite transaction:

1. `append`: the observations of one poll are inserted into ``obs`` in one
   transaction; with ``synchronous=FULL`` the commit is the one fsync of that
   poll (never one per observation). Only then are they published.
2. `form_batch`: the oldest unsent rows (live or backlog, see below) move
   into ``batches`` as one encoded MQTT payload under the next per-gateway
   sequence number, in one fsync'ed transaction that also advances the
   persisted counter. From then on that seq always carries exactly that
   payload: after a crash it is republished byte for byte, so the ingest side
   drops duplicates by (gateway, seq).
3. `ack`: after the broker's PUBACK the batch row is deleted. These commits
   run with ``synchronous=NORMAL``: losing one at a power cut only republishes
   a batch (a duplicate, dropped by ingest), never loses one.

SQLite guarantees atomic, durable commits across a kill -9 or a power cut in
WAL mode with synchronous=FULL (https://www.sqlite.org/wal.html, "Durability";
https://www.sqlite.org/pragma.html#pragma_synchronous), so every observation
is either before step 1 (never acknowledged to anyone) or safely on disk.

Disk quota (docs/collector.md, "Disk quota"): the spool counts the bytes of
stored observation and batch payloads; when an append would pass
`quota_bytes`, the oldest unsent observations are dropped first (then the
oldest formed batches), the drop is counted in ``meta.dropped_by_quota`` and
reported in the heartbeat, and an alert is raised by the collector.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from humus.records import Observation
from humus.wire import SCHEMA, observation_to_dict

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS obs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    n INTEGER NOT NULL,
    oldest_ns INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS qc_state (series TEXT PRIMARY KEY, state TEXT NOT NULL);
"""


class SpoolError(Exception):
    """The spool file cannot be used (disk, permissions, corruption); the message says what to check."""


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    seq: int
    n: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    unsent_observations: int    # rows not yet in a batch
    pending_batches: int        # batches formed, not yet acknowledged
    pending_batch_observations: int
    bytes: int
    quota_bytes: int
    oldest_unsent_ns: int | None
    dropped_by_quota: int
    next_seq: int

    @property
    def depth(self) -> int:
        """Observations on disk not yet acknowledged by the broker."""
        return self.unsent_observations + self.pending_batch_observations


class Spool:
    """One gateway's spool file; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path, *, site: str, gateway: str, quota_bytes: int) -> None:
        self.path = Path(path)
        self.site, self.gateway = site, gateway
        self.quota_bytes = int(quota_bytes)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                       timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA_SQL)
            self._bytes = self._db.execute(
                "SELECT (SELECT COALESCE(SUM(LENGTH(body)), 0) FROM obs) + "
                "(SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM batches)").fetchone()[0]
        except (sqlite3.Error, OSError) as e:
            raise SpoolError(f"spool {self.path}: cannot open ({e}); check the disk, the directory's "
                             "permissions, or move a corrupt file aside") from None
        self._head = f'{{"schema":"{SCHEMA}","site":"{site}","gateway":"{gateway}","seq":'
        self.dropped_in_last_append = 0

    # -- meta counters ---------------------------------------------------------
    def _meta(self, key: str, default: int = 0) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, value))

    # -- 1. append -------------------------------------------------------------
    def append(self, observations: Sequence[Observation], qc_state: dict[str, str] | None = None) -> None:
        """Store one poll's observations (and the QC state they advanced) in one durable transaction."""
        rows = [(o.time_ns, json.dumps(observation_to_dict(o), separators=(",", ":"), allow_nan=False))
                for o in observations]
        size = sum(len(b) for _, b in rows)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._make_room(size)
                self._db.executemany("INSERT INTO obs(time_ns, body) VALUES (?, ?)", rows)
                if qc_state:
                    self._db.executemany(
                        "INSERT INTO qc_state(series, state) VALUES (?, ?) "
                        "ON CONFLICT(series) DO UPDATE SET state = excluded.state", qc_state.items())
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes += size - dropped[1]
            self.dropped_in_last_append = dropped[0]

    def _make_room(self, size: int) -> tuple[int, int]:
        """Drop the oldest unsent data until `size` more bytes fit the quota; (observations, bytes) dropped."""
        excess = self._bytes + size - self.quota_bytes
        if excess <= 0:
            return 0, 0
        n_obs = n_bytes = 0
        while excess > 0:
            rows = self._db.execute("SELECT id, LENGTH(body) FROM obs ORDER BY id LIMIT 500").fetchall()
            if rows:
                cut, freed, k = rows[-1][0], 0, 0
                for rid, ln in rows:
                    freed += ln
                    k += 1
                    if freed >= excess:
                        cut = rid
                        break
                self._db.execute("DELETE FROM obs WHERE id <= ?", (cut,))
            else:
                row = self._db.execute("SELECT seq, n, LENGTH(payload) FROM batches ORDER BY seq LIMIT 1").fetchone()
                if row is None:
                    break   # a single poll larger than the whole quota: keep it anyway
                self._db.execute("DELETE FROM batches WHERE seq = ?", (row[0],))
                k, freed = row[1], row[2]
            n_obs += k
            n_bytes += freed
            excess -= freed
        self._set_meta("dropped_by_quota", self._meta("dropped_by_quota") + n_obs)
        return n_obs, n_bytes

    # -- 2. batches ------------------------------------------------------------
    def max_obs_id(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(id), 0) FROM obs").fetchone()[0]

    def form_batch(self, *, max_obs: int, max_bytes: int, after_id: int = 0, up_to_id: int | None = None,
                   sent_ns: int | None = None) -> SpooledBatch | None:
        """Move the oldest unsent rows with after_id < id <= up_to_id into a new numbered batch."""
        budget = max_bytes - len(self._head) - 80
        with self._lock:
            q = "SELECT id, time_ns, body FROM obs WHERE id > ?" + (" AND id <= ?" if up_to_id is not None else "")
            args = (after_id,) if up_to_id is None else (after_id, up_to_id)
            rows = self._db.execute(q + " ORDER BY id LIMIT ?", (*args, max_obs)).fetchall()
            if not rows:
                return None
            bodies, used = [], 0
            for _, _, body in rows:
                if bodies and used + len(body) + 1 > budget:
                    break
                bodies.append(body)
                used += len(body) + 1
            taken = rows[:len(bodies)]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._meta("next_seq", 1)
                ts = time.time_ns() if sent_ns is None else sent_ns
                payload = (f'{self._head}{seq},"sent_ns":{ts},"observations":[' + ",".join(bodies) + "]}").encode()
                oldest = min(t for _, t, _ in taken)
                self._db.execute("INSERT INTO batches(seq, n, oldest_ns, payload) VALUES (?, ?, ?, ?)",
                                 (seq, len(taken), oldest, payload))
                self._db.execute("DELETE FROM obs WHERE id >= ? AND id <= ?", (taken[0][0], taken[-1][0]))
                self._set_meta("next_seq", seq + 1)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._bytes += len(payload) - sum(len(b) for b in bodies)
            return SpooledBatch(seq, len(taken), payload)

    def pending_batches(self, after_seq: int = 0, limit: int = 100) -> list[SpooledBatch]:
        """Formed, unacknowledged batches (republished after a restart), oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, n, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after_seq, limit)).fetchall()
        return [SpooledBatch(s, n, bytes(p)) for s, n, p in rows]

    # -- 3. acknowledgement ------------------------------------------------------
    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged batches (one transaction, no fsync of its own); how many were deleted."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                freed = n = 0
                for s in seqs:
                    row = self._db.execute("SELECT LENGTH(payload) FROM batches WHERE seq = ?", (s,)).fetchone()
                    if row:
                        self._db.execute("DELETE FROM batches WHERE seq = ?", (s,))
                        freed += row[0]
                        n += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
            self._bytes -= freed
            return n

    # -- state and status -----------------------------------------------------------
    def qc_state(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT series, state FROM qc_state").fetchall())

    def stats(self) -> SpoolStats:
        with self._lock:
            n_obs, oldest_obs = self._db.execute("SELECT COUNT(*), MIN(time_ns) FROM obs").fetchone()
            n_b, n_bo, oldest_b = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(n), 0), MIN(oldest_ns) FROM batches").fetchone()
            oldest = min([t for t in (oldest_obs, oldest_b) if t is not None], default=None)
            return SpoolStats(n_obs, n_b, n_bo, self._bytes, self.quota_bytes, oldest,
                              self._meta("dropped_by_quota"), self._meta("next_seq", 1))

    def set_quota(self, quota_bytes: int) -> None:
        self.quota_bytes = int(quota_bytes)

    def close(self) -> None:
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            self._db.close()
