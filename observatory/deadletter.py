"""Ingest bookkeeping on a local SQLite file: dead letters and received batch numbers.

The ingest worker keeps this file beside itself whatever the main store is
(SQLite archive or InfluxDB), so rejected messages and sequence numbers
survive restarts. Both classes may point at the same file, and several
worker processes may share it (WAL, busy timeout, bounded retries). The
same file holds the revised observations (observatory.revisions).

API (agreed with the ingest worker)::

    letters = DeadLetters("state/ingest.sqlite")
    letters.add(topic, payload_bytes, reason="bad_schema", detail="seq is not ...")
    letters.count() -> int ; letters.count_by_reason() -> {"bad_schema": 3, ...}
    letters.recent(limit=100) -> list[DeadLetter]          # newest first

    ledger = BatchLedger("state/ingest.sqlite")
    ledger.seen(site, gateway, seq) -> bool                 # already stored? drop it
    ledger.record(site, gateway, seq)                       # AFTER the store accepted it
    ledger.record_many(site, gateway, [seq, ...])
    ledger.gaps(site, gateway) -> list[tuple[int, int]]     # missing [first, last] ranges
    ledger.gateways() -> list[tuple[str, str]]

Record a batch only once the store has durably written it: a crash between
the write and the record then redelivers a batch that the idempotent store
absorbs; recording first would lose it. Sequence numbers are kept as merged
ranges, so a gateway sending for years costs a few rows, not one per batch.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from observatory.store import StoreError, StoreUnavailable

BUSY_TIMEOUT_S = 10.0
RETRIES = 3
RANGES_KEYS_PER_QUERY = 400
"""2 parameters each: well under SQLite's 999 host parameters per statement before 3.32."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    received_ns INTEGER NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letter_reason ON dead_letter(reason);
CREATE TABLE IF NOT EXISTS batch_range (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verified_range (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (site, gateway, first_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

MAX_STORED_PAYLOAD = 4 * 1024 * 1024
"""A dead letter keeps at most this many bytes of the payload (wire.MAX_PAYLOAD_BYTES)."""


def safe_text(text: object) -> str:
    """`text` as a string SQLite can store: lone surrogates (which UTF-8 cannot encode) become `\\udXXX`."""
    s = text if isinstance(text, str) else str(text)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    received_ns: int
    topic: str
    reason: str
    detail: str
    payload: bytes


def connect(path: str | Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open a SQLite file for several writer processes: WAL, FULL sync, busy timeout.

    synchronous=FULL in WAL mode syncs the log at each commit, so a committed
    transaction survives a power cut (sqlite.org/pragma.html#pragma_synchronous);
    NORMAL would only survive an application crash.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise StoreError(f"directory {path.parent} does not exist (for SQLite file {path.name})")
    try:
        con = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        # Switching a new file to WAL takes an exclusive lock that the busy
        # timeout does not cover: two workers creating the file at once collide.
        for attempt in range(RETRIES):
            try:
                con.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt + 1 == RETRIES:
                    raise
                time.sleep(0.05 * 4 ** attempt)
        con.execute("PRAGMA synchronous=FULL")
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise StoreUnavailable(f"{path}: locked by another process for {busy_timeout_s:g} s ({e})") from None
        raise StoreError(f"{path}: cannot open it as SQLite ({e})") from None
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a usable SQLite file ({e})") from None
    return con


def run_write(con: sqlite3.Connection, what: str, fn, *args):
    """Run `fn(con, *args)` in one IMMEDIATE transaction with bounded retries on a busy lock.

    IMMEDIATE takes the write lock up front, so two writers never deadlock
    upgrading read locks (sqlite.org/lang_transaction.html).
    """
    delay = 0.05
    for attempt in range(RETRIES):
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                result = fn(con, *args)
                con.execute("COMMIT")
                return result
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as e:
            msg = str(e)
            if "locked" in msg or "busy" in msg:
                if attempt + 1 < RETRIES:
                    time.sleep(delay)
                    delay *= 4
                    continue
                raise StoreUnavailable(f"{what}: database stayed locked for {RETRIES} tries ({msg})") from None
            if "disk is full" in msg or "disk I/O" in msg:
                raise StoreUnavailable(f"{what}: {msg}; free disk space and retry") from None
            raise StoreError(f"{what}: {msg}") from None
    raise AssertionError("unreachable")


class _StateFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._con = connect(self.path)
        run_write(self._con, f"{self.path}: create tables", _create)

    def close(self) -> None:
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _create(con: sqlite3.Connection) -> None:
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            con.execute(stmt)


class DeadLetters(_StateFile):
    """Rejected messages with their reason and raw bytes, for a person to inspect."""

    def add(self, topic: str, payload: bytes, reason: str, detail: str = "", received_ns: int | None = None) -> None:
        """Keep one rejected message. Takes anything: the message may be refused precisely because its
        text cannot be stored (a lone surrogate), so text is made storable and the payload kept as bytes."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "backslashreplace")
        row = (received_ns if received_ns is not None else time.time_ns(), safe_text(topic), safe_text(reason),
               safe_text(detail), bytes(payload[:MAX_STORED_PAYLOAD]))
        run_write(self._con, f"{self.path}: dead letter",
                  lambda c: c.execute("INSERT INTO dead_letter(received_ns, topic, reason, detail, payload) "
                                      "VALUES (?,?,?,?,?)", row))

    def count(self) -> int:
        return self._con.execute("SELECT count(*) FROM dead_letter").fetchone()[0]

    def count_by_reason(self) -> dict[str, int]:
        return dict(self._con.execute("SELECT reason, count(*) FROM dead_letter GROUP BY reason ORDER BY reason"))

    def recent(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._con.execute("SELECT id, received_ns, topic, reason, detail, payload FROM dead_letter "
                                 "ORDER BY id DESC LIMIT ?", (limit,))
        return [DeadLetter(*r) for r in rows]


class BatchLedger(_StateFile):
    """Which batch sequence numbers each gateway's batches were stored under."""

    def ledger_id(self) -> str:
        """A random id of this state file, made on first call: the workers sharing the file share it
        (observatory.ledgershare ignores news from its own file)."""
        run_write(self._con, f"{self.path}: ledger id", lambda c: c.execute(
            "INSERT OR IGNORE INTO state_meta(key, value) VALUES ('ledger_id', ?)", (secrets.token_hex(16),)))
        return self._con.execute("SELECT value FROM state_meta WHERE key='ledger_id'").fetchone()[0]

    def seen(self, site: str, gateway: str, seq: int) -> bool:
        row = self._con.execute(
            "SELECT 1 FROM batch_range WHERE site=? AND gateway=? AND first_seq<=? AND last_seq>=? LIMIT 1",
            (site, gateway, seq, seq)).fetchone()
        return row is not None

    def record(self, site: str, gateway: str, seq: int) -> None:
        self.record_many(site, gateway, (seq,))

    def record_many(self, site: str, gateway: str, seqs: Iterable[int]) -> None:
        seqs = sorted(set(int(s) for s in seqs))
        if seqs:
            run_write(self._con, f"{self.path}: record batches of {site}/{gateway}", self._merge, site, gateway, seqs)

    def record_batches(self, seqs: dict[tuple[str, str], Iterable[int]],
                       verified: dict[tuple[str, str], Iterable[int]] | None = None) -> None:
        """Record the batches of several gateways in one transaction (one fsync per store write);
        `verified`: those whose Ed25519 signature was verified (humus.signing), kept as ranges too."""
        def runs(d: dict) -> list:
            items = [(s, g, sorted({int(x) for x in v})) for (s, g), v in d.items()]
            return [it for it in items if it[2]]
        items, signed = runs(seqs), runs(verified or {})
        if items or signed:
            run_write(self._con, f"{self.path}: record batches of {len(items)} gateways",
                      lambda con: [*(self._merge(con, s, g, v) for s, g, v in items),
                                   *(self._merge(con, s, g, v, "verified_range") for s, g, v in signed)])

    def record_ranges(self, stored: dict[tuple[str, str], Iterable[tuple[int, int]]],
                      verified: dict[tuple[str, str], Iterable[tuple[int, int]]] | None = None) -> None:
        """Merge seq ranges that other workers stored (observatory.ledgershare), in one transaction."""
        items = [(s, g, sorted(r)) for (s, g), r in stored.items() if r]
        signed = [(s, g, sorted(r)) for (s, g), r in (verified or {}).items() if r]
        if items or signed:
            run_write(self._con, f"{self.path}: record the ranges of {len(items)} gateways stored by other workers",
                      lambda con: [*(self._merge_runs(con, s, g, r) for s, g, r in items),
                                   *(self._merge_runs(con, s, g, r, "verified_range") for s, g, r in signed)])

    def verified_ranges(self, site: str, gateway: str) -> list[tuple[int, int]]:
        """Seq ranges of the gateway's batches stored with a verified signature."""
        return [tuple(r) for r in self._con.execute(
            "SELECT first_seq, last_seq FROM verified_range WHERE site=? AND gateway=? ORDER BY first_seq",
            (site, gateway))]

    @staticmethod
    def _merge(con: sqlite3.Connection, site: str, gateway: str, seqs: list[int], table: str = "batch_range") -> None:
        # Fold the new numbers into runs, then merge each run with the stored
        # ranges it touches or adjoins.
        runs: list[list[int]] = []
        for s in seqs:
            if runs and s == runs[-1][1] + 1:
                runs[-1][1] = s
            else:
                runs.append([s, s])
        BatchLedger._merge_runs(con, site, gateway, runs, table)

    @staticmethod
    def _merge_runs(con: sqlite3.Connection, site: str, gateway: str, runs, table: str = "batch_range") -> None:
        for first, last in runs:
            touching = con.execute(
                f"SELECT first_seq, last_seq FROM {table} WHERE site=? AND gateway=? "
                "AND first_seq<=? AND last_seq>=?", (site, gateway, last + 1, first - 1)).fetchall()
            for f, l in touching:
                first, last = min(first, f), max(last, l)
            con.execute(f"DELETE FROM {table} WHERE site=? AND gateway=? AND first_seq<=? AND last_seq>=?",
                        (site, gateway, last, first))
            con.execute(f"INSERT INTO {table}(site, gateway, first_seq, last_seq) VALUES (?,?,?,?)",
                        (site, gateway, first, last))

    def ranges(self, site: str, gateway: str) -> list[tuple[int, int]]:
        return [tuple(r) for r in self._con.execute(
            "SELECT first_seq, last_seq FROM batch_range WHERE site=? AND gateway=? ORDER BY first_seq",
            (site, gateway))]

    def ranges_of(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[int, int]]]:
        """`ranges` of several gateways (site, gateway) in one query: under load, each query costs the
        ingest worker's main thread a wait for the GIL, so one per store write, not one per gateway."""
        keys = list(dict.fromkeys(keys))
        out: dict[tuple[str, str], list[tuple[int, int]]] = {k: [] for k in keys}
        for i in range(0, len(keys), RANGES_KEYS_PER_QUERY):
            part = keys[i:i + RANGES_KEYS_PER_QUERY]
            rows = self._con.execute(
                "SELECT site, gateway, first_seq, last_seq FROM batch_range WHERE (site, gateway) IN (VALUES "
                + ",".join(["(?,?)"] * len(part)) + ") ORDER BY site, gateway, first_seq",
                [x for k in part for x in k]).fetchall()
            for site, gateway, first, last in rows:
                out[(site, gateway)].append((first, last))
        return out

    def gaps(self, site: str, gateway: str) -> list[tuple[int, int]]:
        """Missing sequence numbers between the lowest and highest stored, as [first, last] ranges."""
        r = self.ranges(site, gateway)
        return [(a[1] + 1, b[0] - 1) for a, b in zip(r, r[1:])]

    def gateways(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._con.execute("SELECT DISTINCT site, gateway FROM batch_range ORDER BY 1, 2")]
