"""The one interface every archive backend implements.

Backends: `observatory.stores.sqlite` (embedded archive, the default) and
`observatory.stores.influx` (InfluxDB v1 `/write` or v2 API through
influxdb-client; InfluxQL queries). All pass tests/observatory/test_store_contract.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

from humus.records import Observation, QualityFlag, Source


class StoreError(Exception):
    """A store failure to show the user (bad URL, missing credentials...)."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached right now; retry later, nothing was lost."""


class StoreRejected(StoreError):
    """This data is refused; not an outage: writing it again will fail again.

    Raised for faults of the data (a string SQLite cannot encode, a line
    InfluxDB cannot parse, a field type conflict), never for faults of the
    store (unknown database, credentials, a full disk), which are plain
    `StoreError` or `StoreUnavailable`. The ingest worker dead-letters a
    batch refused this way instead of holding every message behind it.
    """


@dataclass(frozen=True, slots=True)
class Selection:
    """What a query asks for; None means any."""

    site: str | None = None
    gateway: str | None = None
    probe: str | None = None
    quantity: str | None = None
    source: Source | None = None
    since_ns: int | None = None   # inclusive
    until_ns: int | None = None   # exclusive
    limit: int | None = None


@runtime_checkable
class Store(Protocol):
    def write(self, observations: Sequence[Observation]) -> None:
        """Durably store; when it returns the data survives a crash. Idempotent:
        the same (series_key, time_ns) written twice is stored once, the last
        write winning. Raises StoreUnavailable when the backend is down,
        StoreRejected when it refuses this data (and would refuse it again)."""
        ...

    def query(self, selection: Selection) -> Iterable[Observation]:
        """Observations matching `selection`, ordered by series then time."""
        ...

    def close(self) -> None:
        ...


@dataclass(slots=True)
class SeriesData:
    """One series as columns, for researchers' numpy work without one object per value.

    `value` is NaN where missing and for spectral rows; spectral rows carry
    their float64 values and wavelength axis in `spectra` and `wavelengths`
    (None on scalar rows; both None for a scalar-only series).
    `uncertainty` is NaN where none was given; `flag` holds QARTOD codes.
    `signed` is True where the value was written from a batch whose
    Ed25519 signature ingest verified (docs/wire.md, "Signed batches"),
    False where not; None when the archive cannot say (an SQLite archive
    from before the record, opened read-only; InfluxDB layout 1 points).
    """

    site: str
    gateway: str
    probe: str
    depth_cm: float | None
    quantity: str
    source: Source
    time_ns: "np.ndarray"
    value: "np.ndarray"
    uncertainty: "np.ndarray"
    flag: "np.ndarray"
    unit: Sequence[str | None]            # list, or numpy object array
    flag_test: Sequence[str | None]
    model_id: Sequence[str | None]
    model_version: Sequence[str | None]
    spectra: list["np.ndarray | None"] | None = None
    wavelengths: list["np.ndarray | None"] | None = None
    signed: "np.ndarray | None" = None

    def __len__(self) -> int:
        return len(self.time_ns)

    @property
    def key(self) -> tuple:
        return (self.site, self.gateway, self.probe, self.depth_cm, self.quantity, self.source.value)


def series_sort_key(key: tuple) -> tuple:
    """Order of series in query results: by id fields, no depth first, then depth ascending."""
    site, gateway, probe, depth, quantity, source = key
    return (site, gateway, probe, depth is not None, depth if depth is not None else 0.0, quantity, source)


@runtime_checkable
class ColumnStore(Protocol):
    """Stores that can also answer in columns (both backends do; observatory.query uses it)."""

    def columns(self, selection: Selection) -> Iterable[SeriesData]:
        ...


def observations_of(data: SeriesData) -> "Iterable[Observation]":
    """The rows of a SeriesData back as Observations (for Store.query)."""
    for i in range(len(data.time_ns)):
        spectrum = data.spectra[i] if data.spectra is not None else None
        unc = float(data.uncertainty[i])
        if spectrum is not None:
            value: object = tuple(spectrum.tolist())
            wl = tuple(data.wavelengths[i].tolist())
        else:
            value, wl = float(data.value[i]), None
        yield Observation(
            site=data.site, gateway=data.gateway, probe=data.probe, quantity=data.quantity,
            time_ns=int(data.time_ns[i]), value=value, unit=data.unit[i] or "", depth_cm=data.depth_cm,
            uncertainty=None if unc != unc else unc, flag=QualityFlag(int(data.flag[i])),
            flag_test=data.flag_test[i], source=data.source, model_id=data.model_id[i],
            model_version=data.model_version[i], wavelengths_nm=wl)
