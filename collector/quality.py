"""Streaming QARTOD checks: each new value is flagged with the context of its series.

A `SeriesQc` keeps the recent (time, value) points of one series (probe,
quantity, source) and flags the newest point as the `collector.qartod` tests
would over that window: the new point's flag is the last element of each
result, so the flags are exactly what ioos_qc gives on the same window.

Only the newest point is judged, so each test is computed for that point
alone, in pure Python, for the values a poll can give (finite numbers of
moderate size, and NaN for a missing value): the same arithmetic, the same
comparisons and the same NaN rules as `collector.qartod`, without numpy
(tests/collector/test_qartod.py checks both agree, NaN included). The rare
window holding +/-inf or a value beyond 1e300, where numpy.ma's masking and
safe-division rules come into play, goes through `collector.qartod` itself;
numpy is imported then, not before.

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
it survives a restart at no extra fsync. `state()` joins the JSON text of
each point, kept beside the window, instead of encoding the whole window
again at every poll. The text is compact, since it is rewritten at every
poll (a flat-line window of 63 points took 1.7 KB, 0.4 KB now): times as
the first one and the step when the steps are all equal (scheduled polls),
flags as one digit each; `restore` reads the earlier ``[[times], [values],
[flags]]`` form as well, so an upgrade keeps the windows.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from collector.config import QcSettings
from humus.records import QualityFlag

PASS, NOT_EVALUATED, SUSPECT, FAIL, MISSING = 1, 2, 3, 4, 9   # collector.qartod's codes


def _qartod() -> Any:
    """collector.qartod (numpy), imported on first need: a window holding inf or a value beyond 1e300."""
    from collector import qartod

    return qartod


def _plain(v: float) -> bool:
    """NaN or a finite value of moderate size: what the pure-Python checks reproduce exactly."""
    return v != v or -1e300 < v < 1e300


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
        # The JSON text of each point, beside the window, for `state()`.
        self._text_times: deque[str] = deque(maxlen=self.maxlen)
        self._text_values: deque[str] = deque(maxlen=self.maxlen)
        self._text_flags: deque[str] = deque(maxlen=self.maxlen)
        # For the flat-line test at every point without sorting the window's steps again nor scanning
        # it for NaN: its time steps kept sorted, and how many of its values are not finite.
        self._steps: list[int] = []
        self._nonfinite = 0

    def _clear(self) -> None:
        for d in (self.times, self.values, self.flags, self._text_times, self._text_values, self._text_flags):
            d.clear()
        self._steps.clear()
        self._nonfinite = 0

    def _push(self, t: int, v: float, f: int) -> None:
        times, steps = self.times, self._steps
        if len(times) == self.maxlen:          # the oldest point leaves the window
            del steps[bisect.bisect_left(steps, times[1] - times[0])]
            old = self.values[0]
            if not old - old == 0:
                self._nonfinite -= 1
        if times:
            bisect.insort(steps, t - times[-1])
        if not v - v == 0:                     # NaN or +/-inf
            self._nonfinite += 1
        self.times.append(t)
        self.values.append(v)
        self.flags.append(f)
        self._text_times.append(str(int(t)))
        self._text_values.append("null" if v != v else repr(float(v)) if -math.inf < v < math.inf
                                 else _JSON_INF[v > 0])
        self._text_flags.append(str(f))

    def check(self, slot_ns: int, value: float) -> tuple[Verdict, LateVerdict | None]:
        """Flag `value` (taken in the poll scheduled at `slot_ns`); also the spike verdict on the previous point."""
        if self.times and slot_ns <= self.times[-1]:
            # a clock step backwards: the old window no longer describes this series' time axis
            self._clear()
        values, times = self.values, self.times
        n = len(values) + 1
        prev1 = values[-1] if n >= 2 else 0.0
        prev2 = values[-2] if n >= 3 else 0.0
        plain = _plain(value) and _plain(prev1) and _plain(prev2)
        s = self.settings
        results: list[tuple[int, str]] = []
        if s.gross_range is not None:
            g = s.gross_range
            results.append((_gross_range_1(value, g.fail_span, g.suspect_span), "gross_range"))
        if s.rate_of_change is not None:
            r = s.rate_of_change
            if n < 2:
                f = PASS if math.isfinite(value) else MISSING
            elif plain:
                f = _rate_of_change_2(prev1, value, times[-1], slot_ns, r.threshold, r.fail_threshold)
            else:
                f = int(_qartod().rate_of_change([prev1, value], [times[-1], slot_ns], r.threshold,
                                                 r.fail_threshold)[-1])
            results.append((f, "rate_of_change"))
        verdict_missing = value != value
        self._push(slot_ns, value, 0)
        if s.flat_line is not None:
            fl = s.flat_line
            results.append((_flat_line_last(values, times, fl.suspect_threshold_s, fl.fail_threshold_s,
                                            fl.tolerance, self._median_step_s(), not self._nonfinite),
                            "flat_line"))
        verdict = _worst(results, verdict_missing)
        self._set_flag(-1, int(verdict.flag))
        late = None
        if s.spike is not None and n >= 3:
            sp = s.spike
            if plain:
                f_prev = _spike_3(prev2, prev1, value, sp.suspect_threshold, sp.fail_threshold, sp.method)
            else:
                f_prev = int(_qartod().spike([prev2, prev1, value], sp.suspect_threshold, sp.fail_threshold,
                                             sp.method)[1])
            if f_prev in (SUSPECT, FAIL) and _CODE_RANK[f_prev] > _CODE_RANK[self.flags[-2]]:
                self._set_flag(-2, f_prev)
                late = LateVerdict(self.times[-2], QualityFlag(f_prev), "spike")
        return verdict, late

    def _median_step_s(self) -> float | None:
        """`_median_step_s(self.times)` from the steps kept sorted; None for fewer than two points."""
        steps = self._steps
        k = len(steps)
        if not k:
            return None
        mid = steps[k // 2] if k % 2 else (steps[k // 2 - 1] + steps[k // 2]) // 2
        return float(mid // 10**9)

    def _set_flag(self, i: int, f: int) -> None:
        self.flags[i] = f
        self._text_flags[i] = str(f)

    def state(self) -> str:
        """The window as JSON, for `restore`.

        ``{"t0": first time, "dt": step, "v": [values, null for NaN], "f": "flag digits"}`` when the
        time steps are all equal, else ``{"t": [times], ...}``; exact (times in ns, values by repr).
        """
        steps = self._steps
        flags = "".join(self._text_flags)
        f = f'"{flags}"' if len(flags) == len(self._text_flags) else f"[{','.join(self._text_flags)}]"
        if not self.times:
            return '{"t":[],"v":[],"f":""}'
        if not steps or steps[0] == steps[-1]:         # sorted: all equal (a scheduled series)
            t = f'"t0":{self._text_times[0]},"dt":{steps[0] if steps else 0}'
        else:
            t = f'"t":[{",".join(self._text_times)}]'
        return f'{{{t},"v":[{",".join(self._text_values)}],"f":{f}}}'

    def restore(self, state: str) -> None:
        try:
            doc = json.loads(state)
            if isinstance(doc, dict):
                values, flags = doc["v"], [int(f) for f in doc["f"]]
                if "t" in doc:
                    times = doc["t"]
                else:
                    t0, dt = int(doc["t0"]), int(doc["dt"])
                    times = [t0 + i * dt for i in range(len(values))]
            else:
                times, values, flags = doc           # the form before the compact one
            if not (len(times) == len(values) == len(flags)):
                return
            for t, v, f in zip(times[-self.maxlen:], values[-self.maxlen:], flags[-self.maxlen:]):
                self._push(int(t), math.nan if v is None else float(v), int(f))
        except (ValueError, TypeError, KeyError):
            self._clear()   # an unreadable state: start afresh


_JSON_INF = ("-Infinity", "Infinity")
"""How json.dumps writes infinities (its default allow_nan=True), which json.loads reads back."""

_ORDER = {QualityFlag.NOT_EVALUATED: 0, QualityFlag.PASS: 1, QualityFlag.SUSPECT: 2,
          QualityFlag.FAIL: 3, QualityFlag.MISSING: 4}


_CODE_RANK = {int(f): r for f, r in _ORDER.items()}
"""The same order on collector.qartod's integer codes (0 for a point not judged yet)."""
_CODE_RANK[0] = -1
_FLAGS = {int(f): f for f in QualityFlag}


