"""What the rules can see: recent observations per series and each gateway's status and events.

The live service feeds these buffers from MQTT, the replay from the archive
and the recorded gateway history; both then take a `Snapshot` at an
evaluation time t that holds only what was acquired (observations) or
received (status, events) at or before t. That is what makes a replay give
the live run's timeline: the same rule code sees the same data.

Spectra are kept as two numbers per row (mean and maximum over the bands):
that is all the rules need, and a week of spectra would otherwise dominate
the memory of the service.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from humus.records import Observation

NS = 1_000_000_000

_TEST_CODES: dict[str | None, int] = {None: 0, "": 0}
_TEST_NAMES: list[str | None] = [None]


def test_code(name: str | None) -> int:
    """A small integer for a flag_test name (0: none), so rules compare integers, not strings."""
    c = _TEST_CODES.get(name)
    if c is None:
        c = _TEST_CODES[name] = len(_TEST_NAMES)
        _TEST_NAMES.append(name)
    return c


def test_codes(names) -> np.ndarray:
    return np.array([test_code(n) for n in names], np.int32)


def test_name(code: int) -> str | None:
    return _TEST_NAMES[code] if 0 <= code < len(_TEST_NAMES) else None


@dataclass(frozen=True, slots=True)
class SeriesKey:
    site: str
    gateway: str
    probe: str
    depth_cm: float | None
    quantity: str
    source: str            # "raw" or "calibrated"


@dataclass(slots=True)
class SeriesView:
    """One series up to the evaluation time, as numpy columns (views, not copies)."""

    key: SeriesKey
    time_ns: np.ndarray       # int64, ascending
    value: np.ndarray         # float64, NaN when missing and on spectral rows
    flag: np.ndarray          # uint8 QARTOD flags
    test: np.ndarray          # int32 codes of the flag_test names (test_code / test_name; 0: none)
    spec_mean: np.ndarray     # float64 mean over the bands of a spectrum row, NaN on scalar rows
    spec_max: np.ndarray      # float64 maximum over the bands
    last_valid_ns: int | None  # newest time with a value, even if older than the buffer keeps

    def since(self, t0_ns: int) -> "SeriesView":
        """The part of this view at or after t0."""
        i = int(np.searchsorted(self.time_ns, t0_ns, side="left"))
        if i == 0:
            return self
        return SeriesView(self.key, self.time_ns[i:], self.value[i:], self.flag[i:], self.test[i:],
                          self.spec_mean[i:], self.spec_max[i:], self.last_valid_ns)

    @property
    def valid(self) -> np.ndarray:
        """Rows that carry a value (a number or a spectrum) and are not flagged MISSING."""
        return (np.isfinite(self.value) | np.isfinite(self.spec_mean)) & (self.flag != 9)

    def __len__(self) -> int:
        return len(self.time_ns)


def _empty_columns() -> tuple[np.ndarray, ...]:
    return (np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.uint8), np.empty(0, np.int32),
            np.empty(0, np.float64), np.empty(0, np.float64))


class SeriesBuffer:
    """Columns of one series, kept sorted by time with one row per time (the newest copy wins)."""

    __slots__ = ("key", "cols", "trimmed_last_valid")

    def __init__(self, key: SeriesKey) -> None:
        self.key = key
        self.cols = _empty_columns()
        self.trimmed_last_valid: int | None = None

    def add(self, time_ns: np.ndarray, value: np.ndarray, flag: np.ndarray, test: np.ndarray,
            spec_mean: np.ndarray, spec_max: np.ndarray) -> None:
        new = (np.asarray(time_ns, np.int64), np.asarray(value, np.float64), np.asarray(flag, np.uint8),
               np.asarray(test, np.int32), np.asarray(spec_mean, np.float64), np.asarray(spec_max, np.float64))
        old_t = self.cols[0]
        in_order = bool(np.all(np.diff(new[0]) > 0)) and (len(old_t) == 0 or new[0][0] > old_t[-1])
        cols = tuple(np.concatenate((a, b)) for a, b in zip(self.cols, new))
        if not in_order:
            # Stable sort, then keep the last row of each time: a re-sent or revised value wins.
            order = np.argsort(cols[0], kind="stable")
            cols = tuple(c[order] for c in cols)
            t = cols[0]
            keep = np.ones(len(t), bool)
            keep[:-1] = t[1:] != t[:-1]
            cols = tuple(c[keep] for c in cols)
        self.cols = cols

    def trim(self, before_ns: int) -> None:
        t = self.cols[0]
        i = int(np.searchsorted(t, before_ns, side="left"))
        if i == 0:
            return
        gone = self._valid(slice(0, i))
        if gone.any():
            self.trimmed_last_valid = int(t[:i][gone][-1])
        self.cols = tuple(c[i:] for c in self.cols)

    def _valid(self, s: slice) -> np.ndarray:
        _, v, f, _, m, _ = (c[s] for c in self.cols)
        return (np.isfinite(v) | np.isfinite(m)) & (f != 9)

    def view(self, until_ns: int, since_ns: int) -> SeriesView | None:
        t = self.cols[0]
        hi = int(np.searchsorted(t, until_ns, side="right"))
        lo = int(np.searchsorted(t, since_ns, side="left"))
        last_valid = self.trimmed_last_valid
        for part in (slice(lo, hi), slice(0, min(lo, hi))):    # the window first: older rows only if it has none
            ok = np.flatnonzero(self._valid(part))
            if len(ok):
                last_valid = int(t[part][ok[-1]])
                break
        if lo >= hi and last_valid is None:
            return None
        c = tuple(col[lo:hi] for col in self.cols)
        return SeriesView(self.key, *c, last_valid_ns=last_valid)

    def __len__(self) -> int:
        return len(self.cols[0])


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    state: str
    message: str
    interval_s: float | None
    last_ok_ns: int | None


@dataclass(frozen=True, slots=True)
class StatusPoint:
    """One gateway status message, reduced to what the rules use. `time_ns` is when it was received."""

    time_ns: int
    online: bool
    unsent: float | None = None
    oldest_unsent_s: float | None = None
    dropped_by_quota: float | None = None
    disk_free_bytes: float | None = None
    clock_synced: bool | None = None
    clock_steps: int | None = None
    last_step_s: float | None = None
    uptime_s: float | None = None
    probes: Mapping[str, ProbeStatus] = field(default_factory=dict)

    @staticmethod
    def from_doc(time_ns: int, doc: Mapping[str, Any]) -> "StatusPoint":
        """From the status JSON (docs/collector.md, "MQTT topics and status"); unknown or odd fields are None."""
        def num(d: Any, k: str) -> float | None:
            v = d.get(k) if isinstance(d, Mapping) else None
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

        spool = doc.get("spool") if isinstance(doc.get("spool"), Mapping) else {}
        clock = doc.get("clock") if isinstance(doc.get("clock"), Mapping) else {}
        probes: dict[str, ProbeStatus] = {}
        raw = doc.get("probes")
        if isinstance(raw, Mapping):
            for pid, p in list(raw.items())[:1000]:
                if isinstance(pid, str) and isinstance(p, Mapping):
                    ok = num(p, "last_ok_ns")
                    probes[pid] = ProbeStatus(str(p.get("state", ""))[:40], str(p.get("message", ""))[:200],
                                              num(p, "interval_s"), int(ok) if ok is not None else None)
        steps = num(clock, "steps")
        synced = clock.get("synced")
        return StatusPoint(
            time_ns=time_ns, online=doc.get("state") == "online", unsent=num(spool, "unsent"),
            oldest_unsent_s=num(spool, "oldest_unsent_age_s"), dropped_by_quota=num(spool, "dropped_by_quota"),
            disk_free_bytes=num(doc, "disk_free_bytes"), clock_synced=synced if isinstance(synced, bool) else None,
            clock_steps=int(steps) if steps is not None else None, last_step_s=num(clock, "last_step_s"),
            uptime_s=num(doc, "uptime_s"), probes=probes)


@dataclass(frozen=True, slots=True)
class GatewayEventRecord:
    """One message from a gateway's alerts topic. `time_ns` is when it was received."""

    time_ns: int
    kind: str
    subject: str
    message: str


