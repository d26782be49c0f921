"""Per-gateway batch sequence numbers: which were stored, duplicates, gaps.

Each gateway numbers its batches 0, 1, 2... (docs/wire.md). The set of seqs
stored for a gateway is kept as sorted disjoint closed intervals, which stay
few (one, plus one per open hole) however long the series.

With a shared subscription several workers see interleaved seqs of one
gateway, and a killed worker's share arrives only when it comes back
(DESIGN.md, measured traps). So a hole is not a gap at once: it becomes one
only after staying open for a grace period, judged on the ranges kept in
the shared state file (`observatory.deadletter.BatchLedger`), not on one
worker's memory; workers on other machines tell theirs
(`observatory.ledgershare`). Each worker reports a gap at most once; two workers
watching the same gateway may each report it (the state file does not yet
record reported gaps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

Interval = tuple[int, int]
GatewayKey = tuple[str, str]


def merge(intervals: Iterable[Interval], seqs: Iterable[int]) -> list[Interval]:
    """Sorted disjoint closed intervals covering `intervals` and `seqs`; adjacent ones joined."""
    items = sorted([*intervals, *((s, s) for s in seqs)])
    out: list[Interval] = []
    for lo, hi in items:
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def contains(intervals: list[Interval], seq: int) -> bool:
    """Whether `seq` is in one of the sorted disjoint `intervals` (binary search)."""
    lo, hi = 0, len(intervals)
    while lo < hi:
        mid = (lo + hi) // 2
        a, b = intervals[mid]
        if seq < a:
            hi = mid
        elif seq > b:
            lo = mid + 1
        else:
            return True
    return False


def holes(intervals: list[Interval]) -> list[Interval]:
    """The missing closed ranges between consecutive stored intervals.

    Seqs before the first stored one are not holes: the worker may have been
    started long after the gateway.
    """
    return [(a[1] + 1, b[0] - 1) for a, b in zip(intervals, intervals[1:])]


@dataclass
class GapTracker:
    """Turns holes that stay open for `grace_ns` into gaps (pure: time is passed in)."""

    grace_ns: int
    _first_seen: dict[tuple[GatewayKey, Interval], int] = field(default_factory=dict)
    _due: set[tuple[GatewayKey, Interval]] = field(default_factory=set)

    def observe(self, key: GatewayKey, intervals: list[Interval], now_ns: int) -> list[Interval]:
        """Record the current holes of `key`; return those that just passed the grace period."""
        current = holes(intervals)
        known = {h for (k, h) in self._first_seen if k == key}
        for h in known - set(current):
            # Filled (a late share arrived) or split by a late arrival: a
            # split hole's parts keep the older first-seen time.
            first = self._first_seen.pop((key, h))
            was_due = (key, h) in self._due
            self._due.discard((key, h))
            for c in current:
                if h[0] <= c[0] and c[1] <= h[1]:
                    self._first_seen[(key, c)] = min(first, self._first_seen.get((key, c), first))
                    if was_due:
                        self._due.add((key, c))  # already reported as part of the larger gap
        due = []
        for h in current:
            first = self._first_seen.setdefault((key, h), now_ns)
            if now_ns - first >= self.grace_ns and (key, h) not in self._due:
                self._due.add((key, h))
                due.append(h)
        return due

    def open_keys(self) -> set[GatewayKey]:
        """Gateways with holes still being watched."""
        return {k for (k, _h) in self._first_seen}