def _worst(results: list[tuple[int, str]], missing: bool) -> Verdict:
    if missing:
        return Verdict(QualityFlag.MISSING, "missing")
    if not results:
        return Verdict(QualityFlag.NOT_EVALUATED, None)
    best = results[0]
    for r in results:          # the first of the worst, as max() gives it
        if _CODE_RANK[r[0]] > _CODE_RANK[best[0]]:
            best = r
    flag = _FLAGS[best[0]]
    return Verdict(flag, best[1] if flag not in (QualityFlag.PASS, QualityFlag.NOT_EVALUATED) else None)


# The newest point's flag of each collector.qartod test, for a value that is NaN or finite below 1e300
# (and, for gross range, any float): the same arithmetic, comparisons and NaN rules, without numpy.ma.

def _gross_range_1(v: float, fail_span: tuple[float, float], suspect_span: tuple[float, float] | None) -> int:
    """NaN and +/-inf are MISSING, then the range comparisons (which inf does meet: inf FAILs)."""
    flo, fhi = sorted(fail_span)
    f = PASS if math.isfinite(v) else MISSING
    if suspect_span is not None:
        slo, shi = sorted(suspect_span)
        if v < slo or v > shi:
            f = SUSPECT
    if v < flo or v > fhi:
        f = FAIL
    return f