@dataclass(slots=True)
class GatewayView:
    site: str
    gateway: str
    statuses: Sequence[StatusPoint]            # in the lookback, oldest first
    latest: StatusPoint | None                 # the newest at or before t, however old
    events: Sequence[GatewayEventRecord]       # in the lookback, oldest first


class GatewayBuffer:
    __slots__ = ("site", "gateway", "statuses", "events")

    def __init__(self, site: str, gateway: str) -> None:
        self.site, self.gateway = site, gateway
        self.statuses: list[StatusPoint] = []
        self.events: list[GatewayEventRecord] = []

    def add_status(self, p: StatusPoint) -> None:
        if not self.statuses or p.time_ns >= self.statuses[-1].time_ns:
            self.statuses.append(p)
        else:
            bisect.insort(self.statuses, p, key=lambda s: s.time_ns)

    def add_event(self, e: GatewayEventRecord) -> None:
        if not self.events or e.time_ns >= self.events[-1].time_ns:
            self.events.append(e)
        else:
            bisect.insort(self.events, e, key=lambda s: s.time_ns)

    def trim(self, before_ns: int) -> None:
        i = bisect.bisect_left(self.statuses, before_ns, key=lambda s: s.time_ns)
        if i > 1:
            del self.statuses[:i - 1]      # keep the newest older one: it is still "the latest" for a silent gateway
        j = bisect.bisect_left(self.events, before_ns, key=lambda s: s.time_ns)
        if j:
            del self.events[:j]

    def view(self, until_ns: int, since_ns: int) -> GatewayView:
        hi = bisect.bisect_right(self.statuses, until_ns, key=lambda s: s.time_ns)
        lo = bisect.bisect_left(self.statuses, since_ns, key=lambda s: s.time_ns)
        ehi = bisect.bisect_right(self.events, until_ns, key=lambda s: s.time_ns)
        elo = bisect.bisect_left(self.events, since_ns, key=lambda s: s.time_ns)
        return GatewayView(self.site, self.gateway, self.statuses[min(lo, hi):hi],
                           self.statuses[hi - 1] if hi else None, self.events[elo:ehi])


