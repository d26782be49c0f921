"""What every probe driver is: commands in, a `Reading` out, never an exception.

A driver is handed a `SerialTransport` (it never opens a port itself, so a
simulator pty and a real adapter are interchangeable), a probe id and the
probe's bus address. Subclasses implement `poll()`, which may raise
`DriverFailure` (a status with a message) or let a protocol's
`ProtocolError` or the transport's `PortAbsent`/`PortBusy` escape; `read()` turns every outcome into a `Reading`:

=====================  ==================================================
outcome of poll()      Reading.status
=====================  ==================================================
returns a Reading      as returned
DriverFailure          its status and message
ProtocolError          its status (TIMEOUT, CRC_ERROR, PARTIAL, GARBLED...)
PortAbsent             ABSENT (unplugged; the transport retries with back-off)
PortBusy               BUSY (another process holds the port)
any other exception    ERROR, message "<Type>: <text>" (a bug to report)
=====================  ==================================================
"""

from __future__ import annotations

import abc
import logging
import math
import time
from collections import deque
from typing import Any, Callable, ClassVar, Mapping, Sequence

from firmware_bridge.protocols import ProtocolError
from firmware_bridge.reading import DriverStatus, RawValue, Reading, Spectrum
from firmware_bridge.transport import PortAbsent, PortBusy, SerialSettings, SerialTransport

log = logging.getLogger(__name__)


class DriverConfigError(ValueError):
    """A driver built with an impossible address or option (a configuration error).

    `field` names what is wrong as a configuration key under the probe
    (``address`` or ``options.<name>``), `expected` what would do and `got`
    what was given, so a configuration loader can say it in its own words.
    """

    def __init__(self, message: str, *, field: str = "", expected: str = "", got: Any = None) -> None:
        super().__init__(message)
        self.field, self.expected, self.got = field, expected, got


