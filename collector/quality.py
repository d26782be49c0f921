"""Streaming QARTOD checks: each new value is flagged with the context of its series.

A `SeriesQc` keeps the recent (time, value) points of one series (probe,
quantity, source) and runs the configured `collector.qartod` tests over that
window; the new point's flag is the last element of each result, so the
flags are exactly what ioos_qc gives on the same window.

The spike test needs the point after the one it judges (QARTOD: "the test
introduces a delay of one sample"), so its verdict on point n-1 comes when
point n arrives: `check` returns it as `late`, and the collector re-publishes
observation n-1 with the worse flag (stores keep one value per series and
time, so the correction replaces the first copy).

Times fed to the checks are the scheduled poll times (aligned to the
interval), not the acquisition stamps: ioos_qc truncates time steps to whole
seconds, and a 1 s probe read 999 ms after the previous one would otherwise
look like a zero-second step.

The window is saved in the spool with each poll (`state()`/`restore()`), so
it survives a restart at no extra fsync.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from collector import qartod
from collector.config import QcSettings
from humus.records import QualityFlag

MAX_WINDOW = 2000


@dataclass(frozen=True, slots=True)
class Verdict:
    flag: QualityFlag
    test: str | None


@dataclass(frozen=True, slots=True)
class LateVerdict:
    """The spike test's verdict on the previous point (time `time_ns`)."""

    time_ns: int
    flag: QualityFlag
    test: str


