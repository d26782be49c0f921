"""`humus alerts replay`: the rules over archived data, as vmalert's replay does, notifying no one.

The archive is read in chunks of `chunk_s` (plus the rules' look-back before
the first), fed to the same `Engine` the service uses, and evaluated at the
same ticks (whole multiples of the step since 1970). Gateway status and
events come from the alert tables the service recorded (in a sqlite:
archive itself, or a ``--state`` file); without them, the rules on gateway
status (offline, spool, disk, clock, events) have nothing to say. The
result is the alert timeline: rule, subject, start, end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from observatory.alerts.buffers import NS
from observatory.alerts.config import RulesSettings, sqlite_path
from observatory.alerts.engine import Engine, align
from observatory.alerts.lifecycle import AlertState, Transition
from observatory.alerts.rules import archive_plan, fmt_time, lookback_s, subject_text
from observatory.alerts.state import AlertStore, HistoryRow, has_alert_tables
from observatory.store import Selection, Store, StoreError

CHUNK_S = 7 * 86400.0


@dataclass(frozen=True, order=True)
class Episode:
    """One alert's firing episode: from `start_ns` (firing) to `end_ns` (resolved; None: still firing)."""

    start_ns: int
    rule: str
    subject: str
    end_ns: int | None = None
    severity: str = ""
    summary: str = field(default="", compare=False)

    def key(self) -> tuple:
        return (self.rule, self.subject, self.start_ns, self.end_ns)


@dataclass
class ReplayResult:
    timeline: list[Episode]
    evaluations: int
    rows: int
    seconds: float


def timeline(transitions: Iterable[Transition]) -> list[Episode]:
    """Episodes from firing/resolved transitions in time order."""
    open_: dict[tuple, Episode] = {}
    done: list[Episode] = []
    for t in transitions:
        k = t.alert.key
        if t.state is AlertState.FIRING:
            open_[k] = Episode(t.time_ns, t.alert.rule, t.alert.subject, None, t.alert.severity, t.alert.summary)
        elif k in open_:
            e = open_.pop(k)
            done.append(Episode(e.start_ns, e.rule, e.subject, t.time_ns, e.severity, e.summary))
    return sorted(done + list(open_.values()))


def timeline_from_history(rows: Iterable[HistoryRow]) -> list[Episode]:
    """Episodes from the service's recorded history (alert_history), to compare with a replay."""
    open_: dict[tuple, Episode] = {}
    done: list[Episode] = []
    for r in rows:
        subject = subject_text(r.labels)
        k = (r.rule, subject)
        if r.state == AlertState.FIRING.value:
            open_[k] = Episode(r.time_ns, r.rule, subject, None, r.severity, r.summary)
        elif r.state == AlertState.RESOLVED.value and k in open_:
            e = open_.pop(k)
            done.append(Episode(e.start_ns, e.rule, e.subject, r.time_ns, e.severity, e.summary))
    return sorted(done + list(open_.values()))


def replay(store: Store, since_ns: int, until_ns: int, rules: RulesSettings, *, step_s: float,
           state_path: str | Path | None = None, chunk_s: float = CHUNK_S,
           resolved_retention_s: float = 900.0) -> ReplayResult:
    """Evaluate `rules` at every step in [since, until] over the archive; notify no one."""
    started = time.monotonic()
    engine = Engine(rules, resolved_retention_s)
    if state_path is not None:
        with _ReadOnlyState(state_path) as st:
            statuses, events = st.gateway_history(since_ns - int(lookback_s(rules, None) * NS), until_ns + 1)
        for site, gw, p in statuses:
            engine.take_status(site, gw, p)
        for site, gw, e in events:
            engine.take_event(site, gw, e)
    transitions: list[Transition] = []
    rows = 0
    step_ns = int(step_s * NS)
    t = align(since_ns, step_s)
    if t < since_ns:
        t += step_ns
    loaded_until = since_ns
    (_, general_s), *longer = archive_plan(rules)
    general_ns = int(general_s * NS)
    # Before the first tick: the look-back of the quantities that need more than the general one.
    for quantity, seconds in longer:
        rows += _feed(engine, store, Selection(quantity=quantity, since_ns=since_ns - int(seconds * NS),
                                               until_ns=since_ns - general_ns))
    loaded_from = since_ns - general_ns
    while t <= until_ns:
        if t >= loaded_until:
            chunk_end = min(until_ns + 1, max(t + 1, loaded_until + int(chunk_s * NS)))
            rows += _feed(engine, store, Selection(since_ns=loaded_from, until_ns=chunk_end))
            loaded_from = loaded_until = chunk_end
        transitions.extend(engine.step(t))
        t += step_ns
    return ReplayResult(timeline(transitions), engine.evaluations, rows, time.monotonic() - started)


def _feed(engine: Engine, store: Store, sel: Selection) -> int:
    rows = 0
    for s in store.columns(sel):
        engine.take_series(s)
        rows += len(s.time_ns)
    return rows


class _ReadOnlyState:
    """The alert tables of a file, opened read-only (a replay never writes to an archive)."""

    def __init__(self, path: str | Path) -> None:
        import sqlite3

        self.path = Path(path)
        self._con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)

    def gateway_history(self, since_ns: int, until_ns: int):
        return AlertStore.gateway_history(self, since_ns, until_ns)  # type: ignore[arg-type]

    def __enter__(self) -> "_ReadOnlyState":
        return self

    def __exit__(self, *exc: object) -> None:
        self._con.close()


def default_state(store_url: str) -> Path | None:
    """The alert tables a replay reads by default: those of a sqlite: archive, if the service wrote any."""
    p = sqlite_path(store_url)
    if p and Path(p).is_file() and has_alert_tables(p):
        return Path(p)
    return None


def format_timeline(episodes: list[Episode], now_ns: int | None = None) -> list[str]:
    """One line per episode: start, end, duration, rule, subject, what it said."""
    lines = []
    for e in episodes:
        end = fmt_time(e.end_ns) if e.end_ns is not None else "(still firing)"
        dur = ""
        if e.end_ns is not None:
            from observatory.alerts.rules import fmt_duration
            dur = fmt_duration((e.end_ns - e.start_ns) / NS)
        lines.append(f"{fmt_time(e.start_ns)}  {end:<20}  {dur:>8}  {e.rule:<22} {e.subject}  {e.summary[:160]}")
    return lines


__all__ = ["Episode", "ReplayResult", "StoreError", "default_state", "format_timeline", "replay", "timeline",
           "timeline_from_history"]
