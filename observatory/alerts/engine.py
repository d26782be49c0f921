"""One evaluation step, the same live and in replay: buffers -> snapshot -> rules -> life cycle.

The service feeds the engine from MQTT and calls `step(t)` at every tick;
the replay feeds it from the archive and the recorded gateway history and
calls `step(t)` at the same ticks. Gateway statuses pass `take_status`,
which keeps a status when something discrete changed (online, clock,
probe states) or `status_record_s` after the last one kept: the same
filter decides what the service records for replays, so the replay sees
exactly the statuses the live rules saw.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable, Iterable

from humus.records import Observation
from observatory.alerts.buffers import NS, Buffers, GatewayEventRecord, StatusPoint
from observatory.alerts.config import RulesSettings
from observatory.alerts.lifecycle import Lifecycle, Transition
from observatory.alerts.rules import evaluate, lookback_s
from observatory.alerts.state import status_key

STATUS_RECORD_S = 300.0
"""A heartbeat is kept at least this often (well under gateway_offline's heartbeat_timeout_s)."""


def align(t_ns: int, interval_s: float) -> int:
    """The evaluation tick at or before `t_ns`: ticks fall on whole multiples of the interval since 1970,
    so a live run and a replay evaluate at the same instants."""
    step = int(interval_s * NS)
    return t_ns - t_ns % step


def next_tick(t_ns: int, interval_s: float) -> int:
    return align(t_ns, interval_s) + int(interval_s * NS)


class Engine:
    def __init__(self, rules: RulesSettings, resolved_retention_s: float = 900.0,
                 status_record_s: float = STATUS_RECORD_S) -> None:
        self.rules = rules
        self.status_record_ns = int(status_record_s * NS)

        @lru_cache(maxsize=4096)
        def keep_ns(quantity: str | None) -> int:
            return int(math.ceil(lookback_s(rules, quantity)) * NS)

        self.buffers = Buffers(keep_ns)
        self.lifecycle = Lifecycle(self._timing, resolved_retention_s)
        self._kept: dict[tuple[str, str], tuple[int, str]] = {}
        self.evaluations = 0
        self.rule_errors: dict[str, int] = {}
        self.on_rule_error: Callable[[str, Exception], None] | None = None

    def _timing(self, rule: str) -> tuple[float, float]:
        p = getattr(self.rules, rule)
        return p.for_s, p.keep_firing_for_s

    def take_observations(self, observations: Iterable[Observation]) -> int:
        return self.buffers.add_observations(observations)

    def take_series(self, data: Any) -> None:
        self.buffers.add_series(data)

    def take_status(self, site: str, gateway: str, point: StatusPoint) -> bool:
        """Keep `point` if it says something new or the last kept is `status_record_s` old; True if kept."""
        key = status_key(point)
        last = self._kept.get((site, gateway))
        if last is not None and last[1] == key and point.time_ns - last[0] < self.status_record_ns:
            return False
        if last is not None and point.time_ns < last[0]:
            return False      # out of order (a replayed history's first point): never goes back
        self._kept[(site, gateway)] = (point.time_ns, key)
        self.buffers.add_status(site, gateway, point)
        return True

    def take_event(self, site: str, gateway: str, event: GatewayEventRecord) -> None:
        self.buffers.add_event(site, gateway, event)

    def step(self, t_ns: int) -> list[Transition]:
        snap = self.buffers.snapshot(t_ns)
        findings = evaluate(snap, self.rules, self.on_rule_error)
        transitions = self.lifecycle.apply(t_ns, findings)
        self.buffers.trim(t_ns)
        self.evaluations += 1
        return transitions
