"""What a driver returns for one probe poll.

A driver never raises into the collector: every failure is a `DriverStatus`
on a `Reading`, with a message saying what to check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping


class DriverStatus(str, Enum):
    OK = "ok"
    TIMEOUT = "timeout"            # nothing, or not enough, came back in time
    CRC_ERROR = "crc_error"        # a frame whose CRC/checksum did not match (after retries)
    GARBLED = "garbled"            # bytes that are not a valid frame
    PARTIAL = "partial"            # a frame cut short
    OUT_OF_RANGE = "out_of_range"  # a well-formed value the probe cannot physically report
    SATURATED = "saturated"        # a detector channel at full scale
    STUCK = "stuck"                # the probe repeats the same value (reported by drivers that detect it)
    ABSENT = "absent"              # the port is gone (unplugged) or cannot be opened
    BUSY = "busy"                  # the port is held by another process
    ERROR = "error"                # anything else, with a message


@dataclass(frozen=True, slots=True)
class RawValue:
    """One raw value as the probe reported it."""

    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class Spectrum:
    """A spectral frame: counts or calibrated channel values per wavelength."""

    wavelengths_nm: tuple[float, ...]
    values: tuple[float, ...]
    unit: str                      # "counts", "uW/cm2", "reflectance"...
    integration_ms: float
    gain: float = 1.0
    dark: tuple[float, ...] | None = None
    white: tuple[float, ...] | None = None
    saturated: bool = False
    full_scale: float | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One poll of one probe. `values` is empty unless the status says data came back."""

    probe: str
    time_ns: int
    status: DriverStatus
    values: Mapping[str, RawValue] = field(default_factory=dict)
    spectrum: Spectrum | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status is DriverStatus.OK
