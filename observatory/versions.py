"""Several calibrations of one series side by side: recalibrated variants, their catalogue, the newest per time.

Why a naming scheme: the archive keys a series by (site, gateway, probe,
depth, quantity, source), not by model, so a second model's value for the
same probe and time written under the same quantity would replace the
first (SQLite) or hide it (InfluxDB keeps the latest model version per
time). `humus recalibrate` must never overwrite, so it writes each model
version of quantity Q as its own series:

    Q__r<tag>         the values of one (model id, model version); tag = 8 hex digits of
                      SHA-256("<model id>\\n<model version>"); every row also carries
                      model_id and model_version, so the tag is only a key
    recalibrations    the catalogue, one quantity for all: per recalibrated probe and depth,
                      one row per (Q, model id, model version), its unit naming Q, its value
                      the number of values the last run wrote, at time_ns = SHA-256 of
                      "Q\\n<model id>\\n<model version>" cut to 32 bits (the first seconds of
                      1970): deterministic, so a second run replaces its row

Readers (`observatory.query`) read the catalogue (one small query), fetch
the variants, and per time keep the newest version (`precedence`), unless
a model id or version is asked for. An archive never recalibrated answers
exactly as before: an empty catalogue, nothing else read.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence

import numpy as np

from observatory.store import SeriesData

VARIANT = re.compile(r"\A(?P<base>[a-z][a-z0-9_]*?)__r(?P<tag>[0-9a-f]{8})\Z")
CATALOGUE = "recalibrations"
MAX_BASE_QUANTITY = 32
"""The catalogue names the quantity in its unit field, at most 32 characters (humus.records.MAX_TEXT)."""

_VERSION_PARTS = re.compile(r"\d+|\D+")


def tag(model_id: str, model_version: str) -> str:
    return hashlib.sha256(f"{model_id}\n{model_version}".encode()).hexdigest()[:8]


def variant_quantity(quantity: str, model_id: str, model_version: str) -> str:
    """Where the values of one model version of `quantity` are written by a recalibration."""
    if len(quantity) > MAX_BASE_QUANTITY:
        raise ValueError(f"quantity {quantity!r}: expected at most {MAX_BASE_QUANTITY} characters to recalibrate")
    return f"{quantity}__r{tag(model_id, model_version)}"


CATALOGUE_END_NS = 2**32
"""Catalogue rows lie before this (4.3 s after 1970), before any real observation."""


def catalogue_time_ns(quantity: str, model_id: str, model_version: str) -> int:
    """The catalogue row's time: 32 bits of a hash as nanoseconds (under 4.3 s after 1970), the same every run."""
    return int(hashlib.sha256(f"{quantity}\n{model_id}\n{model_version}".encode()).hexdigest()[:8], 16)


def base_quantity(quantity: str) -> str | None:
    """Q for a variant Q__r<tag>, None for any other quantity."""
    m = VARIANT.match(quantity)
    return m.group("base") if m else None




def version_order(version: str | None) -> tuple:
    """A model version as a sort key, numbers compared as numbers: "2026.10" after "2026.9", "10" after "9"."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _VERSION_PARTS.findall(version or ""))


def precedence(model_id: str | None, model_version: str | None, recalibrated: bool) -> tuple:
    """Which of several values of one time is 'the newest': the highest model version, then a recalibrated
    value over a live one, then the model id (so the choice never depends on the order of reading)."""
    return (version_order(model_version), recalibrated, model_id or "")


def take(s: SeriesData, rows: np.ndarray, quantity: str | None = None) -> SeriesData:
    """The rows `rows` (indices or a boolean mask) of `s`, optionally renamed."""
    idx = np.flatnonzero(rows) if rows.dtype == bool else rows

    def obj(col):
        return np.asarray(col, dtype=object)[idx] if len(idx) else np.empty(0, dtype=object)
    return SeriesData(s.site, s.gateway, s.probe, s.depth_cm, quantity or s.quantity, s.source,
                      time_ns=s.time_ns[idx], value=s.value[idx], uncertainty=s.uncertainty[idx], flag=s.flag[idx],
                      unit=obj(s.unit), flag_test=obj(s.flag_test), model_id=obj(s.model_id),
                      model_version=obj(s.model_version),
                      spectra=None if s.spectra is None else [s.spectra[i] for i in idx],
                      wavelengths=None if s.wavelengths is None else [s.wavelengths[i] for i in idx],
                      signed=None if s.signed is None else s.signed[idx])


def concat(parts: Sequence[SeriesData], quantity: str) -> SeriesData:
    """Rows of several series of one key (same site, probe, depth, source) as one series, in the given order."""
    first = parts[0]
    spectral = any(p.spectra is not None for p in parts)

    def objs(name):
        return np.concatenate([np.asarray(getattr(p, name), dtype=object) for p in parts])
    return SeriesData(first.site, first.gateway, first.probe, first.depth_cm, quantity, first.source,
                      time_ns=np.concatenate([p.time_ns for p in parts]),
                      value=np.concatenate([p.value for p in parts]),
                      uncertainty=np.concatenate([p.uncertainty for p in parts]),
                      flag=np.concatenate([p.flag for p in parts]),
                      unit=objs("unit"), flag_test=objs("flag_test"), model_id=objs("model_id"),
                      model_version=objs("model_version"),
                      spectra=[x for p in parts for x in (p.spectra or [None] * len(p))] if spectral else None,
                      wavelengths=[x for p in parts for x in (p.wavelengths or [None] * len(p))] if spectral else None,
                      signed=None if any(p.signed is None for p in parts)    # one part cannot say: unknown
                      else np.concatenate([np.asarray(p.signed, dtype=bool) for p in parts]))


def newest(candidates: Sequence[tuple[SeriesData, bool]], quantity: str) -> SeriesData:
    """One series from several versions of one key: per time, the row of the highest `precedence`.

    `candidates` are (series, recalibrated) pairs; the result is in time order.
    """
    if len(candidates) == 1:
        s = candidates[0][0]
        return s if s.quantity == quantity else take(s, np.arange(len(s)), quantity)
    merged = concat([s for s, _ in candidates], quantity)
    ranks: dict[tuple, int] = {}
    keys = [precedence(mid, ver, recal) for s, recal in candidates for mid, ver in zip(s.model_id, s.model_version)]
    for k in sorted(set(keys)):
        ranks[k] = len(ranks)
    rank = np.array([ranks[k] for k in keys], dtype=np.int64)
    order = np.lexsort((-rank, merged.time_ns))       # by time, the highest precedence first
    t = merged.time_ns[order]
    keep = order[np.r_[True, t[1:] != t[:-1]]] if len(t) else order
    return take(merged, keep)


def versions_in(catalogue: Iterable[SeriesData]) -> set[tuple[str, str, str]]:
    """(quantity, model id, model version) triples that catalogue series list."""
    return {(q, mid, ver) for s in catalogue for q, mid, ver in zip(s.unit, s.model_id, s.model_version)
            if q and mid and ver}
