"""One notification and its forms: text for people, JSON in Alertmanager's shapes for machines.

The JSON of an alert is the one Alertmanager's v2 API takes and its webhook
sends (labels, annotations, startsAt, endsAt; Alertmanager docs, "Clients"
and "webhook_config"), so a receiver written for Alertmanager reads the
built-in notifier's webhooks too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from observatory.alerts.lifecycle import Alert, AlertState
from observatory.alerts.rules import fmt_time

NS = 1_000_000_000


def rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns // NS, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + \
        f".{(ns % NS) // 1000:06d}Z"


def annotations(a: Alert) -> dict[str, str]:
    """What happened, since when, the last values, and what to check."""
    since = a.fired_at_ns if a.fired_at_ns is not None else a.active_at_ns
    out = {"summary": a.summary, "check": a.check, "since": rfc3339(since),
           "description": f"{a.summary}. Firing since {fmt_time(since)}. Check: {a.check}."}
    if a.since_ns is not None:
        out["condition_since"] = rfc3339(a.since_ns)
    return out


def alert_document(a: Alert, ends_ns: int | None = None) -> dict[str, Any]:
    """An alert as Alertmanager's v2 API takes it (postableAlert)."""
    starts = a.fired_at_ns if a.fired_at_ns is not None else a.active_at_ns
    doc: dict[str, Any] = {"labels": a.all_labels(), "annotations": annotations(a), "startsAt": rfc3339(starts)}
    if a.state is AlertState.RESOLVED and a.resolved_at_ns is not None:
        doc["endsAt"] = rfc3339(a.resolved_at_ns)
    elif ends_ns is not None:
        doc["endsAt"] = rfc3339(ends_ns)
    return doc


@dataclass
class Notification:
    """One message for one group: its firing alerts and the ones resolved since the last message."""

    group_key: str
    group_labels: dict[str, str]
    firing: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)
    time_ns: int = 0

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"

    def webhook_document(self, receiver: str = "humus") -> dict[str, Any]:
        """Alertmanager's webhook payload (version 4)."""
        alerts = []
        for a in self.firing + self.resolved:
            d = alert_document(a)
            d.update(status="resolved" if a.state is AlertState.RESOLVED else "firing",
                     endsAt=d.get("endsAt", "0001-01-01T00:00:00Z"), generatorURL="", fingerprint=a.fingerprint)
            alerts.append(d)
        common = dict(alerts[0]["labels"]) if alerts else {}
        for d in alerts[1:]:
            common = {k: v for k, v in common.items() if d["labels"].get(k) == v}
        return {"version": "4", "groupKey": self.group_key, "truncatedAlerts": 0, "status": self.status,
                "receiver": receiver, "groupLabels": self.group_labels, "commonLabels": common,
                "commonAnnotations": {}, "externalURL": "", "alerts": alerts}

    def mqtt_document(self) -> dict[str, Any]:
        doc = self.webhook_document()
        doc["schema"] = "humus/v1/notification"
        doc["text"] = render(self)[1]
        return doc


def _line(a: Alert) -> list[str]:
    since = a.fired_at_ns if a.fired_at_ns is not None else a.active_at_ns
    if a.state is AlertState.RESOLVED:
        return [f"RESOLVED {a.rule} {a.subject}: firing from {fmt_time(since)} to {fmt_time(a.resolved_at_ns)}",
                f"  was: {a.summary}"]
    return [f"FIRING {a.rule} [{a.severity}] {a.subject} since {fmt_time(since)}",
            f"  {a.summary}", f"  check: {a.check}"]


def render(n: Notification) -> tuple[str, str]:
    """(subject line, body) for e-mail, chat and logs."""
    where = ", ".join(f"{v}" for v in n.group_labels.values()) or "all"
    if n.firing:
        rules = sorted({a.rule for a in n.firing})
        title = f"[FIRING:{len(n.firing)}] {where}: {', '.join(rules)}"
        if len(n.firing) == 1:
            title += f" on {n.firing[0].subject}"
    else:
        title = f"[RESOLVED] {where}: {', '.join(sorted({a.rule for a in n.resolved}))}"
        if len(n.resolved) == 1:
            title += f" on {n.resolved[0].subject}"
    lines: list[str] = []
    for a in n.firing + n.resolved:
        lines.extend(_line(a))
    return title, "\n".join(lines) + "\n"