def _rate_of_change_2(x0: float, x1: float, t0: int, t1: int, threshold: float, fail: float | None) -> int:
    """A NaN x1 is MISSING; a NaN x0 gives a NaN rate, which exceeds nothing (PASS)."""
    if x1 != x1:
        return MISSING
    dt = (t1 - t0) // 10**9                      # timedelta64[ns] -> [s] truncation (t1 >= t0)
    roc = abs(x1 - x0) / dt if dt else abs(x1 - x0)   # ma's refused division keeps the dividend
    f = SUSPECT if roc > threshold else PASS
    if fail is not None and roc > fail:
        f = FAIL
    return f


def _spike_3(x0: float, x1: float, x2: float, suspect: float | None, fail: float | None, method: str) -> int:
    """The verdict on x1: MISSING if it is NaN, NOT_EVALUATED if a neighbour is (no reference)."""
    if x1 != x1:
        return MISSING
    if x0 != x0 or x2 != x2:
        return NOT_EVALUATED
    if method == "average":
        diff = abs(x1 - (x0 + x2) / 2)
    elif method == "differential":
        a, b = x1 - x0, x2 - x1
        diff = 0.0 if a * b >= 0 else min(abs(a), abs(b))
    else:
        raise ValueError(f'Unknown method: "{method}", only "average" and "differential" methods are available')
    f = PASS
    if suspect and diff > suspect:
        f = SUSPECT
    if fail and diff > fail:
        f = FAIL
    return f


def _median_step_s(times: "deque[int] | list[int]") -> float:
    """The median time step in whole seconds, as numpy's median of timedelta64[ns] then [s] gives it.

    numpy takes the middle step, or the floor of the mean of the two middle ones, in nanoseconds.
    """
    steps = sorted(b - a for a, b in zip(itertools.islice(times, 0, len(times) - 1),
                                         itertools.islice(times, 1, None)))
    k = len(steps)
    mid = steps[k // 2] if k % 2 else (steps[k // 2 - 1] + steps[k // 2]) // 2
    return float(mid // 10**9)


def _flat_line_last(values: "deque[float] | list[float]", times: "deque[int] | list[int]", suspect_s: float,
                    fail_s: float, tolerance: float, interval: float | None = None, all_finite: bool = False) -> int:
    """`qartod.flat_line(values, times, ...)[-1]` without judging every earlier point again.

    `interval` (the median step, `_median_step_s(times)`) and `all_finite` (no NaN nor inf in
    `values`) may be given by a caller that keeps them up to date.
    """
    n = len(values)
    if n < 3:
        return PASS
    last = values[-1]
    if interval is None:
        interval = _median_step_s(times)
    if interval <= 0:
        return int(_qartod().flat_line(list(values), list(times), suspect_s, fail_s, tolerance)[-1])
    flag = PASS
    for threshold, value in ((suspect_s, SUSPECT), (fail_s, FAIL)):
        count = int(int(threshold) / interval)
        if n >= count + 1:
            if all_finite:
                window: Any = values if count + 1 == n else list(itertools.islice(values, n - count - 1, n))
            else:
                window = [v for v in itertools.islice(values, n - count - 1, n) if math.isfinite(v)]
            if window and abs(max(window) - min(window)) < tolerance:
                flag = value
    return MISSING if not math.isfinite(last) else flag
