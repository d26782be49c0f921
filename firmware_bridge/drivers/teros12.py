"""METER TEROS 12 (and look-alikes) over SDI-12: RAW counts, temperature, bulk EC.

After ``aM!`` the TEROS 12 returns three values (METER Group, TEROS 11/12
Integrator Guide): calibrated counts RAW (converted to water content by a
calibration, e.g. the mineral-soil theta = 3.879e-4 RAW - 0.6956, which
lives in `calibration/`, not here), soil temperature in °C, and bulk
electrical conductivity in µS/cm corrected to 25 °C.

Options (``options`` in the probe's configuration):

- ``command`` = "M" (default), "C" (concurrent) or "R" (continuous ``aR0!``);
- ``crc`` = true (default): use ``aMC!``/``aCC!``/``aRC0!`` so every data
  line carries the SDI-12 CRC, checked here;
- ``response_timeout_s`` (0.5) and ``attempts`` (3): per-command wait and
  tries (SDI-12 section 7.2);
- ``send_break`` (false): make the break on the host (plain level converter);
- ``stuck_polls`` (5): STUCK after this many identical readings in a row.

Statuses: OK; TIMEOUT (nothing in time, after the retries); CRC_ERROR (CRC
wrong on every attempt); PARTIAL (frame cut short, or fewer values than
announced); GARBLED (bytes that are no SDI-12 frame); OUT_OF_RANGE (a value
a TEROS 12 cannot report: RAW outside 0-4095, temperature outside -40..60
°C, EC outside 0..20000 µS/cm; values kept); STUCK; ABSENT; BUSY.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

from firmware_bridge.drivers.base import Driver, DriverConfigError, DriverFailure
from firmware_bridge.protocols.sdi12 import ADDRESSES, SETTINGS, Sdi12Bus
from firmware_bridge.reading import DriverStatus, Reading
from firmware_bridge.transport import SerialSettings, SerialTransport

# Physical limits of the TEROS 12 (METER TEROS 11/12 manual, specifications).
LIMITS = {"raw_counts": (0.0, 4095.0), "soil_temp": (-40.0, 60.0), "ec_bulk": (0.0, 20000.0)}


class Teros12Driver(Driver):
    name: ClassVar[str] = "teros12"
    serial_settings: ClassVar[SerialSettings] = SETTINGS
    quantities: ClassVar[Mapping[str, str]] = {"raw_counts": "counts", "soil_temp": "degC", "ec_bulk": "uS/cm"}
    option_defaults: ClassVar[Mapping[str, Any]] = {
        "command": "M", "crc": True, "response_timeout_s": 0.5, "attempts": 3, "send_break": False,
        "stuck_polls": 5,
    }
    option_ranges: ClassVar[Mapping[str, tuple[float, float]]] = {
        **Driver.option_ranges, "response_timeout_s": (0.05, 10.0), "attempts": (1, 10)}

    def __init__(self, transport: SerialTransport, probe_id: str, address: str = "0",
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(transport, probe_id, address or "0", options)
        if len(self.address) != 1 or self.address not in ADDRESSES:
            raise self.config_error("address", "one of 0-9, a-z, A-Z", self.address, "SDI-12 address")
        command = str(self.options["command"]).upper()
        if command not in ("M", "C", "R"):
            raise self.config_error("options.command", "M, C or R", self.options["command"])
        self.command = command
        self.crc = bool(self.options["crc"])
        try:
            self.bus = Sdi12Bus(transport, response_timeout_s=float(self.options["response_timeout_s"]),
                                attempts=int(self.options["attempts"]), send_break=bool(self.options["send_break"]))
        except (TypeError, ValueError) as e:
            raise DriverConfigError(f"probe {probe_id}: {e}", expected=str(e)) from None

    def poll(self) -> Reading:
        if self.command == "M":
            values = self.bus.measure(self.address, crc=self.crc)
        elif self.command == "C":
            outcome = self.bus.measure_concurrent([self.address], crc=self.crc)[self.address]
            if isinstance(outcome, Exception):
                raise outcome
            values = outcome
        else:
            values = self.bus.continuous(self.address, 0, crc=self.crc)
        return self.reading_from(values)

    def reading_from(self, values: list[float]) -> Reading:
        """Name the three TEROS 12 values and check them (shared with bus-wide concurrent polls)."""
        if len(values) < 3:
            raise DriverFailure(DriverStatus.PARTIAL,
                                f"probe {self.probe_id}: {len(values)} values from address {self.address!r}, "
                                "a TEROS 12 sends 3 (RAW, temperature, EC)")
        named = dict(zip(self.quantities, values[:3]))
        bad = [f"{k}={v:g}" for k, v in named.items() if not LIMITS[k][0] <= v <= LIMITS[k][1]]
        if bad:
            return self.reading(DriverStatus.OUT_OF_RANGE, named,
                                message=f"probe {self.probe_id}: outside what a TEROS 12 reports: {', '.join(bad)}")
        return self.checked(named)


def read_concurrently(drivers: Sequence[Teros12Driver]) -> list[Reading]:
    """One ``aC!``/``aCC!`` round for several TEROS 12 on one bus: all measure at once (SDI-12 4.4.7).

    The drivers must share one transport. Like `Driver.read()`, this never
    raises: each probe gets its own Reading and status, in the order given.
    """
    if not drivers:
        return []
    first = drivers[0]
    if any(d.transport is not first.transport for d in drivers):
        raise ValueError("read_concurrently: the drivers must share one transport (one bus)")
    by_address = {d.address: d for d in drivers}
    if len(by_address) != len(drivers):
        raise ValueError("read_concurrently: two drivers share an address")

    def outcomes() -> dict[str, Any]:
        first.transport.ensure_open()
        return first.bus.measure_concurrent(list(by_address), crc=first.crc)

    try:
        results: dict[str, Any] = outcomes()
    except Exception as e:  # noqa: BLE001 - mapped to each probe's status below
        results = {a: e for a in by_address}
    readings: list[Reading] = []
    for d in drivers:
        outcome = results[d.address]
        readings.append(d.read_with(lambda: d.reading_from(outcome) if isinstance(outcome, list) else _raise(outcome)))
    return readings


def _raise(e: BaseException) -> Reading:
    raise e
