"""A batch's observations as decoded rows, made into `Observation` objects only when someone asks.

Why: the ingest worker decodes and stores hundreds of thousands of
observations a second, and building one frozen `Observation` per value
(with its checks) was a third of its CPU (issue 15: py-spy, 22 % + 10 %).
The fast decoder (`humus.fastdecode`) checks a batch column by column and
keeps its rows as they came off the wire; `ObservationRows` wraps them as
a `Sequence[Observation]`, so every consumer that iterates still sees
observations, while the stores (observatory.stores) read the rows
directly and never build one.

A row is any object with the wire's attribute names: probe, quantity,
time_ns, value (float; None or NaN when missing; a list or tuple for a
spectrum), unit, depth_cm, uncertainty, flag (int), flag_test, source
("raw"/"calibrated" or `Source`), model_id, model_version, wavelengths_nm.
An `Observation` is one, so stores take either.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence

from humus.records import Observation, QualityFlag, Source

_FLAGS = {int(f): f for f in QualityFlag}
_SOURCES = {s.value: s for s in Source}


class ObservationRows(Sequence[Observation]):
    """The observations of one decoded batch (one site and gateway), built on first access."""

    __slots__ = ("site", "gateway", "rows", "time_min", "time_max", "revised_count", "keys", "prepared",
                 "signed", "_observations")

    def __init__(self, site: str, gateway: str, rows: list, time_min: int, time_max: int,
                 revised_count: int, keys: list | None = None) -> None:
        self.site, self.gateway, self.rows = site, gateway, rows
        self.time_min, self.time_max, self.revised_count = time_min, time_max, revised_count
        self.keys = keys
        """Per row, a key that stands one to one for its names (probe, quantity, depth_cm, unit, flag_test,
        model_id, model_version, source): humus.fastdecode gives their JSON text as bytes. The encoder looks
        each row's tag set up by it."""
        self.prepared: object = None
        """A store's encoding of these rows, made ahead (observatory.stores.influx `prepare`)."""
        self.signed = False
        """The batch's signature verified (observatory.validate sets it): stores keep it with each value."""
        self._observations: tuple[Observation, ...] | None = None

    def observations(self) -> tuple[Observation, ...]:
        obs = self._observations
        if obs is None:
            obs = self._observations = tuple([_observation(self.site, self.gateway, r) for r in self.rows])
        return obs

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        return self.observations()[i]

    def __iter__(self) -> Iterator[Observation]:
        return iter(self.observations())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (ObservationRows, tuple, list)):
            return self.observations() == tuple(other)
        return NotImplemented

    def __add__(self, other: object) -> tuple[Observation, ...]:
        if isinstance(other, (ObservationRows, tuple)):
            return self.observations() + tuple(other)
        return NotImplemented

    def __radd__(self, other: object) -> tuple[Observation, ...]:
        if isinstance(other, tuple):
            return other + self.observations()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.observations())

    def __repr__(self) -> str:
        return f"ObservationRows({self.site}/{self.gateway}, {len(self.rows)} rows)"


def _observation(site: str, gateway: str, r) -> Observation:
    v = r.value
    if v is None:
        v = math.nan
    elif type(v) is list:
        v = tuple(v)
    wl = r.wavelengths_nm
    return Observation(site, gateway, r.probe, r.quantity, r.time_ns, v, r.unit, r.depth_cm, r.uncertainty,
                       _FLAGS[r.flag], r.flag_test, _SOURCES[r.source], r.model_id, r.model_version,
                       None if wl is None else tuple(wl), r.rev)


class SignedObservations(tuple):
    """A batch's observations decoded by the exact path whose signature verified: stores keep that with each value."""

    __slots__ = ()
    signed = True


def mark_signed(observations: Sequence[Observation]) -> Sequence[Observation]:
    """The same observations, marked as from a batch whose signature verified (one flag, no copy of rows)."""
    if isinstance(observations, ObservationRows):
        observations.signed = True
        return observations
    return SignedObservations(observations)


class BatchedObservations(Sequence[Observation]):
    """The observations of several batches for one store write, still in their parts.

    A store that knows `parts` encodes each part's rows; any other store
    iterates and gets `Observation`s, in order.
    """

    __slots__ = ("parts", "_len")

    def __init__(self, parts: Sequence[Sequence[Observation]]) -> None:
        self.parts = parts
        self._len = sum(len(p) for p in parts)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Observation]:
        for p in self.parts:
            yield from p

    def __getitem__(self, i):  # type: ignore[override]
        return list(self)[i]


def groups(observations: Sequence[Observation]) -> Iterator[tuple[str, str, Sequence, bool]]:
    """(site, gateway, rows, signed) of what a store is asked to write, in order within each site/gateway.

    Decoded batches give their rows as they are; plain observations are
    grouped by site and gateway (an observation keeps its place relative
    to the others of its series, so the last copy of a point is still last).
    `signed`: the part came from a batch whose signature verified
    (`ObservationRows.signed`, `SignedObservations`); anything else is not.
    """
    parts = observations.parts if isinstance(observations, BatchedObservations) else (observations,)
    for part in parts:
        signed = getattr(part, "signed", False) is True
        if isinstance(part, ObservationRows):
            if part.rows:
                yield part.site, part.gateway, part.rows, signed
            continue
        by: dict[tuple[str, str], list] = {}
        for o in part:
            key = (o.site, o.gateway)
            rows = by.get(key)
            if rows is None:
                rows = by[key] = []
            rows.append(o)
        for (site, gateway), rows in by.items():
            yield site, gateway, rows, signed


def time_span(observations: Sequence[Observation]) -> tuple[int, int]:
    """(earliest, latest) time_ns of a non-empty batch, without building its observations."""
    if isinstance(observations, ObservationRows):
        return observations.time_min, observations.time_max
    times = [o.time_ns for o in observations]
    return min(times), max(times)


def revised(observations: Sequence[Observation]) -> Iterable[Observation]:
    """The observations with a revision > 0; decoded batches without one build nothing."""
    if isinstance(observations, ObservationRows) and not observations.revised_count:
        return ()
    return [o for o in observations if o.revision]