@dataclass(slots=True)
class Snapshot:
    """Everything visible at `t_ns`: the rules' only input besides their parameters."""

    t_ns: int
    series: list[SeriesView]
    gateways: dict[tuple[str, str], GatewayView]


def spectrum_summary(values: Sequence[float] | np.ndarray | None) -> tuple[float, float]:
    if values is None:
        return math.nan, math.nan
    a = np.asarray(values, np.float64)
    if a.size == 0 or not np.isfinite(a).all():
        return math.nan, math.nan
    return float(a.mean()), float(a.max())


class Buffers:
    """Rolling buffers for every series and gateway seen; `lookback_ns(quantity)` says how much to keep."""

    def __init__(self, lookback_ns: Any) -> None:
        self.lookback_ns = lookback_ns               # callable: quantity -> ns to keep
        self.series: dict[SeriesKey, SeriesBuffer] = {}
        self.gateways: dict[tuple[str, str], GatewayBuffer] = {}
        self.max_lookback_ns = 0

    def _series(self, key: SeriesKey) -> SeriesBuffer:
        b = self.series.get(key)
        if b is None:
            b = self.series[key] = SeriesBuffer(key)
        return b

    def gateway(self, site: str, gateway: str) -> GatewayBuffer:
        g = self.gateways.get((site, gateway))
        if g is None:
            g = self.gateways[(site, gateway)] = GatewayBuffer(site, gateway)
        return g

    def add_observations(self, observations: Iterable[Observation]) -> int:
        """Observations from a batch (live); returns how many were taken."""
        groups: dict[SeriesKey, list[Observation]] = {}
        for o in observations:
            key = SeriesKey(o.site, o.gateway, o.probe, o.depth_cm, o.quantity, o.source.value)
            groups.setdefault(key, []).append(o)
        n = 0
        for key, obs in groups.items():
            t = np.fromiter((o.time_ns for o in obs), np.int64, len(obs))
            value = np.full(len(obs), np.nan)
            mean = np.full(len(obs), np.nan)
            peak = np.full(len(obs), np.nan)
            for i, o in enumerate(obs):
                if isinstance(o.value, (tuple, list, np.ndarray)):
                    mean[i], peak[i] = spectrum_summary(o.value)
                elif o.value is not None:
                    value[i] = float(o.value)
            flag = np.fromiter((int(o.flag) for o in obs), np.uint8, len(obs))
            test = np.fromiter((test_code(o.flag_test) for o in obs), np.int32, len(obs))
            self._series(key).add(t, value, flag, test, mean, peak)
            n += len(obs)
        return n

    def add_series(self, data: Any) -> None:
        """A `SeriesData` from the archive (observatory.store), for the replay and the service's start."""
        key = SeriesKey(data.site, data.gateway, data.probe, data.depth_cm, data.quantity, data.source.value)
        n = len(data.time_ns)
        if n == 0:
            return
        mean = np.full(n, np.nan)
        peak = np.full(n, np.nan)
        if data.spectra is not None:
            for i, s in enumerate(data.spectra):
                if s is not None:
                    mean[i], peak[i] = spectrum_summary(s)
        test = np.fromiter((test_code(x) for x in data.flag_test), np.int32, n)
        self._series(key).add(np.asarray(data.time_ns, np.int64), np.asarray(data.value, np.float64),
                              np.asarray(data.flag, np.uint8), test, mean, peak)

    def add_status(self, site: str, gateway: str, point: StatusPoint) -> None:
        self.gateway(site, gateway).add_status(point)

    def add_event(self, site: str, gateway: str, event: GatewayEventRecord) -> None:
        self.gateway(site, gateway).add_event(event)

    def trim(self, now_ns: int) -> None:
        """Forget what no rule looks at any more.

        A probe's newest valid time is kept past the look-back (no_data needs it) while the probe
        still sends rows or its gateway's status still lists it; a probe gone from both is forgotten,
        so a decommissioned probe's alert resolves.
        """
        listed: dict[tuple[str, str], Any] = {}
        for k, g in self.gateways.items():
            g.trim(now_ns - self.lookback_ns(None))
            latest = g.view(now_ns, now_ns).latest
            listed[k] = latest.probes if latest is not None else {}
        for key, b in list(self.series.items()):
            b.trim(now_ns - self.lookback_ns(key.quantity))
            if b.trimmed_last_valid is not None and (len(b) == 0 or b.cols[0][0] > now_ns) \
                    and key.probe not in listed.get((key.site, key.gateway), {}):
                b.trimmed_last_valid = None
            if len(b) == 0 and b.trimmed_last_valid is None:
                del self.series[key]

    def snapshot(self, t_ns: int) -> Snapshot:
        views = []
        for key, b in self.series.items():
            v = b.view(t_ns, t_ns - self.lookback_ns(key.quantity))
            if v is not None:
                views.append(v)
        gws = {k: g.view(t_ns, t_ns - self.lookback_ns(None)) for k, g in self.gateways.items()}
        return Snapshot(t_ns, views, gws)
