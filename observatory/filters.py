"""What a researcher's query adds to a store's selection: depth, model, quality, versions, intervals.

A `Store` selects by site, gateway, probe, quantity, source and time
(observatory/store.py). On top of its columns this module

- filters by depth (one depth, or a layer top <= depth < bottom), model id,
  model version and the worst QARTOD flag kept (codes 1 pass, 2 not
  evaluated, 3 suspect, 4 fail, 9 missing run from best to worst);
- merges recalibrated variants into their quantity, keeping per time the
  newest model version (observatory.versions), or every version on request;
- aggregates to regular intervals (observatory.aggregate);
- reads a long time range in windows, so an export never holds more than
  one window of the archive (`windows`).

Every step works on the columns of either backend, so both give the same
arrays for the same data (tests/observatory/test_filters.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from humus.records import QualityFlag, Source
from observatory import versions
from observatory.aggregate import AGGREGATES, DEFAULT_WORST_FLAG, aggregate
from observatory.store import Selection, SeriesData, series_sort_key

FLAG_NAMES = {f.name.lower(): f for f in QualityFlag}


def parse_flag(value: str | int | QualityFlag) -> QualityFlag:
    """A QARTOD flag from its code or name (pass, not_evaluated, suspect, fail, missing)."""
    if isinstance(value, QualityFlag):
        return value
    text = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if text in FLAG_NAMES:
        return FLAG_NAMES[text]
    try:
        return QualityFlag(int(text))
    except ValueError:
        raise ValueError(f"flag {str(value)[:40]!r}: expected pass, not_evaluated, suspect, fail, missing "
                         "or a QARTOD code 1, 2, 3, 4, 9") from None


def parse_depth(value: float | str | tuple | None) -> float | tuple[float, float] | None:
    """One depth in cm (10) or a layer top:bottom (0:30, top included, bottom excluded)."""
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, tuple) and len(value) == 2:
        lo, hi = float(value[0]), float(value[1])
    else:
        text = str(value).strip()
        try:
            if ":" not in text:
                return float(text)
            a, b = text.split(":", 1)
            lo, hi = float(a), float(b)
        except ValueError:
            raise ValueError(f"depth {text[:40]!r}: expected a depth in cm (10) or a layer TOP:BOTTOM (0:30)") from None
    if not lo < hi:
        raise ValueError(f"depth layer {lo:g}:{hi:g}: expected top < bottom")
    return (lo, hi)


@dataclass(frozen=True)
class Filters:
    """The row and series filters beyond a store Selection (None: any)."""

    depth: float | tuple[float, float] | None = None
    model_id: str | None = None
    model_version: str | None = None
    min_flag: QualityFlag | None = None
    """The worst flag kept: SUSPECT keeps pass, not evaluated and suspect."""
    versions: str = "newest"
    every_ns: int | None = None
    agg: str = "mean"

    def __post_init__(self) -> None:
        if self.versions not in ("newest", "all"):
            raise ValueError(f"versions {self.versions!r}: expected 'newest' or 'all'")
        if self.agg not in AGGREGATES:
            raise ValueError(f"aggregate {self.agg!r}: expected one of {', '.join(AGGREGATES)}")

    @property
    def changes_rows(self) -> bool:
        """True when the store's own limit would count rows that these filters drop or merge."""
        return (self.depth is not None or self.model_id is not None or self.model_version is not None
                or self.min_flag is not None or self.every_ns is not None)

    def depth_ok(self, depth: float | None) -> bool:
        if self.depth is None:
            return True
        if depth is None:
            return False
        if isinstance(self.depth, tuple):
            return self.depth[0] <= depth < self.depth[1]
        return depth == self.depth


def read(store, sel: Selection, f: Filters, catalogue: set | None = None) -> Iterator[SeriesData]:
    """The series of `sel` after `f`, in series order; `catalogue` = `read_catalogue(store, sel)` (or read here)."""
    asked = sel.quantity
    if asked == versions.CATALOGUE or (asked and versions.base_quantity(asked)):
        for s in store.columns(dataclasses.replace(sel, limit=None if f.changes_rows else sel.limit)):
            yield from _finish_all([(s, False)], s.quantity, f)      # asked for by name: as stored
        return
    if catalogue is None:
        catalogue = read_catalogue(store, sel)
    wanted = sorted((q, mid, ver) for q, mid, ver in catalogue if asked in (None, q))
    if asked is None:
        # One stream; variants and the catalogue arrive beside their base series.
        push = sel.limit if not f.changes_rows and not wanted else None
        yield from _by_block(store.columns(dataclasses.replace(sel, limit=push)), f)
        return
    push = sel.limit if not f.changes_rows else None     # safe: each source is cut in the same order
    found = list(store.columns(dataclasses.replace(sel, limit=push)))
    for q, mid, ver in wanted:
        found += store.columns(dataclasses.replace(sel, quantity=versions.variant_quantity(q, mid, ver), limit=push))
    found.sort(key=lambda s: series_sort_key((s.site, s.gateway, s.probe, s.depth_cm, _base(s.quantity),
                                              s.source.value)))
    yield from _by_block(found, f)