def window_length(settings: QcSettings, interval_s: float) -> int:
    """Points to keep: enough for the flat-line window and the spike's neighbours."""
    n = 3
    if settings.flat_line is not None:
        n = max(n, int(settings.flat_line.fail_threshold_s // max(interval_s, 1.0)) + 3)
        n = max(n, int(settings.flat_line.suspect_threshold_s // max(interval_s, 1.0)) + 3)
    return min(n, MAX_WINDOW)


class SeriesQc:
    def __init__(self, settings: QcSettings, interval_s: float) -> None:
        self.settings = settings
        self.maxlen = window_length(settings, interval_s)
        self.times: deque[int] = deque(maxlen=self.maxlen)
        self.values: deque[float] = deque(maxlen=self.maxlen)
        self.flags: deque[int] = deque(maxlen=self.maxlen)   # flag each point was published with

    def check(self, slot_ns: int, value: float) -> tuple[Verdict, LateVerdict | None]:
        """Flag `value` (taken in the poll scheduled at `slot_ns`); also the spike verdict on the previous point."""
        if self.times and slot_ns <= self.times[-1]:
            # a clock step backwards: the old window no longer describes this series' time axis
            self.times.clear()
            self.values.clear()
            self.flags.clear()
        self.times.append(slot_ns)
        self.values.append(value)
        s = self.settings
        n = len(self.values)
        fast = all(math.isfinite(v) and abs(v) < 1e300 for v in itertools.islice(self.values, max(0, n - 3), n))
        results: list[tuple[int, str]] = []
        if s.gross_range is not None:
            g = s.gross_range
            f = _gross_range_1(value, g.fail_span, g.suspect_span) if fast else \
                int(qartod.gross_range([value], g.fail_span, g.suspect_span)[-1])
            results.append((f, "gross_range"))
        if s.rate_of_change is not None and n >= 2:
            r = s.rate_of_change
            if fast and slot_ns >= self.times[-2]:
                f = _rate_of_change_2(self.values[-2], value, self.times[-2], slot_ns, r.threshold, r.fail_threshold)
            else:
                f = int(qartod.rate_of_change(list(self.values)[-2:], list(self.times)[-2:], r.threshold,
                                              r.fail_threshold)[-1])
            results.append((f, "rate_of_change"))
        elif s.rate_of_change is not None:
            results.append((qartod.PASS if math.isfinite(value) else qartod.MISSING, "rate_of_change"))
        if s.flat_line is not None:
            fl = s.flat_line
            results.append((_flat_line_last(self.values, self.times, fl.suspect_threshold_s, fl.fail_threshold_s,
                                            fl.tolerance), "flat_line"))
        verdict = _worst(results, math.isnan(value))
        self.flags.append(int(verdict.flag))
        late = None
        if s.spike is not None and n >= 3:
            sp = s.spike
            x0, x1, x2 = self.values[-3], self.values[-2], self.values[-1]
            if fast:
                f_prev = _spike_3(x0, x1, x2, sp.suspect_threshold, sp.fail_threshold, sp.method)
            else:
                f_prev = int(qartod.spike([x0, x1, x2], sp.suspect_threshold, sp.fail_threshold, sp.method)[1])
            prev = QualityFlag(self.flags[-2])
            if f_prev in (qartod.SUSPECT, qartod.FAIL) and _rank(QualityFlag(f_prev)) > _rank(prev):
                self.flags[-2] = f_prev
                late = LateVerdict(self.times[-2], QualityFlag(f_prev), "spike")
        return verdict, late

    def state(self) -> str:
        return json.dumps([list(self.times), [None if math.isnan(v) else v for v in self.values], list(self.flags)])

    def restore(self, state: str) -> None:
        try:
            times, values, flags = json.loads(state)
            if not (len(times) == len(values) == len(flags)):
                return
            for t, v, f in zip(times[-self.maxlen:], values[-self.maxlen:], flags[-self.maxlen:]):
                self.times.append(int(t))
                self.values.append(math.nan if v is None else float(v))
                self.flags.append(int(f))
        except (ValueError, TypeError):
            pass   # a state from an older version: start afresh


_ORDER = {QualityFlag.NOT_EVALUATED: 0, QualityFlag.PASS: 1, QualityFlag.SUSPECT: 2,
          QualityFlag.FAIL: 3, QualityFlag.MISSING: 4}


def _rank(f: QualityFlag) -> int:
    return _ORDER[f]


def _worst(results: list[tuple[int, str]], missing: bool) -> Verdict:
    if missing:
        return Verdict(QualityFlag.MISSING, "missing")
    if not results:
        return Verdict(QualityFlag.NOT_EVALUATED, None)
    best = max(results, key=lambda r: _rank(QualityFlag(r[0])))
    flag = QualityFlag(best[0])
    return Verdict(flag, best[1] if flag not in (QualityFlag.PASS, QualityFlag.NOT_EVALUATED) else None)


# Scalar fast paths for finite values of moderate size (|x| < 1e300), where
# numpy.ma's masking and safe-division rules cannot trigger: the same
# arithmetic and comparisons as collector.qartod, without building masked
# arrays for a 1-3 point window (tests/collector/test_qartod.py checks both agree).

def _gross_range_1(v: float, fail_span: tuple[float, float], suspect_span: tuple[float, float] | None) -> int:
    flo, fhi = sorted(fail_span)
    f = qartod.PASS
    if suspect_span is not None:
        slo, shi = sorted(suspect_span)
        if v < slo or v > shi:
            f = qartod.SUSPECT
    if v < flo or v > fhi:
        f = qartod.FAIL
    return f


def _rate_of_change_2(x0: float, x1: float, t0: int, t1: int, threshold: float, fail: float | None) -> int:
    dt = (t1 - t0) // 10**9                      # timedelta64[ns] -> [s] truncation (t1 >= t0)
    roc = abs(x1 - x0) / dt if dt else abs(x1 - x0)   # ma's refused division keeps the dividend
    f = qartod.SUSPECT if roc > threshold else qartod.PASS
    if fail is not None and roc > fail:
        f = qartod.FAIL
    return f


def _spike_3(x0: float, x1: float, x2: float, suspect: float | None, fail: float | None, method: str) -> int:
    if method == "average":
        diff = abs(x1 - (x0 + x2) / 2)
    else:
        a, b = x1 - x0, x2 - x1
        diff = 0.0 if a * b >= 0 else min(abs(a), abs(b))
    f = qartod.PASS
    if suspect and diff > suspect:
        f = qartod.SUSPECT
    if fail and diff > fail:
        f = qartod.FAIL
    return f


def _flat_line_last(values: "deque[float] | list[float]", times: "deque[int] | list[int]", suspect_s: float,
                    fail_s: float, tolerance: float) -> int:
    """`qartod.flat_line(values, times, ...)[-1]` without judging every earlier point again."""
    n = len(values)
    if n < 3:
        return qartod.PASS
    last = values[-1]
    t = np.fromiter(times, dtype=np.int64, count=n).astype("datetime64[ns]")
    interval = float(np.median(np.diff(t)).astype("timedelta64[s]").astype(float))
    if interval <= 0:
        return int(qartod.flat_line(list(values), list(times), suspect_s, fail_s, tolerance)[-1])
    flag = qartod.PASS
    for threshold, value in ((suspect_s, qartod.SUSPECT), (fail_s, qartod.FAIL)):
        count = int(int(threshold) / interval)
        if n >= count + 1:
            window = [v for v in itertools.islice(values, n - count - 1, n) if math.isfinite(v)]
            if window and abs(max(window) - min(window)) < tolerance:
                flag = value
    return qartod.MISSING if not math.isfinite(last) else flag
