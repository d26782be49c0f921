"""The durable on-disk spool between acquisition and the broker (SQLite in WAL mode).

Life of an observation, each step one SQLite transaction:

1. `append`: the observations of one poll are inserted into ``obs`` in one
   transaction; with ``synchronous=FULL`` the commit is the one fsync of that
   poll (never one per observation). Only then are they published. Appends
   of several threads (the pollers of several ports, polled in the same
   slot) share one transaction, a group commit: see "Group commit" below.
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

Disk quota and a full disk (docs/collector.md, "Disk quota and a full
disk"): the spool counts the bytes of stored observation and batch payloads
and holds at most

    payload bytes + PAYLOAD_PER_DISK_BYTE x min(quota room, disk room)

where the quota room is `quota_bytes` minus the file's pages in use, the
WAL's budget and the -shm index (so the quota is disk used, not payload),
and the disk room is the filesystem's free space plus the file's own free
pages (reused before the file grows), minus what the WAL may still grow and
a slack. When an append would pass that
limit the oldest unsent observations are dropped first (then the oldest
formed batches); `append` returns how many and why (``quota`` or
``disk_full``), the count is added to ``meta.dropped_by_quota`` in the same
transaction, and the collector logs and alerts.

The disk may still fill under the spool (another program's logs). So:

- a reserve file (`collector.disk_reserve`) holds room for draining; a
  `form_batch` or `ack` that fails with SQLITE_FULL releases the reserve,
  checkpoints the WAL and retries;
- an append that fails with SQLITE_FULL checkpoints the WAL and retries
  with more of the oldest data dropped (the freed pages are reused inside
  the same transaction); if that fails too, the checkpoint needs the file
  to grow: it releases the reserve and retries once more. If that fails,
  SpoolError says what to check and the collector counts the poll as not
  spooled;
- while the reserve is released the limit above still sets its room
  aside, so appends recycle the spool's own pages and the room stays for
  draining; the first append that finds space for it allocates it again;
- after a failed statement the transaction is rolled back only if SQLite
  has not already done so (it does for SQLITE_FULL,
  https://www.sqlite.org/lang_transaction.html, "Response To Errors Within A
  Transaction"), so the real error is what is reported.

Group commit: the first append to arrive leads a group; appends arriving
while it waits join it, those arriving while it commits form the next one
(one of them leads it once the commit is done). The leader waits (at most
`group_window_s`) for the writers that announced an append with `expect`
and have not yet made it (the pollers of other ports still reading their
probes in the same slot), then commits every append of its group in one
transaction: one fsync per poll cycle across ports, not one per probe. Every
append still returns only after the commit that holds it, with that commit's
outcome (its error is raised in each of its appends), so a power cut never
loses a poll whose append returned. A writer that announced and is slow (a
probe timing out) costs the others at most the window, never its data.

The WAL is checkpointed every `_wal_budget` bytes and truncated back to
that size afterwards (``wal_autocheckpoint``, ``journal_size_limit``,
https://www.sqlite.org/pragma.html): without that, every small commit
appended a 4 KiB page to a WAL that was never reset, and a 2 MB quota took
7.2 MB of disk.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence, TypeVar

from humus.receipts import to_ranges
from humus.signing import sign_payload

from collector.disk_reserve import DiskReserve, free_bytes, total_bytes
from collector.obs_json import observation_json
from humus.records import Observation
from humus.wire import SCHEMA

log = logging.getLogger(__name__)
T = TypeVar("T")

PAYLOAD_PER_DISK_BYTE = 0.8
"""Payload bytes one byte of disk holds, conservatively (measured about 0.9 for 10-observation
polls: page headers, cell pointers and the free part of the last page of each commit)."""
SHM_BYTES = 32 * 1024
"""The -shm index of a WAL up to 4096 frames (https://www.sqlite.org/walformat.html, "The WAL-Index")."""
DISK_SLACK = 64 * 1024
"""Kept free on the filesystem beyond the WAL's growth: a few pages, and a margin for other writers."""
DEFAULT_RESERVE_BYTES = 576 * 1024
"""Room to form and delete one batch of the default 256 KiB: both are copied into the WAL."""
GROUP_WINDOW_S = 0.05
"""How long a group commit waits at most for announced appends (`Spool.expect`): the pollers of one
slot finish within a few ms of each other on a quiet bus, tens of ms on two busy cores."""

# SQLite primary result codes (https://www.sqlite.org/rescode.html)
_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, \
    _SQLITE_NOTADB = 3, 8, 10, 11, 13, 14, 26

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
CREATE TABLE IF NOT EXISTS dropped_batch (seq INTEGER PRIMARY KEY, n INTEGER NOT NULL, dropped_ns INTEGER NOT NULL);
"""


DROPPED_BATCHES_KEPT = 1000
"""Seqs of formed batches dropped by the quota or a full disk, kept to report them (status payload)."""

class SpoolError(Exception):
    """The spool file cannot be used (disk, permissions, corruption); the message says what to check."""


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    seq: int
    n: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append had to drop to make room (returned, so concurrent appends never mix their counts)."""

    dropped: int = 0                                         # oldest observations dropped
    reason: Literal["quota", "disk_full"] | None = None      # which limit made the room


@dataclass(slots=True)
class _Append:
    """One append waiting for its group's commit."""

    rows: list[tuple[int, str]]
    qc_state: dict[str, str] | None
    size: int
    result: AppendResult = field(default_factory=AppendResult)
    error: BaseException | None = None


class _Group:
    """The appends of one commit; its members wait on `cond` (the spool's group lock) for `done`."""

    __slots__ = ("items", "cond", "done")

    def __init__(self, lock: threading.Lock) -> None:
        self.items: list[_Append] = []
        self.cond = threading.Condition(lock)
        self.done = False


@dataclass(frozen=True, slots=True)
class SpoolStats:
    unsent_observations: int    # rows not yet in a batch
    pending_batches: int        # batches formed, not yet acknowledged
    pending_batch_observations: int
    bytes: int
    quota_bytes: int
    oldest_unsent_ns: int | None
    dropped_by_quota: int       # by the quota or by a full disk
    next_seq: int
    disk_bytes: int = 0         # allocated on disk by the file, its WAL and its -shm index
    reserve_bytes: int = 0      # held by the reserve file now (0 while released)
    dropped_seqs: tuple[tuple[int, int], ...] = ()   # formed batches dropped (recent ones), as seq ranges

    @property
    def depth(self) -> int:
        """Observations on disk not yet acknowledged by the broker."""
        return self.unsent_observations + self.pending_batch_observations


class Spool:
    """One gateway's spool file; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path, *, site: str, gateway: str, quota_bytes: int,
                 reserve_bytes: int = DEFAULT_RESERVE_BYTES, sign: Callable[[bytes], bytes] | None = None,
                 group_window_s: float = GROUP_WINDOW_S) -> None:
        self.path = Path(path)
        self.sign = sign
        """Ed25519 signer (humus.signing): a batch is signed once, when formed, and re-sent as it is."""
        self.site, self.gateway = site, gateway
        self.quota_bytes = int(quota_bytes)
        self._lock = threading.Lock()
        # Group commit (see the module's docstring); all under _group_lock.
        self.group_window_s = group_window_s
        self._group_lock = threading.Lock()
        self._forming = _Group(self._group_lock)          # the group the next append joins
        self._leader_wake = threading.Condition(self._group_lock)
        self._leading = False          # a leader is waiting for its group or committing it
        self._expected: set[str] = set()
        self.commits = 0           # append transactions committed (each one fsync)
        self.appends = 0           # appends they held
        self._reserve = DiskReserve(self.path.with_name(self.path.name + ".reserve"), reserve_bytes)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                       timeout=30.0)
        except (sqlite3.Error, OSError) as e:
            raise SpoolError(f"spool {self.path}: cannot open ({e}); check free space on {self.path.parent}, "
                             "the directory's permissions, or move a corrupt file aside") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA_SQL)
            self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
            self._configure_wal()
            self._bytes = self._db.execute(
                "SELECT (SELECT COALESCE(SUM(LENGTH(body)), 0) FROM obs) + "
                "(SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM batches)").fetchone()[0]
        except sqlite3.Error as e:
            self._db.close()
            raise self._error("opening", e) from None
        self._head = f'{{"schema":"{SCHEMA}","site":"{site}","gateway":"{gateway}","seq":'
        self._restore_reserve()

    # -- disk ------------------------------------------------------------------------
    def _configure_wal(self) -> None:
        """Checkpoint every 1/16 of the quota (or of the filesystem, if smaller): the WAL stays small."""
        size = min(self.quota_bytes, total_bytes(self.path.parent) or self.quota_bytes)
        self._wal_budget = min(4 << 20, max(64 << 10, size // 16))
        self._db.execute(f"PRAGMA wal_autocheckpoint={max(1, self._wal_budget // self._page_size)}")
        self._db.execute(f"PRAGMA journal_size_limit={self._wal_budget}")

    def _allocated(self, suffix: str = "") -> int:
        try:
            return os.stat(f"{self.path}{suffix}").st_blocks * 512
        except OSError:
            return 0

    def _wal_growth(self) -> int:
        """Bytes the WAL may still take before its next checkpoint."""
        return max(0, self._wal_budget - self._allocated("-wal"))

    def _limit(self) -> tuple[int, Literal["quota", "disk_full"]]:
        """The payload bytes the spool may hold now, and which limit that is.

        Both limits are room on disk, converted to payload at PAYLOAD_PER_DISK_BYTE: the quota's is
        what the file's pages in use, the WAL and the -shm index leave of it; the disk's is the free
        space plus the file's free pages. Computed from pages actually in use, the limit corrects
        itself at every append: the conversion factor only sets how much one step drops.
        """
        ps = self._page_size
        pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
        free_pages = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        room, reason = self.quota_bytes - (pages - free_pages) * ps - self._wal_budget - SHM_BYTES, "quota"
        free = free_bytes(self.path.parent)
        if free is not None:
            if not self._reserve.present:
                free -= self._reserve.size      # its room stays set aside while it is released
            disk_room = free + free_pages * ps - self._wal_growth() - DISK_SLACK
            if disk_room < room:
                room, reason = disk_room, "disk_full"
        return self._bytes + int(room * PAYLOAD_PER_DISK_BYTE), reason

    def _restore_reserve(self) -> None:
        if self._reserve.present or not self._reserve.size:
            return
        free = free_bytes(self.path.parent)
        if free is not None and free - self._reserve.size >= self._wal_growth() + DISK_SLACK \
                and self._reserve.ensure():
            log.info("spool %s: %d bytes reserved in %s for draining on a full disk", self.path,
                     self._reserve.size, self._reserve.path)

    @property
    def reserve_released(self) -> bool:
        """The disk filled and the drain reserve is in use (until space returns)."""
        return bool(self._reserve.size) and not self._reserve.present

    # -- errors and transactions ------------------------------------------------------------
    def _error(self, what: str, e: sqlite3.Error) -> SpoolError:
        code = getattr(e, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        where = self.path.parent
        if primary == _SQLITE_FULL:
            hint = f"check free space on the filesystem of {where} (df -h {where})"
        elif primary in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN):
            hint = f"check that {where} is writable by this user and its filesystem is not read-only"
        elif primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            hint = f"the file is damaged: stop the collector and move {self.path} aside (keep it for recovery)"
        elif primary == _SQLITE_IOERR:
            hint = f"check the storage device (dmesg) and free space on {where}"
        else:
            hint = f"check free space on {where} and its permissions"
        name = getattr(e, "sqlite_errorname", None) or type(e).__name__
        return SpoolError(f"spool {self.path}: {what} failed: {e} ({name}); {hint}")

    def _rollback(self) -> None:
        """Roll back what SQLite has not already rolled back itself; never hide the error that led here."""
        if not self._db.in_transaction:
            return
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error as e:
            log.warning("spool %s: rollback failed too (%s)", self.path, e)

    def _checkpoint(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as e:
            log.debug("spool %s: checkpoint failed (%s)", self.path, e)

    def _transaction(self, what: str, body: Callable[[bool], T], *, drain: bool) -> T:
        """body(retry) in one IMMEDIATE transaction (caller holds the lock), retried on a full disk.

        A drain step releases the reserve at its first SQLITE_FULL, an append at its second (after
        a retry that dropped more of the oldest data did not help: the checkpoint it waits for must
        grow the file). Each retry first checkpoints, so the WAL restarts in room it already holds.
        """
        failures = 0
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                out = body(failures > 0)
                self._db.execute("COMMIT")
                return out
            except sqlite3.Error as e:
                self._rollback()
                code = getattr(e, "sqlite_errorcode", None)
                failures += 1
                if failures > 2 or not isinstance(code, int) or code & 0xFF != _SQLITE_FULL:
                    raise self._error(what, e) from None
                if (drain or failures == 2) and self._reserve.release():
                    log.warning("spool %s: the disk is full; released the %d-byte reserve %s so the spool can still "
                                "form, delete and recycle; check free space on %s", self.path, self._reserve.size,
                                self._reserve.path, self.path.parent)
                elif failures == 2 and drain:
                    raise self._error(what, e) from None
                self._checkpoint()
            except BaseException:
                self._rollback()
                raise

    def _read(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as e:
            raise self._error(what, e) from None

    # -- meta counters ---------------------------------------------------------
    def _meta(self, key: str, default: int = 0) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, value))

    # -- 1. append -------------------------------------------------------------
    def expect(self, writer: str) -> None:
        """`writer` (a port's poller) is reading a probe and will append soon: a group commit may wait for it."""
        with self._group_lock:
            self._expected.add(writer)

    def withdraw(self, writer: str) -> None:
        """`writer` announced an append it will not make (its polls failed before producing anything)."""
        with self._group_lock:
            self._arrived(writer)

    def _arrived(self, writer: str | None) -> None:
        """`writer`'s announcement is over (group lock held): wake a waiting leader if it was the last."""
        if writer is not None and writer in self._expected:
            self._expected.discard(writer)
            if not self._expected:
                self._leader_wake.notify()

    def append(self, observations: Sequence[Observation], qc_state: dict[str, str] | None = None, *,
               writer: str | None = None) -> AppendResult:
        """Store one poll's observations (and the QC state they advanced) in one durable transaction.

        The transaction may hold other threads' appends too (group commit); this returns after it is
        committed. Returns what had to be dropped to make room (the whole group's drops are reported
        by one of its appends); raises SpoolError when the poll cannot be stored. `writer` ends an
        announcement made with `expect`.
        """
        rows = [(o.time_ns, observation_json(o)) for o in observations]
        item = _Append(rows, qc_state, sum(len(b) for _, b in rows))
        with self._group_lock:
            group = self._forming
            group.items.append(item)
            self._arrived(writer)
            # Each wake-up is targeted: a group's members when it is committed, one member of the
            # forming group when the leader before it is done (never every waiting thread per append).
            while self._leading and not group.done:
                group.cond.wait()
            led = not group.done
            interrupted: BaseException | None = None
            if led:
                self._leading = True
                try:
                    deadline = time.monotonic() + self.group_window_s
                    while self._expected:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._leader_wake.wait(left)
                except BaseException as stop:  # noqa: BLE001 - e.g. KeyboardInterrupt: commit the group first
                    interrupted = stop
                self._forming = _Group(self._group_lock)
        if led:
            try:
                self._commit(group.items)
            finally:
                with self._group_lock:
                    group.done = True
                    self._leading = False
                    group.cond.notify_all()
                    self._forming.cond.notify()     # one of the next group leads it
            if interrupted is not None:
                raise interrupted
        e = item.error
        if e is not None:
            # One exception object per thread: the leader's own, a copy in the others.
            raise e if led or not isinstance(e, SpoolError) else SpoolError(str(e))
        return item.result

    def _commit(self, group: list[_Append]) -> None:
        """One transaction for every append of `group`; each gets the outcome (result or error)."""
        rows = [r for it in group for r in it.rows]
        qc_state: dict[str, str] = {}
        for it in group:
            if it.qc_state:
                qc_state.update(it.qc_state)
        size = sum(it.size for it in group)

        def body(retry: bool) -> tuple[int, int, Literal["quota", "disk_full"] | None]:
            # On the retry after SQLITE_FULL, drop twice the poll more: the insert reuses the freed pages.
            dropped = self._make_room(size, extra=2 * max(size, self._page_size) if retry else 0)
            self._db.executemany("INSERT INTO obs(time_ns, body) VALUES (?, ?)", rows)
            if qc_state:
                self._db.executemany(
                    "INSERT INTO qc_state(series, state) VALUES (?, ?) "
                    "ON CONFLICT(series) DO UPDATE SET state = excluded.state", qc_state.items())
            return dropped

        try:
            with self._lock:
                self._restore_reserve()
                n, freed, reason = self._transaction("storing a poll", body, drain=False)
                self._bytes += size - freed
                self.commits += 1
                self.appends += len(group)
        except BaseException as e:  # noqa: BLE001 - handed to every append of the group, raised there
            for it in group:
                it.error = e
            return
        group[0].result = AppendResult(n, reason if n else None)

    def _make_room(self, size: int, extra: int = 0) -> tuple[int, int, Literal["quota", "disk_full"] | None]:
        """Drop the oldest unsent data until `size` more bytes fit; (observations, bytes, which limit)."""
        limit, reason = self._limit()
        if extra:
            reason = "disk_full"
        excess = self._bytes + size + extra - limit
        if excess <= 0:
            return 0, 0, None
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
                    break   # a single poll larger than all the room there is: keep it anyway
                self._db.execute("DELETE FROM batches WHERE seq = ?", (row[0],))
                # Its seq becomes a hole at the centre: say which, so nobody takes it for a silent loss.
                self._db.execute("INSERT OR REPLACE INTO dropped_batch(seq, n, dropped_ns) VALUES (?, ?, ?)",
                                 (row[0], row[1], time.time_ns()))
                self._db.execute("DELETE FROM dropped_batch WHERE seq <= ?", (row[0] - DROPPED_BATCHES_KEPT,))
                k, freed = row[1], row[2]
            n_obs += k
            n_bytes += freed
            excess -= freed
        if n_obs:
            self._set_meta("dropped_by_quota", self._meta("dropped_by_quota") + n_obs)
        return n_obs, n_bytes, reason

    # -- 2. batches ------------------------------------------------------------
    def max_obs_id(self) -> int:
        with self._lock:
            return self._read("reading", lambda: self._db.execute("SELECT COALESCE(MAX(id), 0) FROM obs").fetchone()[0])

    def form_batch(self, *, max_obs: int, max_bytes: int, after_id: int = 0, up_to_id: int | None = None,
                   sent_ns: int | None = None) -> SpooledBatch | None:
        """Move the oldest unsent rows with after_id < id <= up_to_id into a new numbered batch."""
        budget = max_bytes - len(self._head) - 80
        q = "SELECT id, time_ns, body FROM obs WHERE id > ?" + (" AND id <= ?" if up_to_id is not None else "")
        args = (after_id,) if up_to_id is None else (after_id, up_to_id)
        with self._lock:
            rows = self._read("reading unsent observations",
                              lambda: self._db.execute(q + " ORDER BY id LIMIT ?", (*args, max_obs)).fetchall())
            if not rows:
                return None
            bodies, used = [], 0
            for _, _, body in rows:
                if bodies and used + len(body) + 1 > budget:
                    break
                bodies.append(body)
                used += len(body) + 1
            taken = rows[:len(bodies)]
            oldest = min(t for _, t, _ in taken)
            ts = time.time_ns() if sent_ns is None else sent_ns

            def move(retry: bool) -> tuple[int, bytes]:
                seq = self._meta("next_seq", 1)
                payload = (f'{self._head}{seq},"sent_ns":{ts},"observations":[' + ",".join(bodies) + "]}").encode()
                if self.sign is not None:
                    payload = sign_payload(payload, self.sign)
                # Delete first: the batch row then reuses the freed pages instead of growing the file.
                self._db.execute("DELETE FROM obs WHERE id >= ? AND id <= ?", (taken[0][0], taken[-1][0]))
                self._db.execute("INSERT INTO batches(seq, n, oldest_ns, payload) VALUES (?, ?, ?, ?)",
                                 (seq, len(taken), oldest, payload))
                self._set_meta("next_seq", seq + 1)
                return seq, payload

            seq, payload = self._transaction("forming a batch", move, drain=True)
            self._bytes += len(payload) - sum(len(b) for b in bodies)
            return SpooledBatch(seq, len(taken), payload)

    def pending_batches(self, after_seq: int = 0, limit: int = 100) -> list[SpooledBatch]:
        """Formed, unacknowledged batches (republished after a restart), oldest first."""
        with self._lock:
            rows = self._read("reading formed batches", lambda: self._db.execute(
                "SELECT seq, n, payload FROM batches WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall())
        return [SpooledBatch(s, n, bytes(p)) for s, n, p in rows]

    # -- 3. acknowledgement ------------------------------------------------------
    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged batches (one transaction, no fsync of its own); how many were deleted."""
        seqs = list(seqs)
        if not seqs:
            return 0

        def delete(retry: bool) -> tuple[int, int]:
            freed = n = 0
            for s in seqs:
                row = self._db.execute("SELECT LENGTH(payload) FROM batches WHERE seq = ?", (s,)).fetchone()
                if row:
                    self._db.execute("DELETE FROM batches WHERE seq = ?", (s,))
                    freed += row[0]
                    n += 1
            return freed, n

        with self._lock:
            self._read("setting synchronous=NORMAL", lambda: self._db.execute("PRAGMA synchronous=NORMAL"))
            try:
                freed, n = self._transaction("deleting acknowledged batches", delete, drain=True)
            finally:
                try:
                    self._db.execute("PRAGMA synchronous=FULL")
                except sqlite3.Error as e:
                    log.warning("spool %s: cannot restore synchronous=FULL (%s)", self.path, e)
            self._bytes -= freed
            return n

    # -- state and status -----------------------------------------------------------
    def qc_state(self) -> dict[str, str]:
        with self._lock:
            return self._read("reading the QC state",
                              lambda: dict(self._db.execute("SELECT series, state FROM qc_state").fetchall()))

    def disk_bytes(self) -> int:
        """Bytes the spool occupies on disk: the file, its WAL and its -shm index (not the reserve)."""
        return self._allocated() + self._allocated("-wal") + self._allocated("-shm")

    def stats(self) -> SpoolStats:
        def read() -> SpoolStats:
            n_obs, oldest_obs = self._db.execute("SELECT COUNT(*), MIN(time_ns) FROM obs").fetchone()
            n_b, n_bo, oldest_b = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(n), 0), MIN(oldest_ns) FROM batches").fetchone()
            oldest = min([t for t in (oldest_obs, oldest_b) if t is not None], default=None)
            dropped = to_ranges(s for (s,) in self._db.execute("SELECT seq FROM dropped_batch"))
            return SpoolStats(n_obs, n_b, n_bo, self._bytes, self.quota_bytes, oldest,
                              self._meta("dropped_by_quota"), self._meta("next_seq", 1), self.disk_bytes(),
                              self._reserve.size if self._reserve.present else 0, tuple(dropped))

        with self._lock:
            return self._read("reading its statistics", read)

    def set_quota(self, quota_bytes: int) -> None:
        with self._lock:
            self.quota_bytes = int(quota_bytes)
            self._read("setting the WAL size", self._configure_wal)

    def close(self) -> None:
        with self._lock:
            self._checkpoint()
            self._db.close()