def read_catalogue(store, sel: Selection) -> set[tuple[str, str, str]]:
    """(quantity, model id, model version) recalibrated within the selection's site, gateway and probe."""
    if sel.source is Source.RAW:
        return set()
    cat = Selection(site=sel.site, gateway=sel.gateway, probe=sel.probe, quantity=versions.CATALOGUE,
                    source=Source.CALIBRATED)
    return versions.versions_in(store.columns(cat))


def _base(quantity: str) -> str:
    return versions.base_quantity(quantity) or quantity


def _by_block(stream: Iterable[SeriesData], f: Filters) -> Iterator[SeriesData]:
    """Series grouped per (site, gateway, probe, depth), as the stores order them; versions merged per group."""
    block: list[SeriesData] = []
    for s in stream:
        if block and (s.site, s.gateway, s.probe, s.depth_cm) != (block[0].site, block[0].gateway, block[0].probe,
                                                                    block[0].depth_cm):
            yield from _block(block, f)
            block = []
        block.append(s)
    if block:
        yield from _block(block, f)


def _block(block: Sequence[SeriesData], f: Filters) -> Iterator[SeriesData]:
    if not f.depth_ok(block[0].depth_cm):
        return
    groups: dict[tuple[str, str], list[tuple[SeriesData, bool]]] = {}
    for s in block:
        if s.quantity == versions.CATALOGUE:
            continue
        base = versions.base_quantity(s.quantity)
        groups.setdefault((base or s.quantity, s.source.value), []).append((s, base is not None))
    for (quantity, _), candidates in sorted(groups.items()):
        yield from _finish_all(candidates, quantity, f)


def _finish_all(candidates: list[tuple[SeriesData, bool]], quantity: str, f: Filters) -> Iterator[SeriesData]:
    kept = []
    for s, recalibrated in candidates:
        if not f.depth_ok(s.depth_cm):
            continue
        if f.model_id is not None or f.model_version is not None:
            mask = np.ones(len(s), dtype=bool)
            if f.model_id is not None:
                mask &= np.asarray(s.model_id, dtype=object) == f.model_id
            if f.model_version is not None:
                mask &= np.asarray(s.model_version, dtype=object) == f.model_version
            s = versions.take(s, mask)
        if len(s):
            kept.append((s, recalibrated))
    if not kept:
        return
    if f.versions == "newest":
        out = [versions.newest(kept, quantity)]
    else:
        out = [s if s.quantity == quantity else versions.take(s, np.arange(len(s)), quantity) for s, _ in kept]
    for s in out:
        if f.every_ns is not None:
            if s.spectra is not None:
                continue          # spectra are not aggregated (docs/query.md)
            s = aggregate(s, f.every_ns, f.agg, f.min_flag or DEFAULT_WORST_FLAG)
        elif f.min_flag is not None:
            s = versions.take(s, s.flag <= int(f.min_flag))
        if len(s):
            yield s


def windows(sel: Selection, window_ns: int | None, every_ns: int | None, now_ns: int) -> list[Selection]:
    """`sel` cut into consecutive time windows of about `window_ns` (a multiple of `every_ns`, epoch-aligned).

    Only a selection with a start can be cut; the last window is open-ended
    when the selection is (so data stamped in the future is not lost).
    """
    if window_ns is None or sel.since_ns is None:
        return [sel]
    step = window_ns
    if every_ns:
        step = max(every_ns, (window_ns // every_ns) * every_ns)
    end = sel.until_ns if sel.until_ns is not None else now_ns
    out = []
    lo = sel.since_ns
    edge = (lo // step + 1) * step
    while edge < end:
        out.append(dataclasses.replace(sel, since_ns=lo, until_ns=edge))
        lo, edge = edge, edge + step
    out.append(dataclasses.replace(sel, since_ns=lo, until_ns=sel.until_ns))
    return out


DAY_NS = 86400 * 10**9


def first_time(store, sel: Selection, now_ns: int) -> int | None:
    """The start of the day of the earliest observation `sel` matches (None: nothing), by bisection on
    one-row queries (about 16 of them back to 1970): stores cannot say their time range otherwise."""
    def any_before(t: int) -> bool:
        return any(len(s) for s in store.columns(dataclasses.replace(sel, until_ns=t, limit=1)))

    if sel.since_ns is None:
        sel = dataclasses.replace(sel, since_ns=versions.CATALOGUE_END_NS)   # past the catalogue's rows
    hi = sel.until_ns if sel.until_ns is not None else now_ns + 366 * DAY_NS
    lo = sel.since_ns
    if not any_before(hi):
        return None
    if any_before(lo + 1):
        return lo
    while hi - lo > DAY_NS:          # any_before(hi) holds, any_before(lo + 1) does not
        mid = lo + (hi - lo) // 2
        if any_before(mid + 1):
            hi = mid
        else:
            lo = mid
    return lo // DAY_NS * DAY_NS


def head(stream: Iterable[SeriesData], limit: int | None) -> Iterator[SeriesData]:
    """At most `limit` rows in all, in order."""
    remaining = limit
    for s in stream:
        if remaining is not None:
            if remaining <= 0:
                return
            if len(s) > remaining:
                s = versions.take(s, np.arange(remaining))
            remaining -= len(s)
        yield s
