"""Regular intervals from irregular series: mean, min, max or count per bin, quality flags respected.

Bins are aligned on the epoch (1970-01-01T00:00Z): with `every` = 1 day a
bin is one UTC day, labelled by its start. Only values whose QARTOD flag is
no worse than `worst_flag` enter a bin (default NOT_EVALUATED: pass and not
evaluated count, suspect, fail and missing do not; QARTOD codes 1 < 2 < 3 <
4 < 9 run from best to worst). A bin that holds rows but no usable value is
kept, as NaN with flag MISSING and flag_test `no_usable_value`, so a gap
stays a recorded fact. A bin's flag is the worst flag among the values used.
A bin is signed (SeriesData.signed) only if every value used came from a
batch whose signature verified; a bin without a usable value is not.

Uncertainty of a mean: sqrt(Σ u_i²) / n, independent errors (JCGM 100:2008,
GUM 5.1.2), NaN when a value used has none; of a min or max, that of the
value chosen; a count has none. The caveat for researchers: errors of one
calibration model are not independent from reading to reading, so the
mean's uncertainty is a lower bound (docs/researchers.md).
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np

from humus.records import QualityFlag
from observatory.store import SeriesData

Aggregate = Literal["mean", "min", "max", "count"]
AGGREGATES = ("mean", "min", "max", "count")
DEFAULT_WORST_FLAG = QualityFlag.NOT_EVALUATED

_EVERY = re.compile(r"^(\d+)\s*(s|m|min|h|d|w)$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "min": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9,
            "w": 7 * 86400 * 10**9}


def parse_every(text: str) -> int:
    """Nanoseconds of an interval written like 15m, 1h, 1d, 1w (whole numbers)."""
    m = _EVERY.match(str(text).strip().lower())
    if not m or int(m.group(1)) == 0 or int(m.group(1)) > 10**6:
        raise ValueError(f"interval {str(text)[:40]!r}: expected a whole number and a unit, like 15m, 1h, 1d or 1w")
    return int(m.group(1)) * _UNIT_NS[m.group(2)]


def aggregate(s: SeriesData, every_ns: int, agg: Aggregate = "mean",
              worst_flag: QualityFlag = DEFAULT_WORST_FLAG) -> SeriesData:
    """`s` on bins of `every_ns` (epoch-aligned); see the module docstring for flags and uncertainty."""
    if agg not in AGGREGATES:
        raise ValueError(f"aggregate {agg!r}: expected one of {', '.join(AGGREGATES)}")
    if s.spectra is not None:
        raise ValueError(f"series {s.probe}/{s.quantity} holds spectra; aggregate scalar series only")
    n = len(s)
    if n == 0:
        return s
    bins = s.time_ns // every_ns                              # floor division: epoch-aligned, also before 1970
    order = np.argsort(bins, kind="stable")
    bins, value, unc, flag = bins[order], s.value[order], s.uncertainty[order], s.flag[order]
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    usable = (flag <= int(worst_flag)) & np.isfinite(value)
    count = np.add.reduceat(usable.astype(np.int64), starts)
    none = count == 0
    if agg == "count":
        out_value = count.astype(np.float64)
        out_unc = np.full(len(starts), np.nan)
    elif agg == "mean":
        total = np.add.reduceat(np.where(usable, value, 0.0), starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            out_value = total / count
            u2 = np.add.reduceat(np.where(usable, unc * unc, 0.0), starts)
            out_unc = np.sqrt(u2) / count
        out_unc[np.add.reduceat((usable & ~np.isfinite(unc)).astype(np.int64), starts) > 0] = np.nan
    else:
        fill = np.inf if agg == "min" else -np.inf
        v = np.where(usable, value, fill)
        reduce = np.minimum if agg == "min" else np.maximum
        out_value = reduce.reduceat(v, starts)
        # the uncertainty of the value chosen: that of the first usable row of its bin holding it
        bin_of = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
        hit = usable & (v == out_value[bin_of])
        first = np.minimum.reduceat(np.where(hit, np.arange(n), n), starts)
        out_unc = np.where(first < n, unc[np.minimum(first, n - 1)], np.nan)
    out_value = np.where(none & (agg != "count"), np.nan, out_value)
    worst = np.maximum.reduceat(np.where(usable, flag, 0).astype(np.uint8), starts)
    out_flag = np.where(none, np.uint8(QualityFlag.MISSING), worst).astype(np.uint8)
    ends = np.r_[starts[1:], n]
    unit, model_id, model_version = (_labels(col, order, starts, ends) for col in (s.unit, s.model_id,
                                                                                   s.model_version))
    if agg == "count":
        unit = np.full(len(starts), "1", dtype=object)
    signed = None
    if s.signed is not None:  # every value used signed, and at least one used
        unsigned_used = np.add.reduceat((usable & ~np.asarray(s.signed, dtype=bool)[order]).astype(np.int64), starts)
        signed = (unsigned_used == 0) & ~none
    return SeriesData(s.site, s.gateway, s.probe, s.depth_cm, s.quantity, s.source,
                      time_ns=bins[starts] * every_ns, value=out_value, uncertainty=out_unc, flag=out_flag,
                      unit=unit, flag_test=np.array([("no_usable_value" if e else None) for e in none], dtype=object),
                      model_id=model_id, model_version=model_version, signed=signed)


def _labels(col, order: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A text column per bin: its value when all the bin's rows agree, else None (mixed)."""
    col = np.asarray(col, dtype=object)
    if len(col) and (col == col[0]).all():          # the usual case: one unit, one model
        return np.full(len(starts), col[0], dtype=object)
    out = np.empty(len(starts), dtype=object)
    for k, (a, b) in enumerate(zip(starts, ends)):
        distinct = set(col[order[a:b]].tolist())
        out[k] = distinct.pop() if len(distinct) == 1 else None
    return out
