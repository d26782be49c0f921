"""The researchers' door into the archive: numpy arrays per series, whatever the backend.

    from observatory import query
    for s in query.series("sqlite:humus-demo/archive.sqlite", probe="teros-1", quantity="vwc", since="-7d"):
        s.time_ns, s.value, s.uncertainty, s.flag        # numpy arrays, one row per time
        good = s.value[s.flag == 1]
        s.signed        # per row: True where ingest verified the gateway's signature; None: cannot say

    for s in query.series(url, quantity="reflectance"):
        times, matrix, wavelengths = query.spectra_matrix(s)   # (n,), (n, bands), (bands,)

Times accept ISO 8601 (UTC when no zone is given; nanosecond fractions
kept), `now`, or relative to now like `-15m`, `-1h`, `-7d`, `-2w`.
`since` is inclusive, `until` exclusive. `humus query` prints the same
selections as a table, CSV or JSON (humus/commands/query.py).
"""

from __future__ import annotations

import dataclasses
import re
import time
from datetime import datetime, timezone
from typing import Iterator

import numpy as np

from humus.records import Observation, Source
from observatory.store import ColumnStore, Selection, SeriesData, Store, StoreError, observations_of
from observatory.stores import open_store

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "min": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9,
            "w": 7 * 86400 * 10**9}
_FRACTION = re.compile(r"^(.*T\d\d:\d\d:\d\d)\.(\d{1,9})(.*)$")


MIN_TIME_NS, MAX_TIME_NS = -(2**63) + 1, 2**63 - 1
"""Times are signed 64-bit nanoseconds (SQLite INTEGER, InfluxDB timestamps): 1677-09-21 to 2262-04-11."""


class TimeError(ValueError):
    """A time the user typed that is neither ISO 8601 nor relative."""


