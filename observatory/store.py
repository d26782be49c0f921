"""The one interface every archive backend implements.

Backends: `observatory.stores.sqlite` (embedded archive, the default) and
`observatory.stores.influx` (InfluxDB v1 `/write` or v2 API through
influxdb-client; InfluxQL queries). All pass tests/observatory/test_store_contract.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence, runtime_checkable

from humus.records import Observation, Source


class StoreError(Exception):
    """A store failure to show the user (bad URL, missing credentials...)."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached right now; retry later, nothing was lost."""


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
        write winning. Raises StoreUnavailable when the backend is down."""
        ...

    def query(self, selection: Selection) -> Iterable[Observation]:
        """Observations matching `selection`, ordered by series then time."""
        ...

    def close(self) -> None:
        ...
