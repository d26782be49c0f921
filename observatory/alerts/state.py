"""What the alerts service keeps across restarts, in SQLite tables named ``alert_*``.

With a ``sqlite:PATH`` archive the tables live in the archive itself, beside
the observations, so one file holds the data, the alerts raised on it and
the gateway history a replay needs; with InfluxDB they live in
``[alerts] state_file`` (and the history is also written to InfluxDB,
observatory.alerts.influx_history, for Grafana).

- ``alert_active``: every pending, firing or recently resolved alert (the
  life cycle's state: a restart neither forgets nor re-sends a firing alert);
- ``alert_history``: every firing and resolved transition;
- ``alert_silence``: the built-in notifier's silences, with their expiry;
- ``alert_notify``: what the built-in notifier last sent per group, and when;
- ``alert_gateway_status`` / ``alert_gateway_event``: the gateway status
  (reduced to what the rules use) and events as received, for replays.

Writes go through observatory.deadletter's `run_write` (one IMMEDIATE
transaction, bounded retries on a busy file), as the ingest workers' do.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from observatory.alerts.buffers import GatewayEventRecord, ProbeStatus, StatusPoint
from observatory.alerts.lifecycle import Alert, AlertState, Transition, fingerprint
from observatory.deadletter import connect, run_write
from observatory.store import StoreError

SCHEMA_VERSION = "1"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS alert_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS alert_active (
        fingerprint TEXT PRIMARY KEY, rule TEXT NOT NULL, labels TEXT NOT NULL, severity TEXT NOT NULL,
        state TEXT NOT NULL, active_at_ns INTEGER NOT NULL, fired_at_ns INTEGER, resolved_at_ns INTEGER,
        last_true_ns INTEGER NOT NULL, value REAL, summary TEXT NOT NULL, check_text TEXT NOT NULL,
        since_ns INTEGER)""",
    """CREATE TABLE IF NOT EXISTS alert_history (
        id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, fingerprint TEXT NOT NULL, rule TEXT NOT NULL,
        labels TEXT NOT NULL, severity TEXT NOT NULL, state TEXT NOT NULL, active_at_ns INTEGER NOT NULL,
        fired_at_ns INTEGER, resolved_at_ns INTEGER, value REAL, summary TEXT NOT NULL, check_text TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS alert_history_time ON alert_history(time_ns)",
    """CREATE TABLE IF NOT EXISTS alert_silence (
        id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_ns INTEGER NOT NULL, ends_ns INTEGER NOT NULL,
        created_by TEXT NOT NULL, comment TEXT NOT NULL, created_ns INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alert_notify (
        group_key TEXT PRIMARY KEY, last_ns INTEGER NOT NULL, firing TEXT NOT NULL, resolved TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alert_gateway_status (
        site TEXT NOT NULL, gateway TEXT NOT NULL, time_ns INTEGER NOT NULL, point TEXT NOT NULL,
        PRIMARY KEY (site, gateway, time_ns)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS alert_gateway_event (
        site TEXT NOT NULL, gateway TEXT NOT NULL, time_ns INTEGER NOT NULL, kind TEXT NOT NULL,
        subject TEXT NOT NULL, message TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS alert_gateway_event_time ON alert_gateway_event(time_ns)",
    "CREATE INDEX IF NOT EXISTS alert_gateway_status_time ON alert_gateway_status(time_ns)",
)


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[tuple[str, str], ...]     # label = value, all must match
    starts_ns: int
    ends_ns: int
    created_by: str
    comment: str

    def active(self, t_ns: int) -> bool:
        return self.starts_ns <= t_ns < self.ends_ns

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.matchers)


@dataclass(frozen=True)
class HistoryRow:
    time_ns: int
    rule: str
    labels: dict[str, str]
    severity: str
    state: str
    active_at_ns: int
    fired_at_ns: int | None
    resolved_at_ns: int | None
    value: float | None
    summary: str


def _labels_json(labels: Iterable[tuple[str, str]]) -> str:
    return json.dumps(dict(sorted(labels)), separators=(",", ":"), sort_keys=True)


def _point_json(p: StatusPoint) -> str:
    d = {f: getattr(p, f) for f in _POINT_FIELDS}
    d["probes"] = {k: [v.state, v.message, v.interval_s, v.last_ok_ns] for k, v in p.probes.items()}
    return json.dumps(d, separators=(",", ":"), sort_keys=True)


_POINT_FIELDS = tuple(f.name for f in fields(StatusPoint) if f.name not in ("time_ns", "probes"))


def _point(time_ns: int, text: str) -> StatusPoint:
    d = json.loads(text)
    probes = {k: ProbeStatus(*v) for k, v in d.pop("probes", {}).items()}
    return StatusPoint(time_ns=time_ns, probes=probes, **d)


def status_key(p: StatusPoint) -> str:
    """A status without its time and slowly drifting counters: what makes a status worth recording at once."""
    return json.dumps([p.online, p.clock_synced, p.clock_steps, p.dropped_by_quota,
                       sorted((k, v.state) for k, v in p.probes.items())])


class AlertStore:
    """The ``alert_*`` tables of one SQLite file (the archive, or ``[alerts] state_file``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._con = connect(self.path)
        try:
            run_write(self._con, f"{self.path}: create alert tables", self._create)
        except BaseException:
            self._con.close()
            raise

    @staticmethod
    def _create(con: sqlite3.Connection) -> None:
        row = con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='alert_meta'").fetchone()
        if row is not None:
            v = con.execute("SELECT value FROM alert_meta WHERE key='schema_version'").fetchone()
            if v is not None and v[0] != SCHEMA_VERSION:
                raise StoreError(f"alert tables of schema version {v[0]}; this humus reads version {SCHEMA_VERSION}")
        for stmt in _SCHEMA:
            con.execute(stmt)
        con.execute("INSERT OR IGNORE INTO alert_meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> "AlertStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the life cycle -------------------------------------------------------------------------

    def save(self, alerts: Iterable[Alert], transitions: Sequence[Transition], gone: Iterable[str] = ()) -> None:
        """Upsert the alerts, append the transitions to the history, delete alerts forgotten (by fingerprint)."""
        rows = [(a.fingerprint, a.rule, _labels_json(a.labels), a.severity, a.state.value, a.active_at_ns,
                 a.fired_at_ns, a.resolved_at_ns, a.last_true_ns, a.value, a.summary, a.check, a.since_ns)
                for a in alerts]
        hist = [(t.time_ns, t.alert.fingerprint, t.alert.rule, _labels_json(t.alert.labels), t.alert.severity,
                 t.state.value, t.alert.active_at_ns, t.alert.fired_at_ns, t.alert.resolved_at_ns, t.alert.value,
                 t.alert.summary, t.alert.check) for t in transitions]
        gone = [(g,) for g in gone]

        def write(con: sqlite3.Connection) -> None:
            con.executemany("INSERT OR REPLACE INTO alert_active VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            con.executemany("INSERT INTO alert_history(time_ns, fingerprint, rule, labels, severity, state, "
                            "active_at_ns, fired_at_ns, resolved_at_ns, value, summary, check_text) "
                            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", hist)
            con.executemany("DELETE FROM alert_active WHERE fingerprint = ?", gone)

        if rows or hist or gone:
            run_write(self._con, f"{self.path}: save alerts", write)

    def load(self) -> list[Alert]:
        out = []
        for (fp, rule, labels, severity, state, active, fired, resolved, last_true, value, summary, check,
             since) in self._con.execute("SELECT * FROM alert_active"):
            out.append(Alert(rule, tuple(sorted(json.loads(labels).items())), severity, AlertState(state), active,
                             fired, resolved, last_true, value if value is not None else 0.0, summary, check, since))
        return out

    def history(self, since_ns: int | None = None, until_ns: int | None = None,
                limit: int | None = None) -> list[HistoryRow]:
        q = ("SELECT time_ns, rule, labels, severity, state, active_at_ns, fired_at_ns, resolved_at_ns, value, "
             "summary FROM alert_history WHERE time_ns >= ? AND time_ns < ? ORDER BY time_ns, id")
        args: list[Any] = [since_ns if since_ns is not None else -2**63,
                           until_ns if until_ns is not None else 2**63 - 1]
        if limit is not None:
            q += " LIMIT ?"
            args.append(limit)
        return [HistoryRow(r[0], r[1], json.loads(r[2]), *r[3:]) for r in self._con.execute(q, args)]

    # -- silences -------------------------------------------------------------------------------

    def add_silence(self, matchers: dict[str, str], starts_ns: int, ends_ns: int, created_by: str,
                    comment: str, now_ns: int) -> Silence:
        s = Silence(uuid.uuid4().hex[:12], tuple(sorted(matchers.items())), starts_ns, ends_ns, created_by, comment)
        run_write(self._con, f"{self.path}: add silence", lambda con: con.execute(
            "INSERT INTO alert_silence VALUES (?,?,?,?,?,?,?)",
            (s.id, json.dumps(dict(s.matchers), sort_keys=True), s.starts_ns, s.ends_ns, created_by, comment, now_ns)))
        return s

    def expire_silence(self, silence_id: str, now_ns: int) -> bool:
        cur = run_write(self._con, f"{self.path}: expire silence", lambda con: con.execute(
            "UPDATE alert_silence SET ends_ns = ? WHERE id = ? AND ends_ns > ?", (now_ns, silence_id, now_ns)))
        return cur.rowcount > 0

    def silences(self, now_ns: int | None = None) -> list[Silence]:
        """Silences not yet expired at `now_ns` (all of them with None)."""
        q, args = "SELECT id, matchers, starts_ns, ends_ns, created_by, comment FROM alert_silence", ()
        if now_ns is not None:
            q, args = q + " WHERE ends_ns > ?", (now_ns,)
        return [Silence(r[0], tuple(sorted(json.loads(r[1]).items())), r[2], r[3], r[4], r[5])
                for r in self._con.execute(q + " ORDER BY starts_ns", args)]

    # -- the built-in notifier's log ------------------------------------------------------------

    def notify_log(self) -> dict[str, tuple[int, set[str], set[str]]]:
        return {k: (last, set(json.loads(f)), set(json.loads(r)))
                for k, last, f, r in self._con.execute("SELECT group_key, last_ns, firing, resolved FROM alert_notify")}

    def save_notify(self, group_key: str, last_ns: int, firing: set[str], resolved: set[str]) -> None:
        run_write(self._con, f"{self.path}: save notification log", lambda con: con.execute(
            "INSERT OR REPLACE INTO alert_notify VALUES (?,?,?,?)",
            (group_key, last_ns, json.dumps(sorted(firing)), json.dumps(sorted(resolved)))))

    # -- gateway history for replays ------------------------------------------------------------

    def record_gateway(self, statuses: Sequence[tuple[str, str, StatusPoint]],
                       events: Sequence[tuple[str, str, GatewayEventRecord]]) -> None:
        s_rows = [(site, gw, p.time_ns, _point_json(p)) for site, gw, p in statuses]
        e_rows = [(site, gw, e.time_ns, e.kind, e.subject, e.message) for site, gw, e in events]

        def write(con: sqlite3.Connection) -> None:
            con.executemany("INSERT OR REPLACE INTO alert_gateway_status VALUES (?,?,?,?)", s_rows)
            con.executemany("INSERT INTO alert_gateway_event VALUES (?,?,?,?,?,?)", e_rows)

        if s_rows or e_rows:
            run_write(self._con, f"{self.path}: record gateway status", write)

    def gateway_history(self, since_ns: int, until_ns: int) -> tuple[list[tuple[str, str, StatusPoint]],
                                                                      list[tuple[str, str, GatewayEventRecord]]]:
        """Statuses and events received in [since, until), plus each gateway's last status before `since`."""
        statuses = []
        for site, gw, t, point in self._con.execute(
                "SELECT s.site, s.gateway, s.time_ns, s.point FROM alert_gateway_status s JOIN "
                "(SELECT site, gateway, MAX(time_ns) AS t FROM alert_gateway_status WHERE time_ns < ? "
                "GROUP BY site, gateway) b ON s.site = b.site AND s.gateway = b.gateway AND s.time_ns = b.t",
                (since_ns,)):
            statuses.append((site, gw, _point(t, point)))
        for site, gw, t, point in self._con.execute(
                "SELECT site, gateway, time_ns, point FROM alert_gateway_status WHERE time_ns >= ? AND time_ns < ? "
                "ORDER BY time_ns", (since_ns, until_ns)):
            statuses.append((site, gw, _point(t, point)))
        events = [(site, gw, GatewayEventRecord(t, kind, subject, message))
                  for site, gw, t, kind, subject, message in self._con.execute(
                      "SELECT site, gateway, time_ns, kind, subject, message FROM alert_gateway_event "
                      "WHERE time_ns >= ? AND time_ns < ? ORDER BY time_ns", (since_ns, until_ns))]
        return statuses, events

    def prune(self, before_ns: int) -> None:
        """Forget history older than `before_ns` (``[alerts] history_days``)."""
        def write(con: sqlite3.Connection) -> None:
            con.execute("DELETE FROM alert_history WHERE time_ns < ?", (before_ns,))
            con.execute("DELETE FROM alert_gateway_event WHERE time_ns < ?", (before_ns,))
            con.execute("DELETE FROM alert_gateway_status WHERE time_ns < ?", (before_ns,))
            con.execute("DELETE FROM alert_silence WHERE ends_ns < ?", (before_ns,))
        run_write(self._con, f"{self.path}: prune alert history", write)


def has_alert_tables(path: str | Path) -> bool:
    """Whether an SQLite file holds alert tables (a replay over an archive the service wrote to)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return con.execute("SELECT 1 FROM sqlite_master WHERE name='alert_gateway_status'").fetchone() is not None
    except sqlite3.Error:
        return False
    finally:
        con.close()


__all__ = ["AlertStore", "HistoryRow", "Silence", "fingerprint", "has_alert_tables", "status_key"]
