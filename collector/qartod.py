"""QARTOD quality tests as pure numpy functions, flag for flag identical to ioos_qc 3.x.

Sources: U.S. IOOS, *Manual for Real-Time Quality Control of In-situ Temperature
and Salinity Data* v2.1 (2020) and the QARTOD manuals' shared flag scheme
(1 pass, 2 not evaluated, 3 suspect, 4 fail, 9 missing); the reference
implementation is `ioos_qc.qartod` 3.0 (gross_range_test, spike_test,
rate_of_change_test, flat_line_test), whose exact behaviour we reproduce so
that flags computed on the gateway match what a researcher recomputes later
with ioos_qc (tests/collector/test_qartod.py compares them on many series).

Quirks of the reference that are reproduced on purpose:

- NaN is MISSING, but +/-inf is "invalid" only for the MISSING mask: range
  comparisons still see the infinite value, so gross range flags inf FAIL;
- rate of change and flat line truncate time differences to whole seconds
  (numpy ``timedelta64[s]``); a zero-second step gives an undefined rate,
  which is not flagged;
- flat line passes every value of a series shorter than 3 points (NaN too).

Times are integer nanoseconds since 1970 (``Observation.time_ns``).
Flags come back as ``uint8`` arrays of the input's length.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PASS, NOT_EVALUATED, SUSPECT, FAIL, MISSING = 1, 2, 3, 4, 9


def _values(inp: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(inp, dtype=np.float64).reshape(-1)


def _seconds(times_ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """Time steps in whole seconds as floats, truncated the way ioos_qc does (timedelta64[s])."""
    t = np.asarray(times_ns).reshape(-1).astype("datetime64[ns]")
    return np.diff(t).astype("timedelta64[s]").astype(float)


def gross_range(inp: Sequence[float] | np.ndarray, fail_span: tuple[float, float],
                suspect_span: tuple[float, float] | None = None) -> np.ndarray:
    """FAIL outside the sensor span, SUSPECT outside the user span, MISSING for NaN/inf."""
    x = _values(inp)
    flo, fhi = sorted(fail_span)
    flags = np.ones(x.size, dtype=np.uint8)
    flags[~np.isfinite(x)] = MISSING
    with np.errstate(invalid="ignore"):
        if suspect_span is not None:
            slo, shi = sorted(suspect_span)
            if slo < flo or shi > fhi:
                raise ValueError(f"suspect span {slo, shi} must fall within the fail span {flo, fhi}")
            flags[(x < slo) | (x > shi)] = SUSPECT
        flags[(x < flo) | (x > fhi)] = FAIL
    return flags


def spike(inp: Sequence[float] | np.ndarray, suspect_threshold: float | None = None,
          fail_threshold: float | None = None, method: str = "average") -> np.ndarray:
    """Spike at point n against its neighbours n-1 and n+1; the two ends are NOT_EVALUATED.

    "average": |x[n] - (x[n-1] + x[n+1]) / 2|; "differential": min(|x[n]-x[n-1]|,
    |x[n+1]-x[n]|) where the two steps have opposite signs, else 0. A point whose
    reference cannot be formed (an invalid neighbour, or numpy.ma's safe
    division refusing a sum near the float limit) is NOT_EVALUATED.
    """
    with np.errstate(all="ignore"):
        return _spike(np.ma.masked_invalid(_values(inp)), suspect_threshold, fail_threshold, method)


def _spike(x: np.ma.MaskedArray, suspect_threshold: float | None, fail_threshold: float | None,
           method: str) -> np.ndarray:
    n = x.size
    if method == "average":
        ref = np.ma.zeros(n, dtype=np.float64)
        if n > 2:
            ref[1:-1] = (x[:-2] + x[2:]) / 2
        diff = np.abs(x - np.ma.masked_invalid(ref))
    elif method == "differential":
        step = np.ma.diff(x)
        diff = np.ma.zeros(n, dtype=np.float64)
        if n > 2:
            diff[1:-1] = np.minimum(np.abs(step[:-1]), np.abs(step[1:]))
            with np.errstate(invalid="ignore"):
                diff[1:-1][step[:-1] * step[1:] >= 0] = 0
        diff = np.ma.masked_invalid(diff)
    else:
        raise ValueError(f'Unknown method: "{method}", only "average" and "differential" methods are available')
    flags = np.ones(n, dtype=np.uint8)
    # A masked comparison used as an index acts on its raw data (numpy.ma); the
    # points it touches wrongly are overwritten below, as in the reference.
    with np.errstate(invalid="ignore"):
        if suspect_threshold:
            flags[np.ma.getdata(diff > suspect_threshold)] = SUSPECT
        if fail_threshold:
            flags[np.ma.getdata(diff > fail_threshold)] = FAIL
    if n:
        flags[0] = flags[-1] = NOT_EVALUATED
    flags[np.ma.getmaskarray(diff)] = NOT_EVALUATED
    flags[np.ma.getmaskarray(x)] = MISSING
    return flags


def rate_of_change(inp: Sequence[float] | np.ndarray, times_ns: Sequence[int] | np.ndarray,
                   threshold: float, fail_threshold: float | None = None) -> np.ndarray:
    """SUSPECT (FAIL) where |x[n] - x[n-1]| / dt exceeds `threshold` (`fail_threshold`), units per second.

    dt is truncated to whole seconds; where numpy.ma refuses the division (dt = 0)
    the reference compares the bare difference |x[n] - x[n-1]|, and so do we.
    """
    x = np.ma.masked_invalid(_values(inp))
    flags = np.ones(x.size, dtype=np.uint8)
    roc = np.ma.zeros(x.size, dtype=np.float64)
    if x.size > 1:
        with np.errstate(all="ignore"):
            roc[1:] = np.abs(np.ma.diff(x) / _seconds(times_ns))
    with np.errstate(invalid="ignore"):
        flags[np.ma.getdata(roc > threshold)] = SUSPECT
        if fail_threshold is not None:
            flags[np.ma.getdata(roc > fail_threshold)] = FAIL
    flags[np.ma.getmaskarray(x)] = MISSING
    return flags


def flat_line(inp: Sequence[float] | np.ndarray, times_ns: Sequence[int] | np.ndarray,
              suspect_threshold: float, fail_threshold: float, tolerance: float = 0) -> np.ndarray:
    """SUSPECT (FAIL) where the values of the last `threshold` seconds vary by less than `tolerance`.

    The window ending at point n spans ``int(threshold) / median step`` steps
    (whole seconds), i.e. that many previous points plus n; NaN/inf inside a
    window are ignored; points before the first full window pass.
    """
    x = _values(inp)
    n = x.size
    flags = np.full(n, PASS, dtype=np.int64)
    if n < 3:
        return flags.astype(np.uint8)
    interval = float(np.median(np.diff(np.asarray(times_ns).reshape(-1).astype("datetime64[ns]")))
                     .astype("timedelta64[s]").astype(float))
    bad = ~np.isfinite(x)
    for threshold, value in ((suspect_threshold, SUSPECT), (fail_threshold, FAIL)):
        with np.errstate(divide="ignore", invalid="ignore"):
            count = int(np.float64(int(threshold) / interval if interval else np.inf).astype(int))
        if count < 0:
            raise ValueError(f"flat line window of {threshold} s over a median step of {interval} s is undefined")
        hits = np.zeros(n, dtype=bool)
        if n >= count + 1:
            # windows x[i .. i+count] for i in 0 .. n-count-1 judge point i+count
            rows = n - count
            idx = np.arange(rows)[:, None] + np.arange(count + 1)[None, :]
            w = x[idx]
            wbad = bad[idx]
            lo = np.where(wbad, np.inf, w).min(axis=1)
            hi = np.where(wbad, -np.inf, w).max(axis=1)
            some = ~wbad.all(axis=1)
            with np.errstate(invalid="ignore", over="ignore"):
                rng = np.abs(hi - lo)
                hits[count:] = some & (rng < tolerance)
        flags[hits] = value
    flags[bad] = MISSING
    return flags.astype(np.uint8)


def aggregate(*flag_arrays: np.ndarray) -> np.ndarray:
    """Worst flag per point, QARTOD precedence MISSING > FAIL > SUSPECT > PASS > NOT_EVALUATED."""
    rank = np.zeros(10, dtype=np.int8)
    rank[[NOT_EVALUATED, PASS, SUSPECT, FAIL, MISSING]] = [0, 1, 2, 3, 4]
    if not flag_arrays:
        raise ValueError("aggregate needs at least one flag array")
    stack = np.vstack([np.asarray(f, dtype=np.uint8) for f in flag_arrays])
    worst = np.argmax(rank[stack], axis=0)
    return stack[worst, np.arange(stack.shape[1])]