def parse_time(text: str, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch for an ISO 8601 time (UTC if no zone), `now`, or `-1h`-style offsets."""
    s = text.strip()
    now_ns = time.time_ns() if now_ns is None else now_ns
    if s.lower() == "now":
        return now_ns
    m = _RELATIVE.match(s.lower())
    if m:
        offset = float(m.group(1)) * _UNIT_NS[m.group(2)]
        if not offset <= now_ns - MIN_TIME_NS:     # also refuses inf from a thousand-digit number
            raise TimeError(f"time {text[:40]!r} reaches before {format_time(MIN_TIME_NS)}; "
                            "expected an offset within the 64-bit nanosecond range")
        return now_ns - int(offset)
    frac_ns = 0
    m = _FRACTION.match(s)
    if m:  # datetime keeps microseconds only; keep the nanoseconds ourselves
        s, digits = m.group(1) + m.group(3), m.group(2)
        frac_ns = int(digits.ljust(9, "0"))
    try:
        dt = datetime.fromisoformat(s.replace("z", "Z"))
    except ValueError:
        raise TimeError(f"time {text!r} is not ISO 8601 (2026-03-01 or 2026-03-01T12:00:00Z) "
                        "nor relative like -15m, -1h, -7d") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    seconds = int((dt - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds() // 1)
    ns = seconds * 10**9 + dt.microsecond * 1000 * (frac_ns == 0) + frac_ns
    if not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        raise TimeError(f"time {text!r}: expected a time from {format_time(MIN_TIME_NS)} to "
                        f"{format_time(MAX_TIME_NS)} (64-bit nanoseconds since 1970)")
    return ns


def format_time(ns: int) -> str:
    """ISO 8601 UTC with as many fraction digits as the time needs (0, 3, 6 or 9)."""
    seconds, frac = divmod(int(ns), 10**9)
    base = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return base + "Z"
    digits = f"{frac:09d}"
    for n in (3, 6, 9):
        if digits[n:] == "0" * (9 - n):
            return f"{base}.{digits[:n]}Z"
    return base + "Z"


def selection(site: str | None = None, gateway: str | None = None, probe: str | None = None,
              quantity: str | None = None, source: str | Source | None = None, since: str | int | None = None,
              until: str | int | None = None, limit: int | None = None, now_ns: int | None = None) -> Selection:
    """A Selection from user-friendly arguments (times as text or ns)."""
    def when(v):
        return None if v is None else v if isinstance(v, int) else parse_time(v, now_ns)
    if source is not None:
        try:
            source = Source(source)
        except ValueError:
            raise StoreError(f"source {source!r} is not 'raw' or 'calibrated'") from None
    if limit is not None and limit < 0:
        raise StoreError(f"limit {limit} is negative")
    return Selection(site=site, gateway=gateway, probe=probe, quantity=quantity, source=source,
                     since_ns=when(since), until_ns=when(until), limit=limit)


def _open(store: str | Store) -> tuple[Store, bool]:
    if isinstance(store, str):
        return open_store(store, create=False), True
    return store, False


def series(store: str | Store, **filters) -> list[SeriesData]:
    """Matching series as numpy columns, ordered by series key (filters: `selection` and `iter_series`)."""
    return list(iter_series(store, **filters))


def iter_series(store: str | Store, *, depth=None, model_id: str | None = None, model_version: str | None = None,
                min_flag=None, versions: str = "newest", every: str | int | None = None, agg: str = "mean",
                window: str | int | None = None, **sel) -> Iterator[SeriesData]:
    """`series` one at a time, for exports too large to hold (observatory/filters.py does the work).

    Beyond `selection`'s filters: `depth` (10, or a layer "0:30" / (0, 30)),
    `model_id`, `model_version`, `min_flag` (the worst QARTOD flag kept:
    "suspect" keeps pass, not evaluated and suspect), `versions` ("newest"
    per time, the default, or "all" recalibrated versions side by side),
    `every` ("1d", or ns) with `agg` mean|min|max|count, and `window`
    ("30d", or ns): with `since` given, read the archive that much at a time.
    """
    from observatory import filters as flt
    from observatory.aggregate import parse_every

    try:
        every_ns = every if every is None or isinstance(every, int) else parse_every(every)
        window_ns = window if window is None or isinstance(window, int) else parse_every(window)
        f = flt.Filters(depth=flt.parse_depth(depth), model_id=model_id, model_version=model_version,
                        min_flag=None if min_flag is None else flt.parse_flag(min_flag), versions=versions,
                        every_ns=every_ns, agg=agg)
    except ValueError as e:
        raise StoreError(str(e)) from None
    now_ns = sel.pop("now_ns", None) or time.time_ns()
    full = selection(now_ns=now_ns, **sel)
    s, owned = _open(store)
    try:
        if not isinstance(s, ColumnStore):
            raise StoreError(f"{type(s).__name__} cannot answer in columns")
        catalogue = flt.read_catalogue(s, full)
        if window_ns is not None and full.since_ns is None:
            start = flt.first_time(s, full, now_ns)
            if start is None:
                return
            full = dataclasses.replace(full, since_ns=start)
        parts = flt.windows(full, window_ns, every_ns, now_ns)
        yield from flt.head((x for part in parts for x in flt.read(s, part, f, catalogue)), full.limit)
    finally:
        if owned:
            s.close()


def observations(store: str | Store, **filters) -> Iterator[Observation]:
    """Matching observations one by one (convenient, slower than `series` for millions of values)."""
    for data in series(store, **filters):
        yield from observations_of(data)


def spectra_matrix(data: SeriesData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, spectra as an n x bands matrix, wavelengths) of a spectral series on one axis."""
    if data.spectra is None:
        raise ValueError(f"series {data.probe}/{data.quantity} holds no spectra")
    rows = [i for i, s in enumerate(data.spectra) if s is not None]
    axis = data.wavelengths[rows[0]]
    for i in rows:
        if not np.array_equal(data.wavelengths[i], axis):
            raise ValueError(f"series {data.probe}/{data.quantity} changes wavelength axis at "
                             f"{format_time(int(data.time_ns[i]))}; split it by time")
    return data.time_ns[rows], np.vstack([data.spectra[i] for i in rows]), np.array(axis)
