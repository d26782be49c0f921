"""The alert life cycle, as Prometheus defines it: pending -> firing -> resolved.

A rule's finding for a subject makes a *pending* alert; once the condition
has held for the rule's ``for_s`` at every evaluation it is *firing*
(``for_s = 0``: firing at once). When the condition stops holding, a pending
alert is dropped without a word, and a firing one is *resolved*, unless the
condition comes back within ``keep_firing_for_s`` (Prometheus'
``keep_firing_for``): that is what keeps a flapping condition from sending
firing/resolved pairs. One alert per (rule, subject labels). A resolved
alert is kept ``resolved_retention_s`` so that notifiers can still send it
(Prometheus keeps them 15 minutes), then forgotten; history keeps it.

Source: Prometheus documentation, "Alerting rules" (for, keep_firing_for)
and rules/alerting.go (state machine).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable

from observatory.alerts.rules import Finding, subject_text

NS = 1_000_000_000


class AlertState(str, Enum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass
class Alert:
    rule: str
    labels: tuple[tuple[str, str], ...]
    severity: str
    state: AlertState
    active_at_ns: int                  # first evaluation the condition held (this episode)
    fired_at_ns: int | None = None
    resolved_at_ns: int | None = None
    last_true_ns: int = 0              # last evaluation the condition held
    value: float = 0.0
    summary: str = ""
    check: str = ""
    since_ns: int | None = None        # when the data says it began (e.g. the last valid value)

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return (self.rule, self.labels)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.rule, self.labels)

    @property
    def subject(self) -> str:
        return subject_text(dict(self.labels))

    def all_labels(self) -> dict[str, str]:
        """Labels as Alertmanager and the built-in notifier see them: alertname, severity and the subject's."""
        return {"alertname": self.rule, "rule": self.rule, "severity": self.severity, **dict(self.labels)}


def fingerprint(rule: str, labels: Iterable[tuple[str, str]]) -> str:
    text = rule + "\x00" + "\x00".join(f"{k}={v}" for k, v in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Transition:
    """An alert that started firing or was resolved at `time_ns` (a copy, as it was then)."""

    alert: Alert
    state: AlertState
    time_ns: int


class Lifecycle:
    """All alerts of one service (or one replay); `apply` is called once per evaluation."""

    def __init__(self, timing: Callable[[str], tuple[float, float]], resolved_retention_s: float = 900.0) -> None:
        self.timing = timing                       # rule -> (for_s, keep_firing_for_s)
        self.retention_ns = int(resolved_retention_s * NS)
        self.alerts: dict[tuple, Alert] = {}

    def restore(self, alerts: Iterable[Alert]) -> None:
        for a in alerts:
            self.alerts[a.key] = a

    def apply(self, t_ns: int, findings: dict[str, list[Finding]]) -> list[Transition]:
        """Advance every alert of the rules in `findings` to time `t_ns`; the firing and resolved transitions."""
        out: list[Transition] = []
        seen: set[tuple] = set()
        for rule, found in findings.items():
            for_s, _ = self.timing(rule)
            for f in found:
                key = (rule, f.labels)
                if key in seen:
                    continue
                seen.add(key)
                a = self.alerts.get(key)
                if a is None or a.state is AlertState.RESOLVED:
                    a = Alert(rule, f.labels, f.severity, AlertState.PENDING, active_at_ns=t_ns)
                    self.alerts[key] = a
                a.severity, a.value, a.summary, a.check, a.last_true_ns = f.severity, f.value, f.summary, f.check, t_ns
                if f.since_ns is not None and a.since_ns is None:
                    a.since_ns = f.since_ns
                if a.state is AlertState.PENDING and t_ns - a.active_at_ns >= int(for_s * NS):
                    a.state, a.fired_at_ns = AlertState.FIRING, t_ns
                    out.append(Transition(dataclasses.replace(a), AlertState.FIRING, t_ns))
        for key, a in list(self.alerts.items()):
            if key in seen or a.rule not in findings:
                if a.state is AlertState.RESOLVED and t_ns - (a.resolved_at_ns or t_ns) > self.retention_ns:
                    del self.alerts[key]
                continue
            if a.state is AlertState.PENDING:
                del self.alerts[key]
            elif a.state is AlertState.FIRING:
                _, keep_s = self.timing(a.rule)
                if t_ns - a.last_true_ns >= int(keep_s * NS):
                    a.state, a.resolved_at_ns = AlertState.RESOLVED, t_ns
                    out.append(Transition(dataclasses.replace(a), AlertState.RESOLVED, t_ns))
            elif t_ns - (a.resolved_at_ns or t_ns) > self.retention_ns:
                del self.alerts[key]
        return out

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.state is AlertState.FIRING]
