"""The built-in notifier, for a site without Alertmanager: what Alertmanager's dispatcher does, small.

- grouping: alerts with the same `group_by` labels (default: the site) go
  out in one notification;
- group_wait: a new group waits that long before its first notification,
  so alerts raised by one fault (a gateway and its probes) arrive together;
- group_interval: a notified group whose alerts change (a new one firing,
  one resolved) waits that long after its last notification;
- repeat_interval: an unchanged firing group is sent again after that long;
- deduplication: a group is sent only when its set of firing alerts or
  newly resolved alerts changed, or at the repeat interval; what was sent
  is kept in the state file, so a restart does not send it again;
- silences: alerts matching an active silence are left out (its expiry
  brings them back); a resolved alert is only announced if its firing was.

Source: Alertmanager documentation, "Configuration" (route: group_by,
group_wait, group_interval, repeat_interval) and dispatch/dispatch.go.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

from observatory.alerts.config import NotifySettings
from observatory.alerts.lifecycle import Alert, AlertState
from observatory.alerts.notify.courier import Channel, Courier
from observatory.alerts.notify.message import Notification
from observatory.alerts.state import AlertStore, Silence

log = logging.getLogger("humus.alerts")

NS = 1_000_000_000


def group_of(a: Alert, group_by: Sequence[str]) -> tuple[str, dict[str, str]]:
    labels = a.all_labels()
    g = {k: labels.get(k, "") for k in group_by}
    return ",".join(f"{k}={v}" for k, v in g.items()) or "all", g


class BuiltinNotifier:
    """Decides what to send and when; the channels' couriers deliver."""

    def __init__(self, settings: NotifySettings, store: AlertStore, channels: Iterable[Channel]) -> None:
        self.s = settings
        self.store = store
        self.couriers = [Courier(c) for c in channels]
        self._log = store.notify_log()            # group -> (last_ns, firing fps, resolved fps sent)
        self._first_seen: dict[str, int] = {}
        self.notifications = 0

    def tick(self, now_ns: int, alerts: Iterable[Alert]) -> list[Notification]:
        """Send what is due at `now_ns` for the current `alerts` (firing and recently resolved)."""
        silences = self.store.silences(now_ns)
        groups: dict[str, tuple[dict[str, str], list[Alert], list[Alert]]] = {}
        for a in alerts:
            if a.state is AlertState.PENDING:
                continue
            if a.state is AlertState.FIRING and _silenced(a, silences, now_ns):
                continue
            key, labels = group_of(a, self.s.group_by)
            g = groups.setdefault(key, (labels, [], []))
            (g[1] if a.state is AlertState.FIRING else g[2]).append(a)
        sent = []
        for key in sorted(set(groups) | set(self._log)):
            labels, firing, resolved = groups.get(key, ({}, [], []))
            n = self._due(key, labels, firing, resolved, now_ns)
            if n is not None:
                sent.append(n)
        return sent

    def _due(self, key: str, labels: dict[str, str], firing: list[Alert], resolved: list[Alert],
             now_ns: int) -> Notification | None:
        firing_fps = {a.fingerprint for a in firing}
        last = self._log.get(key)
        if last is None:
            if not firing:
                return None
            first = self._first_seen.setdefault(key, now_ns)
            if now_ns - first < int(self.s.group_wait_s * NS):
                return None
            return self._send(key, labels, firing, [], now_ns, set())
        last_ns, last_firing, last_resolved = last
        fresh = [a for a in resolved if a.fingerprint in last_firing and a.fingerprint not in last_resolved
                 and a.fingerprint not in firing_fps] if self.s.send_resolved else []
        gone = last_firing - firing_fps
        if gone and not self.s.send_resolved:
            # Nothing to announce; forget them, so that firing again is news.
            last_firing = last_firing & firing_fps
            self._save(key, last_ns, last_firing, last_resolved)
            gone = set()
        changed = bool(firing_fps - last_firing) or bool(fresh)
        if changed and now_ns - last_ns >= int(self.s.group_interval_s * NS):
            keep = {a.fingerprint for a in resolved} & last_resolved
            return self._send(key, labels, firing, fresh, now_ns, keep)
        if firing and not changed and now_ns - last_ns >= int(self.s.repeat_interval_s * NS):
            keep = {a.fingerprint for a in resolved} & last_resolved
            return self._send(key, labels, firing, [], now_ns, keep)
        if not firing and not resolved and not changed and gone == last_firing and last_firing:
            # Everything this group announced is resolved and forgotten: start afresh next time.
            self._save(key, last_ns, set(), set())
        return None

    def _send(self, key: str, labels: dict[str, str], firing: list[Alert], resolved: list[Alert], now_ns: int,
              keep_resolved: set[str]) -> Notification:
        if not labels:
            labels = group_of((firing + resolved)[0], self.s.group_by)[1]
        n = Notification(key, labels, sorted(firing, key=_order), sorted(resolved, key=_order), now_ns)
        for c in self.couriers:
            c.put(n)
        self.notifications += 1
        self._first_seen.pop(key, None)
        self._save(key, now_ns, {a.fingerprint for a in firing}, keep_resolved | {a.fingerprint for a in resolved})
        return n

    def _save(self, key: str, last_ns: int, firing: set[str], resolved: set[str]) -> None:
        self._log[key] = (last_ns, firing, resolved)
        self.store.save_notify(key, last_ns, firing, resolved)

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        return all(c.flush(max(0.0, deadline - time.monotonic())) for c in self.couriers)

    def close(self) -> None:
        for c in self.couriers:
            c.close()


def _silenced(a: Alert, silences: Sequence[Silence], now_ns: int) -> bool:
    labels = a.all_labels()
    return any(s.active(now_ns) and s.matches(labels) for s in silences)


def _order(a: Alert) -> tuple:
    return (a.rule, a.labels)