class DriverFailure(Exception):
    """Raised inside `poll()` to end the poll with a status and a message."""

    def __init__(self, status: DriverStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StuckDetector:
    """Flags a probe that repeats exactly the same values `polls` times in a row.

    Real sensors carry noise in their last digit; a frozen firmware or an
    ADC stuck on one code repeats itself bit for bit. With ``polls = N`` the
    N-th identical reading in a row (and every one after it) is STUCK;
    ``polls = 0`` disables the check.
    """

    def __init__(self, polls: int) -> None:
        if polls < 0:
            raise DriverConfigError(f"stuck_polls {polls}: expected 0 (off) or a count >= 2")
        self.polls = polls
        self._recent: deque[tuple[float, ...]] = deque(maxlen=max(polls, 1))

    def update(self, values: Sequence[float]) -> bool:
        """Record one poll's values; True if the last `polls` polls were identical."""
        if self.polls < 2:
            return False
        self._recent.append(tuple(values))
        return len(self._recent) == self.polls and len(set(self._recent)) == 1

    def reset(self) -> None:
        self._recent.clear()


class Driver(abc.ABC):
    """One probe model on one transport; `read()` never raises."""

    name: ClassVar[str]
    serial_settings: ClassVar[SerialSettings]
    quantities: ClassVar[Mapping[str, str]]
    #: options this driver accepts, with their defaults (unknown options are refused); a given
    #: option must have its default's type (bool, whole number, number or text)
    option_defaults: ClassVar[Mapping[str, Any]] = {"stuck_polls": 5}
    #: inclusive bounds of numeric options
    option_ranges: ClassVar[Mapping[str, tuple[float, float]]] = {"stuck_polls": (0, 1000)}
    #: False for point-to-point probes: an address in their configuration would mean nothing
    takes_address: ClassVar[bool] = True
    #: what the Reading's spectrum holds ("counts", "uW/cm2"...), None for a probe without spectra
    spectrum_unit: ClassVar[str | None] = None
    #: True if spectra come with their dark and white references (reflectance can be computed)
    spectrum_references: ClassVar[bool] = False

    def __init__(self, transport: SerialTransport, probe_id: str, address: str = "",
                 options: Mapping[str, Any] | None = None) -> None:
        self.transport = transport
        self.probe_id = probe_id
        self.address = address
        if address and not self.takes_address:
            raise self.config_error("address", f"none (a {self.name} probe has no bus address)", address)
        given = dict(options or {})
        unknown = sorted(set(given) - set(self.option_defaults))
        if unknown:
            raise DriverConfigError(
                f"driver {self.name}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(self.option_defaults)) or '(none)'}",
                field=f"options.{unknown[0]}", expected=f"an option of driver {self.name} "
                f"({', '.join(sorted(self.option_defaults)) or 'none'})", got=unknown[0])
        for key, value in given.items():
            self._check_option(key, value)
        self.options: dict[str, Any] = {**self.option_defaults, **given}
        self.stuck = StuckDetector(int(self.options.get("stuck_polls", 0) or 0))

    def config_error(self, field: str, expected: str, got: Any, what: str = "") -> DriverConfigError:
        """The error for a bad `field` (``address`` or ``options.<name>``, shown as `what`) of this probe."""
        shown = what or field.replace("options.", "option ", 1)
        return DriverConfigError(f"probe {self.probe_id}: {shown} {got!r}: expected {expected}",
                                 field=field, expected=expected, got=got)

    def _check_option(self, key: str, value: Any) -> None:
        default = self.option_defaults[key]
        field = f"options.{key}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise self.config_error(field, "true or false", value)
            return
        if isinstance(default, (int, float)):
            whole = isinstance(default, int)
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or \
                    (not whole and not math.isfinite(value)):
                raise self.config_error(field, "a whole number" if whole else "a finite number", value)
            if key in self.option_ranges:
                lo, hi = self.option_ranges[key]
                if not lo <= value <= hi:
                    raise self.config_error(field, f"{'a whole number' if whole else 'a number'} from {lo:g} to "
                                                   f"{hi:g}", value)
            return
        if isinstance(default, str):
            if not isinstance(value, str) or not value.isprintable() or len(value) > 64:
                raise self.config_error(field, "printable text of at most 64 characters", value)
            return
        if isinstance(default, (tuple, list)):
            if not isinstance(value, (tuple, list)) or len(value) != len(default) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
                raise self.config_error(field, f"a list of {len(default)} numbers", value)

    @classmethod
    def wavelength_range_for(cls, options: Mapping[str, Any] | None = None) -> tuple[float, float] | None:
        """The wavelengths (nm) a spectral probe with these options covers; None without spectra."""
        return None

    @classmethod
    def quantities_for(cls, options: Mapping[str, Any] | None = None) -> Mapping[str, str]:
        """The raw quantities a probe with these options reports (a configurable model may report fewer)."""
        return cls.quantities

    # -- the one entry point ------------------------------------------------
    def read(self) -> Reading:
        """Poll the probe once; every failure is a status on the returned Reading."""
        return self.read_with(self._open_and_poll)

    def _open_and_poll(self) -> Reading:
        self.transport.ensure_open()
        return self.poll()

    def read_with(self, poll: Callable[[], Reading]) -> Reading:
        """Run `poll` and map whatever it raises to a status (for bus-wide polls of several drivers)."""
        try:
            reading = poll()
        except DriverFailure as e:
            reading = self.reading(e.status, message=e.message)
        except ProtocolError as e:
            reading = self.reading(e.status, message=f"probe {self.probe_id}: {e}")
        except PortAbsent as e:
            reading = self.reading(DriverStatus.ABSENT, message=str(e))
        except PortBusy as e:
            reading = self.reading(DriverStatus.BUSY, message=str(e))
        except Exception as e:  # noqa: BLE001 - the collector must never see a driver's exception
            log.exception("probe %s (%s): driver error", self.probe_id, self.name)
            reading = self.reading(DriverStatus.ERROR, message=f"{type(e).__name__}: {e}")
        return reading

    @abc.abstractmethod
    def poll(self) -> Reading:
        """Talk to the probe once; raise DriverFailure for a protocol failure."""

    # -- helpers for subclasses --------------------------------------------------
    def reading(self, status: DriverStatus, values: Mapping[str, float] | None = None, *,
                spectrum: Spectrum | None = None, message: str = "") -> Reading:
        """A Reading stamped now, with each value's unit taken from `quantities`."""
        raw = {k: RawValue(float(v), self.quantities.get(k, "")) for k, v in (values or {}).items()}
        return Reading(probe=self.probe_id, time_ns=time.time_ns(), status=status, values=raw,
                       spectrum=spectrum, message=message)

    def checked(self, values: Mapping[str, float], *, spectrum: Spectrum | None = None,
                message: str = "") -> Reading:
        """An OK Reading, or STUCK when the stuck-value check fires (values kept)."""
        key = list(values.values()) + (list(spectrum.values) if spectrum else [])
        if self.stuck.update(key):
            return self.reading(DriverStatus.STUCK, values, spectrum=spectrum,
                                message=f"the same values {self.stuck.polls} polls in a row; "
                                        "probe firmware frozen or sensor disconnected inside the probe?")
        return self.reading(DriverStatus.OK, values, spectrum=spectrum, message=message)
